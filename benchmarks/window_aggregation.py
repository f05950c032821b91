"""Why the plain max over windows loses to truncation, and which aggregation wins it back: every window of
BEIR SciFact's documents is expanded once per window layout by the built-in splade-tiny (int8) and cached,
then each aggregation is scored offline with the exact `SparseIndex` and `spladerunner.evaluation`.

A layout: windows of `length` tokens (specials included) every `stride` tokens, the first window the document's
truncation (so the first window alone is the truncated row); with a prefix of P tokens, every later window
starts with the document's first P tokens (title / lead) and holds length - 2 - P of its own. Aggregations
re-weight each window's vector by (document, window number) and take the max (or the sum) per term.

Avoiding tuning on the test queries: the length normalisation's exponent is chosen on the even-numbered
judged queries (mean over both window sizes) and reported on the odd ones.

    python -m benchmarks.window_aggregation --output benchmarks/RESULTS-window-aggregation.md
(builds the caches in ~/.cache/spladerunner-bench the first time: about 5 minutes per layout on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spladerunner import Expander
from spladerunner.evaluation import evaluate_per_query, load_beir, markdown_table
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch
from spladerunner.tokenization import Batch, Encoded, batches, special_frame, window_starts

from .quality import CORPORA
from .report import publish

CACHE = Path.home() / ".cache" / "spladerunner-bench"
LAYOUTS = {"windows 128, stride 63": (128, 63, 0), "windows 256, stride 127": (256, 127, 0),
           "windows 128, stride 63, title prefix 32": (128, 63, 32)}
NORMS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
Weights = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (documents, window numbers) -> factors


def layout(tokens: np.ndarray, room: int, stride: int, prefix: int) -> list[np.ndarray]:
    """One document's windows' text tokens (no specials): the first `room` tokens, then windows of the rest."""
    if len(tokens) <= room or not prefix:
        return [tokens[s:s + room] for s in window_starts(len(tokens), room, stride)]
    head, body, own = tokens[:prefix], tokens[prefix:], room - prefix
    # the first window is the truncation (it holds body[:own]); later windows cover the rest of the body
    later = window_starts(len(body), own, stride)[1:]
    return [tokens[:room]] + [np.concatenate([head, body[s:s + own]]) for s in later]


class Corpus:
    """SciFact's documents, their judged queries expanded once (cached) and the qrels."""

    def __init__(self) -> None:
        path, self.level = CORPORA["SciFact"]
        data = load_beir(path)
        self.ids = [d["_id"] for d in data.corpus]
        self.texts = [" ".join(filter(None, [d.get("title"), d.get("text")])) for d in data.corpus]
        self.query_ids, query_texts = data.judged_queries()
        self.qrels = data.qrels
        self.expander = Expander("splade-tiny", precision="int8")
        self.tokens = np.array([len(e.ids) for e in self.expander.tokenizer.encode_batch(self.texts,
                                                                                         add_special_tokens=False)])
        cache = CACHE / "scifact-int8-queries.npz"
        if not cache.exists():
            save(cache, self.expander.expand_batch(query_texts, query=True))
        self.queries = load(cache)

    def per_query(self, vectors: SparseBatch, k: int = 100) -> tuple[dict[str, dict[str, float]], dict]:
        index = SparseIndex()
        index.add_vectors(vectors, self.ids)
        run = index.search(self.queries, k=k).to_run(self.query_ids)
        return evaluate_per_query(run, self.qrels, ("ndcg@10", "recall@100"), relevance_level=self.level), run

    def row(self, vectors: SparseBatch) -> dict[str, float | str]:
        """nDCG@10 and recall@100 (all, even, odd queries), mean L1 mass, active terms and top-10 length."""
        scores, run = self.per_query(vectors)
        ndcg = scores["ndcg@10"]
        halves = [[q for i, q in enumerate(self.query_ids) if i % 2 == h and q in ndcg] for h in (0, 1)]
        position = {d: i for i, d in enumerate(self.ids)}
        top = [self.tokens[position[d]] for ranked in run.values()
               for d, _ in sorted(ranked.items(), key=lambda item: -item[1])[:10]]
        return {"ndcg@10": mean(ndcg.values()), "recall@100": mean(scores["recall@100"].values()),
                "ndcg@10 even": mean(ndcg[q] for q in halves[0]), "ndcg@10 odd": mean(ndcg[q] for q in halves[1]),
                "L1": f"{np.add.reduceat(vectors.values, vectors.indptr[:-1]).mean():.0f}",
                "terms": f"{vectors.nnz.mean():.0f}", "top-10 tokens": f"{np.mean(top):.0f}"}


