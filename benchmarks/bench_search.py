"""Batch search speed of `SparseIndex` against bm25s (numpy backend) on the same matrices.

Documents: a BM25-encoded corpus over bert-base-uncased WordPiece ids (MS MARCO DL19 subset and
SciFact from ../shared). Queries: the real SPLADE++ query vectors of ../shared/data/splade-queries,
either as term sets (binary; bm25s scores them natively) or with integer weights round(impact / 100)
(bm25s gets each token repeated that many times, as Anserini's query TSVs do). Both engines search
the same CSC matrix for the same top k; the script checks that both return the same documents with
the same scores (it fails otherwise; bm25s orders tied scores arbitrarily, so "same order" counts
the lists that also match position by position) and prints markdown tables, plus the storage
trade-off of the index's weight precisions.

    python -m benchmarks.bench_search            # full run (a minute or two)
    python -m benchmarks.bench_search --smoke    # seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("DISABLE_TQDM", "1")  # bm25s progress bars

import numpy as np

from benchmarks.report import publish
from benchmarks.texts import SHARED, TOKENIZER
from spladerunner.adapters import read_impact_queries
from spladerunner.bm25 import BM25Encoder
from spladerunner.documents import document_texts
from spladerunner.evaluation import evaluate, load_beir, markdown_table
from spladerunner.results import SearchResults
from spladerunner.retrieval import WEIGHT_STORAGES, SparseIndex
from spladerunner.sparse import SparseBatch

CORPORA = {"msmarco-subset": SHARED / "data" / "msmarco-dl19-subset", "scifact": SHARED / "data" / "beir-scifact"}
QUERIES = SHARED / "data" / "splade-queries" / "msmarco-dev-subset.splade-pp-ed.jsonl"


def best_time(run: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Fastest of `repeat` runs (after one warm-up), and the last result."""
    result = run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def bm25s_retriever(docs: SparseBatch):
    """A bm25s BM25 object whose score matrix is exactly `docs` (CSC: term -> document postings)."""
    import bm25s

    csc = docs.to_scipy().tocsc()
    retriever = bm25s.BM25(backend="numpy")
    retriever.scores = {"data": csc.data.astype(np.float32), "indices": csc.indices.astype(np.int32),
                        "indptr": csc.indptr, "num_docs": len(docs)}
    retriever.vocab_dict = {str(i): i for i in range(docs.vocab_size)}
    retriever.unique_token_ids_set = set(range(docs.vocab_size))
    retriever.nonoccurrence_array = None
    return retriever


def as_token_lists(queries: SparseBatch) -> list[list[int]]:
    """Each query's ids, repeated by its integer weight (bm25s adds a posting once per occurrence)."""
    counts = queries.values.astype(np.int64)
    return [np.repeat(q.ids, counts[start:stop]).tolist()
            for q, start, stop in zip(queries, queries.indptr[:-1], queries.indptr[1:])]


