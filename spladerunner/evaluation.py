"""Retrieval evaluation: BEIR folders, ranking metrics, and the sparsity cost of SPLADE vectors.

Metrics follow trec_eval (and so pytrec_eval / ir-measures, which the tests check against): a run
is ranked by score, ties broken by document id in descending order; nDCG uses the graded relevance
as gain with a log2(rank + 1) discount; MRR, recall and MAP count documents with relevance >=
`relevance_level` as relevant (graded qrels such as TREC DL's 0-3 need 2, see `max_relevance`). The
mean is over the queries of the qrels that have a relevant document; a query missing from the run
scores 0 (trec_eval -c).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .readers import read_placed_jsonl, record_id, record_text
from .results import SearchResults
from .retrieval import SparseIndex
from .sparse import SparseBatch

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]
DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
METRIC_NAMES = ("ndcg", "mrr", "recall", "map")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder: `corpus` dicts ({"_id", "title", "text"}) in file order, queries and qrels by id."""

    corpus: list[dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def judged_queries(self) -> tuple[list[str], list[str]]:
        """(ids, texts) of the queries that have qrels, in queries-file order."""
        ids = [q for q in self.queries if q in self.qrels]
        return ids, [self.queries[q] for q in ids]


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv (header line, then query, doc, score)."""
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; not a BEIR folder?")
    corpus = [{**doc, "_id": str(record_id(doc, ["_id"], None, where))}
              for where, doc in read_placed_jsonl(folder / "corpus.jsonl")]
    queries = {str(record_id(query, ["_id"], None, where)): record_text(query, ["text"], where)
               for where, query in read_placed_jsonl(folder / "queries.jsonl")}
    return BeirDataset(corpus, queries, read_qrels(folder / "qrels" / f"{split}.tsv"))


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (query-id, corpus-id, score, with a header) -> {query id: {doc id: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = next(rows, None)
        if header is None or len(header) < 3:
            raise InputError(f"{path}: expected a header line query-id, corpus-id, score")
        for number, row in enumerate(rows, 2):
            if len(row) < 3:
                raise InputError(f"{path}:{number}: expected 3 tab-separated columns")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise InputError(f"{path}:{number}: relevance {row[2]!r} is not an integer") from None
    return qrels


def max_relevance(qrels: Qrels) -> int:
    """The highest grade in the qrels: above 1 they are graded (TREC DL: 0-3), and counting grade 1 as
    relevant (the default `relevance_level`) inflates MRR, recall and MAP."""
    return max((grade for judgments in qrels.values() for grade in judgments.values()), default=0)


def parse_metric(metric: str) -> tuple[str, int | None]:
    """"ndcg@10" -> ("ndcg", 10); "map" -> ("map", None). nDCG, MRR and recall need a cutoff."""
    name, _, cutoff = metric.lower().partition("@")
    if name not in METRIC_NAMES:
        raise InputError(f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)} (e.g. ndcg@10)")
    if cutoff:
        if not cutoff.isdigit() or int(cutoff) < 1:
            raise InputError(f"{metric!r}: the cutoff must be a positive integer")
        return name, int(cutoff)
    if name != "map":
        raise InputError(f"{metric!r} needs a cutoff, e.g. {name}@10")
    return name, None


def _query_metric(name: str, cutoff: int | None, gains: np.ndarray, judged: np.ndarray, level: int) -> float:
    """One query's metric from the gains of its ranked documents and all its judged relevances."""
    depth = len(gains) if cutoff is None else min(cutoff, len(gains))
    relevant = gains[:depth] >= level
    n_relevant = int(np.count_nonzero(judged >= level))
    if name == "ndcg":
        discount = 1.0 / np.log2(np.arange(2, cutoff + 2))
        ideal = np.sort(np.maximum(judged, 0))[::-1][:cutoff]
        idcg = float(ideal @ discount[:len(ideal)])
        return float(np.maximum(gains[:depth], 0) @ discount[:depth]) / idcg if idcg > 0 else 0.0
    if name == "mrr":
        hit = np.flatnonzero(relevant)
        return 1.0 / (hit[0] + 1) if hit.size else 0.0
    if name == "recall":
        return np.count_nonzero(relevant) / n_relevant
    precision_at = np.cumsum(relevant) / np.arange(1, depth + 1)
    return float(precision_at[relevant].sum()) / n_relevant


def evaluate_per_query(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *,
                       relevance_level: int = 1) -> dict[str, dict[str, float]]:
    """{metric: {query id: value}} over the qrels' queries that have a relevant document."""
    parsed = {m: parse_metric(m) for m in metrics}
    out: dict[str, dict[str, float]] = {m: {} for m in metrics}
    for qid, judgments in qrels.items():
        judged = np.fromiter(judgments.values(), dtype=np.float64, count=len(judgments))
        if not np.any(judged >= relevance_level):
            continue
        # trec_eval order: score descending, then document id descending.
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: (item[1], item[0]), reverse=True)
        gains = np.array([judgments.get(doc, 0) for doc, _ in ranked], dtype=np.float64)
        for metric, (name, cutoff) in parsed.items():
            out[metric][qid] = _query_metric(name, cutoff, gains, judged, relevance_level)
    return out


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *,
             relevance_level: int = 1) -> dict[str, float]:
    """Mean of each metric (e.g. "ndcg@10", "mrr@10", "recall@100", "map", "map@100") over the queries."""
    per_query = evaluate_per_query(run, qrels, metrics, relevance_level=relevance_level)
    return {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in per_query.items()}