def mean(values) -> float:
    return float(np.mean(list(values)))


def save(path: Path, batch: SparseBatch, **extra: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, indptr=batch.indptr, indices=batch.indices, values=batch.values, **extra)
    partial.rename(path)


def load(path: Path) -> SparseBatch:
    data = np.load(path)
    return SparseBatch(data["indptr"], data["indices"], data["values"], 30522)


class Windows:
    """One layout's window vectors (cached), each with its document and window number."""

    def __init__(self, corpus: Corpus, length: int, stride: int, prefix: int):
        path = CACHE / f"scifact-int8-windows-{length}-{stride}-{prefix}.npz"
        if not path.exists():
            self.build(corpus, length, stride, prefix, path)
        data = np.load(path)
        self.rows = load(path)
        self.owner, self.number = data["owner"], data["number"]
        self.count = np.bincount(self.owner)
        self.length = corpus.tokens / (length - 2)  # the documents' lengths in windows' text tokens

    @staticmethod
    def build(corpus: Corpus, length: int, stride: int, prefix: int, path: Path) -> None:
        expander = corpus.expander
        before, after = special_frame(expander.tokenizer)
        room = length - len(before) - len(after)
        rows, owner, number = [], [], []
        for doc, encoding in enumerate(expander.tokenizer.encode_batch(corpus.texts, add_special_tokens=False)):
            for n, window in enumerate(layout(np.array(encoding.ids, np.int64), room, stride, prefix)):
                rows.append(np.concatenate([before, window, after]))
                owner.append(doc)
                number.append(n)
        session, parts, order = expander.session("document"), [], []
        started = time.perf_counter()
        for batch in batches(Encoded(rows, np.zeros(len(rows), bool)), max_tokens=1024, max_batch_size=64,
                             pad_id=expander.pad_id):
            outputs = session.run(Batch(batch.rows, batch.input_ids, batch.attention_mask))
            parts.append(expander._collect(outputs, top_k=None, threshold=0.0,
                                           truncated=np.zeros(len(batch.rows), bool)))
            order.append(batch.rows)
        sorted_rows = np.concatenate(order)
        position = np.empty_like(sorted_rows)
        position[sorted_rows] = np.arange(len(sorted_rows))
        save(path, SparseBatch.concat(parts).take(position), owner=np.array(owner), number=np.array(number))
        print(f"{path}: {len(rows)} windows in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    def reduce(self, weights: Weights | None = None, keep: np.ndarray | None = None, how: str = "max") -> SparseBatch:
        """Per document and term: the max (or sum) over the kept windows of the re-weighted weights."""
        keep = np.ones(len(self.owner), bool) if keep is None else keep
        rows = np.repeat(np.arange(len(self.owner)), self.rows.nnz)
        mask = keep[rows]
        rows, terms, values = rows[mask], self.rows.indices[mask], self.rows.values[mask]
        if weights is not None:
            values = values * weights(self.owner[rows], self.number[rows]).astype(np.float32)
        vocab = self.rows.vocab_size
        keys = self.owner[rows].astype(np.int64) * vocab + terms
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        reduced = (np.maximum if how == "max" else np.add).reduceat(values, first)
        indptr = np.zeros(len(self.count) + 1, np.int64)
        np.cumsum(np.bincount(keys[first] // vocab, minlength=len(self.count)), out=indptr[1:])
        return SparseBatch(indptr, (keys[first] % vocab).astype(np.int32), reduced.astype(np.float32), vocab)

    def normalised(self, norm: float, keep: np.ndarray | None = None) -> SparseBatch:
        """The max divided by (document tokens / window tokens) ** norm for windowed documents (the Expander's
        `window_norm`)."""
        factor = np.where(self.count > 1, np.maximum(self.length, 1.0) ** -norm, 1.0)
        return self.reduce(lambda docs, numbers: factor[docs], keep)


def paired(corpus: Corpus, baseline: dict[str, float], vectors: SparseBatch, seed: int = 0) -> dict[str, str]:
    """Per-query nDCG@10 against the baseline: wins, losses, mean difference and a two-sided sign-flip
    permutation test's p-value (20,000 flips)."""
    got = corpus.per_query(vectors)[0]["ndcg@10"]
    diff = np.array([got[q] - baseline[q] for q in baseline])
    flips = np.random.default_rng(seed).choice([-1.0, 1.0], size=(20_000, len(diff)))
    p = float(np.mean(np.abs((flips * diff).mean(1)) >= abs(diff.mean()) - 1e-12))
    return {"ndcg@10 - truncate 256": f"{diff.mean():+.4f}", "wins": str(int((diff > 1e-9).sum())),
            "losses": str(int((diff < -1e-9).sum())), "p (permutation)": f"{p:.3f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="write the markdown report here too")
    args = parser.parse_args(argv)
    corpus = Corpus()
    layouts = {label: Windows(corpus, *spec) for label, spec in LAYOUTS.items()}
    w128, w256 = layouts["windows 128, stride 63"], layouts["windows 256, stride 127"]
    truncated = {"truncate 128": w128.reduce(keep=w128.number == 0),
                 "truncate 256": w256.reduce(keep=w256.number == 0)}
    rows = {label: corpus.row(vectors) for label, vectors in truncated.items()}
    compared = {}
    for label, windows in layouts.items():
        candidates = {"plain max": windows.reduce(),
                      "mean": windows.reduce(lambda docs, numbers, count=windows.count: 1.0 / count[docs], how="sum"),
                      "max(first, 0.5 x rest)": windows.reduce(lambda docs, numbers: np.where(numbers == 0, 1.0, 0.5)),
                      "max / windows^0.25": windows.reduce(lambda docs, numbers, count=windows.count:
                                                           count[docs] ** -0.25)}
        if label == "windows 128, stride 63":
            candidates["first 3 windows (252 tokens), max"] = windows.reduce(keep=windows.number < 3)
            every_other = (windows.number % 2 == 0) | (windows.number == windows.count[windows.owner] - 1)
            candidates["stride 126 (every other window), max"] = windows.reduce(keep=every_other)
            candidates["stride 126, length norm 0.25"] = windows.normalised(0.25, every_other)
        candidates.update({f"length norm {norm}": windows.normalised(norm) for norm in NORMS})
        for name, vectors in candidates.items():
            rows[f"{label}: {name}"] = corpus.row(vectors)
            print(f"{label}: {name}: {rows[f'{label}: {name}']}", file=sys.stderr)
        compared[f"{label}: plain max"] = candidates["plain max"]
        compared[f"{label}: length norm 0.25"] = candidates["length norm 0.25"]
    # The exponent: best mean nDCG@10 on the even queries over both window sizes, then read on the odd ones.
    choice = {f"{norm}": {half: mean(rows[f"{label}: length norm {norm}"][f"ndcg@10 {half}"]
                                     for label in ("windows 128, stride 63", "windows 256, stride 127"))
                          for half in ("even", "odd")} for norm in NORMS}
    chosen = max(choice, key=lambda norm: choice[norm]["even"])
    baseline = corpus.per_query(truncated["truncate 256"])[0]["ndcg@10"]
    tests = {label: paired(corpus, baseline, vectors) for label, vectors in compared.items()}
    text = (f"# Aggregating windows: why the plain max loses and what wins it back, splade-tiny int8 on SciFact "
            f"({time.strftime('%Y-%m-%d %H:%M')}, `python -m benchmarks.window_aggregation`)\n\n"
            f"Every window of the {len(corpus.ids):,} documents expanded once per layout (built-in splade-tiny, "
            f"int8), then aggregated offline; {len(baseline)} judged queries cut at 64 tokens, searched exactly "
            "(`SparseIndex`, top 100). `truncate N` is the first window alone. even / odd: the judged queries at "
            "even / odd positions. L1: mean weight mass of a document vector; terms: mean active terms; "
            f"top-10 tokens: mean length of the documents ranked in the top 10 (the corpus averages "
            f"{corpus.tokens.mean():.0f} tokens, its relevant documents "
            f"{mean(corpus.tokens[corpus.ids.index(d)] for q in corpus.qrels.values() for d in q):.0f}). "
            "Length norm b: the max divided by (document tokens / window text tokens) ** b for documents of "
            "several windows (`Expander(window_norm=b)`); windows^b divides by the number of windows instead.\n\n"
            + markdown_table(rows)
            + "\n\nThe exponent b, chosen on the even queries (mean nDCG@10 over windows 128 and 256), read on the "
            f"odd ones: **b = {chosen}** (the odd queries' best is "
            f"{max(choice, key=lambda norm: choice[norm]['odd'])}).\n\n"
            + markdown_table({f"b = {norm}": {f"ndcg@10 {half}": value for half, value in halves.items()}
                              for norm, halves in choice.items()})
            + "\n\nPer query against truncation at 256 (nDCG@10; ties are the rest of the "
            f"{len(baseline)} queries):\n\n" + markdown_table(tests))
    publish(text, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