def as_arrays(results: SearchResults, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Results of an index whose ids are its row numbers -> (rows [n, k], -1 padded; scores, 0 padded)."""
    rows, scores = np.full((len(results), k), -1, dtype=np.int64), np.zeros((len(results), k))
    for q, (ids, values) in enumerate(zip(results.ids, results.scores)):
        rows[q, :len(ids)], scores[q, :len(ids)] = np.array(ids, dtype=np.int64), values
    return rows, scores


def compare(slots: np.ndarray, scores: np.ndarray, their_rows: np.ndarray, their_scores: np.ndarray) -> int:
    """Queries whose top-k lists are identical in order; raises if they differ beyond the order of tied scores."""
    identical = 0
    for ours, mine, theirs, their in zip(slots, scores, their_rows, their_scores):
        hits = int(np.count_nonzero(ours >= 0))
        if np.any(their[hits:] > 0) or not np.allclose(mine[:hits], their[:hits], rtol=1e-5):
            raise AssertionError("scores differ between spladerunner and bm25s")
        if ours[:hits].tolist() == theirs[:hits].tolist():
            identical += 1
            continue
        # Different order is allowed only among scores equal at float32 precision (bm25s sums in float32):
        # a document clearly above the k-th score must be in both lists.
        cut = their[hits - 1] * (1 + 2e-5)
        if not ({d for d, s in zip(ours[:hits], mine) if s > cut} <= set(theirs[:hits].tolist())
                and {d for d, s in zip(theirs[:hits], their) if s > cut} <= set(ours[:hits].tolist())):
            raise AssertionError("top-k documents differ between spladerunner and bm25s")
    return identical


def speed_rows(corpus: str, docs: SparseBatch, queries: SparseBatch, k: int, repeat: int) -> dict[str, dict]:
    index = SparseIndex()
    index.add_vectors(docs)
    retriever = bm25s_retriever(docs)
    rows = {}
    integer = SparseBatch(queries.indptr, queries.indices, np.rint(queries.values / 100), queries.vocab_size)
    for mode, batch in (("binary", SparseBatch(queries.indptr, queries.indices, np.ones_like(queries.values),
                                               queries.vocab_size)),
                        ("weighted", integer)):
        keep = batch.values > 0
        rows_of = np.repeat(np.arange(len(batch)), batch.nnz)[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows_of, minlength=len(batch)))])
        batch = SparseBatch(indptr, batch.indices[keep], batch.values[keep], batch.vocab_size)
        batch = batch.take(np.flatnonzero(batch.nnz > 0))
        tokens = as_token_lists(batch)
        ours_s, results = best_time(lambda b=batch: index.search(b, k), repeat)
        slots, scores = as_arrays(results, k)
        theirs_s, result = best_time(lambda t=tokens: retriever.retrieve(
            t, k=k, backend_selection="numpy", show_progress=False, n_threads=0), repeat)
        identical = compare(slots, scores, result.documents, result.scores)
        rows[f"{corpus}, {mode} queries, k={k}"] = {
            "docs": len(docs), "queries": len(batch), "terms/query": f"{batch.nnz.mean():.1f}",
            "spladerunner q/s": f"{len(batch) / ours_s:,.0f}", "bm25s q/s": f"{len(batch) / theirs_s:,.0f}",
            "speed-up": f"{theirs_s / ours_s:.1f}x", "same results": "yes",
            "same order": f"{identical}/{len(batch)}"}
    return rows


def precision_rows(docs: SparseBatch, queries: SparseBatch, scifact: tuple | None, k: int,
                   repeat: int) -> dict[str, dict]:
    """Size, speed and ranking agreement of each weight storage, relative to float32."""
    rows, reference = {}, None
    for precision in WEIGHT_STORAGES:
        index = SparseIndex(precision=precision)
        index.add_vectors(docs)
        seconds, results = best_time(lambda i=index: i.search(queries, k), repeat)
        slots, scores = as_arrays(results, k)
        sizes = index.storage_bytes()
        if reference is None:
            reference = (slots, scores)
        overlap = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(np.count_nonzero(b >= 0), 1)
                           for a, b in zip(slots, reference[0])])
        error = np.abs(scores - reference[1]).max() / reference[1].max()
        row = {"weight bytes": f"{sizes['weights'] / 1e6:.2f} MB", "index bytes": f"{sum(sizes.values()) / 1e6:.2f} MB",
               "q/s": f"{len(queries) / seconds:,.0f}", "max score error": f"{error:.1e}",
               f"top-{k} overlap": f"{overlap:.4f}",
               "identical lists": f"{np.mean([(a == b).all() for a, b in zip(slots, reference[0])]):.3f}"}
        if scifact is not None:
            data, scifact_docs, scifact_queries, query_ids = scifact
            scifact_index = SparseIndex(precision=precision)
            scifact_index.add_vectors(scifact_docs, [d["_id"] for d in data.corpus])
            run = scifact_index.search(scifact_queries, k=100).to_run(query_ids)
            row["SciFact BM25 nDCG@10"] = f"{evaluate(run, data.qrels, ['ndcg@10'])['ndcg@10']:.4f}"
        rows[precision] = row
    return rows


_SHARED_INDEX: SparseIndex | None = None  # the index forked worker processes search


def _search_part(args: tuple[list[SparseBatch], int]) -> list[list[str]]:
    calls, k = args
    return [_SHARED_INDEX.search(q, k).ids for q in calls]


def thread_rows(docs: SparseBatch, queries: SparseBatch, k: int, repeat: int) -> dict[str, dict]:
    """One shared index searched from 1 and 2 threads, and from 2 forked processes for reference.

    Searches do not hold the index's lock while scoring (they read an immutable snapshot), so any
    shortfall of threads against processes is CPython's GIL around numpy's many small kernels.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    global _SHARED_INDEX
    index = _SHARED_INDEX = SparseIndex()
    index.add_vectors(docs)
    rows = {}
    for per_call in (1, 16):
        calls = [queries.take(np.arange(i, min(i + per_call, len(queries)))) for i in range(0, len(queries), per_call)]
        expected = [ids for part in (calls[0::2], calls[1::2]) for ids in _search_part((part, k))]
        serial, _ = best_time(lambda c=calls: _search_part((c[0::2], k)) + _search_part((c[1::2], k)), repeat)
        with ThreadPoolExecutor(2) as threads:
            threaded, got = best_time(lambda c=calls, p=threads: list(p.map(_search_part, [(c[0::2], k),
                                                                                          (c[1::2], k)])), repeat)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as processes:
            forked, _ = best_time(lambda c=calls, p=processes: list(p.map(_search_part, [(c[0::2], k),
                                                                                          (c[1::2], k)])), repeat)
        if [ids for part in got for ids in part] != expected:
            raise AssertionError("searches from two threads returned other results than serial searches")
        rows[f"{per_call} query per call" if per_call == 1 else f"{per_call} queries per call"] = {
            "1 thread q/s": f"{len(queries) / serial:,.0f}", "2 threads": f"{serial / threaded:.2f}x",
            "2 processes": f"{serial / forked:.2f}x"}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small and fast (CI)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine (the best counts)")
    parser.add_argument("-k", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--output", default=None, help="also write the tables to this markdown file "
                        "(benchmarks/RESULTS-search.md for a full run)")
    args = parser.parse_args(argv)
    report: list[str] = []
    emit = report.append

    if not TOKENIZER.is_file():
        print(f"skipped: {TOKENIZER} not found", file=sys.stderr)
        return 0
    encoder = BM25Encoder(TOKENIZER)
    max_docs, max_queries = (500, 200) if args.smoke else (None, None)
    repeat = 1 if args.smoke else args.repeat
    queries = read_impact_queries(QUERIES, encoder.vocab)[2]
    queries = queries.take(np.arange(min(len(queries), max_queries or len(queries))))
    speed, encoded = {}, {}
    for name, folder in CORPORA.items():
        data = load_beir(folder)
        texts = document_texts(data.corpus[:max_docs], key="_id")[1]
        encoded[name] = (data, BM25Encoder(TOKENIZER).fit_expand(texts))
        for k in args.k:
            speed.update(speed_rows(name, encoded[name][1], queries, k, repeat))
    emit(f"# Retrieval benchmark ({time.strftime('%Y-%m-%d %H:%M')}, `python -m benchmarks.bench_search`)\n")
    emit(f"## Batch search, spladerunner vs bm25s (numpy backend), {os.cpu_count()} CPUs\n")
    emit(markdown_table(speed))
    data, docs = encoded["scifact"]
    scifact = None
    if not args.smoke:
        query_ids, texts = data.judged_queries()
        scifact = (data, docs, encoder.expand_batch(texts, query=True), query_ids)
    k = min(args.k)
    emit(f"\n## Weight storage (msmarco-subset BM25 docs, SPLADE++ weighted queries, k={k})\n")
    emit(markdown_table(precision_rows(encoded["msmarco-subset"][1], queries, scifact, k, repeat)))
    emit(f"\n## One shared index searched concurrently (msmarco-subset, k={k}; speed-up over 1 thread)\n")
    emit(markdown_table(thread_rows(encoded["msmarco-subset"][1], queries, k, repeat)))
    publish("\n".join(report), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