def term_presence(vectors: SparseBatch | SparseIndex) -> np.ndarray:
    """Fraction of the vectors (queries, documents, or an index's documents) in which each term is active."""
    if isinstance(vectors, SparseIndex):
        return vectors.document_frequency() / max(len(vectors), 1)
    return np.bincount(vectors.indices, minlength=vectors.vocab_size) / max(len(vectors), 1)


def flops(queries: SparseBatch, documents: SparseBatch | SparseIndex) -> float:
    """Expected multiply-adds per query-document pair, sum_t p_q(t) p_d(t) (SPLADE's FLOPS)."""
    return float(term_presence(queries) @ term_presence(documents))


def active_dims(vectors: SparseBatch | SparseIndex) -> float:
    """Mean number of non-zero terms per vector."""
    if isinstance(vectors, SparseIndex):
        return float(vectors.document_frequency().sum()) / max(len(vectors), 1)
    return float(vectors.nnz.mean()) if len(vectors) else 0.0


def markdown_table(rows: Mapping[str, Mapping[str, float | str]]) -> str:
    """{row label: {column: value}} -> a markdown table; floats get 4 decimals, None is "-"."""
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label, row in rows.items():
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else "-" if c in row and row[c] is None
                 else str(row.get(c, "")) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_beir(dataset: BeirDataset, index: SparseIndex, query_encoder: Any, *,
                  metrics: Sequence[str] = DEFAULT_METRICS, k: int = 100,
                  relevance_level: int = 1) -> tuple[dict[str, float], SearchResults]:
    """Search the judged queries against an index of `dataset.corpus` -> (metrics, FLOPS, dims and speeds;
    the top-k results, in `dataset.judged_queries()` order, e.g. for a run file)."""
    query_ids, texts = dataset.judged_queries()
    index.compact()  # merges pending documents, so that is not timed as search
    started = time.perf_counter()
    queries = query_encoder.expand_batch(texts, query=True)
    encoded = time.perf_counter()
    results = index.search(queries, k=k)
    searched = time.perf_counter()
    scores = evaluate(results.to_run(query_ids), dataset.qrels, metrics, relevance_level=relevance_level)
    return {**scores, "flops": flops(queries, index), "query dims": active_dims(queries),
            "doc dims": active_dims(index), "query encode/s": round(len(texts) / max(encoded - started, 1e-9)),
            "search q/s": round(len(texts) / max(searched - encoded, 1e-9))}, results
