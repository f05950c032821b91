"""Exact retrieval at 5k real and 1M synthetic documents: `SparseIndex` against splade-index, scipy and Seismic.

Documents (all expanded once by the built-in `Expander("splade-tiny")`, int8, documents cut at 256 tokens,
and cached as CSR .npy under --cache-dir, keyed by the graph's sha256, the corpus and its size):
- real: the MS MARCO DL19 subset (5,000 passages) and BEIR SciFact (5,183 abstracts, title + text);
- synthetic: N documents (default 1,000,000) built from the real vectors of both corpora together (the
  templates), deterministically (seed `SEED`, chunks of `CHUNK` rows, each chunk its own generator):
  1. each synthetic document picks a template uniformly at random and takes its length (terms) and its weights;
  2. each term is kept with probability `KEEP`; the others are replaced by a term drawn from the templates'
     document-frequency distribution (P(t) = df(t) / sum df), so every term keeps its expected share of
     documents (df / N) whether kept or drawn;
  3. of equal terms in a document, the kept one (else the first) stays and the others are drawn again, until
     no document repeats a term (so the most common terms end a little below their df share: see the table);
  4. every weight is multiplied by an independent uniform factor in [1 - JITTER, 1 + JITTER] (documents from
     one template must not tie on every query);
  5. terms are sorted within each document (canonical CSR).
  The run prints terms/document, df/N and weight quantiles of the templates next to the synthetic ones.
Queries: the 6,980 real SPLADE++ (ED) MS MARCO dev query vectors of ../shared/data/splade-queries, integer
impacts as given (`read_impact_queries`), in the tokenizer's id space (empty ones dropped).

Systems, each in a fresh process of its own (RSS and peak VmHWM are its own; the corpus arrives memory-mapped
and is released once the index is built): spladerunner `SparseIndex` (float32 and float16 weights),
splade-index (numba, exact; driven through its retrieval kernel with our vectors, no model), scipy CSR
(Q @ D.T per chunk of queries, then argpartition top-k among the nonzero scores) and Seismic (pyseismic-lsr,
approximate, built with its defaults, searched at a few query_cut/heap_factor settings). Each searches the
full query batch at k=10 and k=1000 with 1 and 2 threads (timed once, after a warm-up batch) and runs a few
hundred queries one at a time (batch 1, k=10, 1 thread) for p50/p99 latency.

Brute force: the same scipy product in float64, top-k ordered by score, ties by document number. Exact
systems must return the same documents: scores equal position by position within `TOLERANCE` x the
query's top score (float32 sums in another order), and the document sets may differ only by documents
whose exact score is within that tolerance of the k-th score (a tie at the boundary). The script exits 1
if an exact system breaks that rule, or its 2-thread lists differ from its 1-thread lists.
float16 is exact on its rounded weights, so it is shown with recall against the float32 brute force.

    python -m benchmarks.retrieval_scale --output benchmarks/RESULTS-retrieval-scale.md   # full: 1M documents
    python -m benchmarks.retrieval_scale --docs 100000 --queries 1000                    # development
    python -m benchmarks.retrieval_scale --smoke                                         # seconds, CI

A full run takes about half an hour on 2 cores (its header records when it ran; Seismic's build and scipy's
passes take longest) and needs about 9 GB of RAM at its peak (the largest child). `--systems` leaves systems
out, `--queries N` uses the first N.
Vectors, templates and synthetic corpora are cached in --cache-dir; top-k lists go to --work (kept if given).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .report import publish
from .texts import SHARED

if TYPE_CHECKING:
    from spladerunner.sparse import SparseBatch

REAL = {"dl19-subset": SHARED / "data" / "msmarco-dl19-subset", "scifact": SHARED / "data" / "beir-scifact"}
QUERIES = SHARED / "data" / "splade-queries" / "msmarco-dev-subset.splade-pp-ed.jsonl"
MODEL, MAX_LENGTH = "splade-tiny", 256
SEED, CHUNK, KEEP, JITTER = 20261201, 20_000, 0.5, 0.05
TOLERANCE = 1e-5
CSR = tuple[np.ndarray, np.ndarray, np.ndarray]  # (indptr, indices, values) of a document or query matrix
Lists = tuple[np.ndarray, np.ndarray]  # top-k per query: (document numbers -1 padded, scores 0 padded)
SYSTEMS = ("spladerunner", "splade-index", "scipy", "seismic")
# Seismic query-time settings (query_cut, heap_factor): recall@10 0.975, 0.987, 0.995 at 100k synthetic documents,
# 0.954, 0.971, 0.989 at 300k (0.95-0.99 on the DL19 subset).
SEISMIC_SETTINGS = ((5, 0.8), (10, 0.8), (20, 0.7))
VERSIONED = ("spladerunner", "numpy", "scipy", "onnxruntime", "splade-index", "numba", "pyseismic-lsr")
THREADS = (1, 2)


# ------------------------------------------------------------------------------------------- data


def save_csr(folder: Path, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """CSR arrays as indptr/indices/values .npy in `folder`, written to a temporary folder renamed into place."""
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, array in (("indptr", indptr), ("indices", indices), ("values", values)):
        np.save(staging / f"{name}.npy", array)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def load_csr(folder: Path) -> CSR:
    """(indptr int64, indices int32, values float32), memory-mapped."""
    return tuple(np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("indptr", "indices", "values"))


def expanded(cache: Path, name: str, limit: int | None) -> Path:
    """The real corpus `name` (first `limit` documents) expanded by the built-in splade-tiny: a cached CSR folder."""
    from spladerunner import Expander
    from spladerunner.documents import document_texts
    from spladerunner.evaluation import load_beir

    expander = Expander(MODEL, document_max_length=MAX_LENGTH)
    graph = expander.graph("document").sha256 or "unknown"
    folder = cache / f"{name}-{limit or 'all'}-{MAX_LENGTH}-{graph[:16]}"
    if not (folder / "values.npy").is_file():
        texts = document_texts(load_beir(REAL[name]).corpus[:limit], key="_id")[1]
        started = time.perf_counter()
        vectors = expander.expand_batch(texts)
        print(f"expanded {len(texts)} {name} documents in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        save_csr(folder, vectors.indptr.astype(np.int64), vectors.indices.astype(np.int32),
                 vectors.values.astype(np.float32))
    return folder


def query_folder(cache: Path, vocab: list[str], limit: int | None) -> Path:
    """The SPLADE++ dev query vectors (first `limit`, empty ones dropped) as a cached CSR folder."""
    from spladerunner.adapters import read_impact_queries

    folder = cache / f"queries-{limit or 'all'}-{hashlib.sha256(QUERIES.read_bytes()).hexdigest()[:16]}"
    if not (folder / "values.npy").is_file():
        queries = read_impact_queries(QUERIES, vocab)[2]
        queries = queries.take(np.flatnonzero(queries.nnz > 0)[:limit])
        save_csr(folder, queries.indptr.astype(np.int64), queries.indices.astype(np.int32),
                 queries.values.astype(np.float32))
    return folder


def concat_csr(folders: list[Path]) -> CSR:
    """Rows of several CSR folders, one after the other (in memory)."""
    parts = [load_csr(folder) for folder in folders]
    offsets = np.cumsum([0] + [int(p[0][-1]) for p in parts])
    indptr = np.concatenate([[0]] + [np.asarray(p[0][1:]) + o for p, o in zip(parts, offsets)])
    return (indptr, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))


def synthesize(templates: CSR, n_docs: int, vocab_size: int,
               folder: Path) -> None:
    """`n_docs` synthetic documents from the template rows (see the module docstring), written chunk by chunk."""
    from spladerunner.sparse import gather_ranges

    t_ptr, t_ids, t_weights = templates
    df = np.bincount(t_ids, minlength=vocab_size)
    cdf = np.cumsum(df / df.sum())
    lengths_of = np.diff(t_ptr)
    chosen = [np.random.default_rng([SEED, 0, start]).integers(0, len(lengths_of), min(CHUNK, n_docs - start))
              for start in range(0, n_docs, CHUNK)]
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.concatenate([lengths_of[c] for c in chosen]), out=indptr[1:])
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / "indptr.npy", indptr)
    indices = np.lib.format.open_memmap(staging / "indices.npy", "w+", np.int32, (int(indptr[-1]),))
    values = np.lib.format.open_memmap(staging / "values.npy", "w+", np.float32, (int(indptr[-1]),))
    for chunk, start in zip(chosen, range(0, n_docs, CHUNK)):
        rng = np.random.default_rng([SEED, 1, start])
        positions, lengths = gather_ranges(t_ptr, chunk)
        terms = t_ids[positions].astype(np.int32)
        weights = (t_weights[positions] * rng.uniform(1 - JITTER, 1 + JITTER, len(positions))).astype(np.float32)
        rows = np.repeat(np.arange(len(chunk), dtype=np.int64), lengths)
        drawn = rng.random(len(terms)) >= KEEP
        redraw = np.flatnonzero(drawn)
        terms[redraw] = np.minimum(np.searchsorted(cdf, rng.random(len(redraw)), side="right"), vocab_size - 1)
        keys = rows * vocab_size + terms
        # Of equal terms in a row, one keeps its term (`taken`): the kept one if any (a template repeats no
        # term), else the first; the others are drawn again.
        order = np.argsort(keys * 2 + drawn)
        repeated = np.concatenate([[False], keys[order[1:]] == keys[order[:-1]]])
        redraw, taken = np.sort(order[repeated]), keys[order[~repeated]]
        accepted = np.zeros(0, dtype=np.int64)
        for _ in range(1000):  # each round leaves a few percent of the last one's repeats
            if not len(redraw):
                break
            terms[redraw] = np.minimum(np.searchsorted(cdf, rng.random(len(redraw)), side="right"), vocab_size - 1)
            new = rows[redraw] * vocab_size + terms[redraw]
            repeat = np.ones(len(new), dtype=bool)
            repeat[np.unique(new, return_index=True)[1]] = False  # the first of equal new keys may stay
            for sorted_keys in (taken, accepted):
                at = np.minimum(np.searchsorted(sorted_keys, new), max(len(sorted_keys) - 1, 0))
                repeat |= (sorted_keys[at] == new) if len(sorted_keys) else False
            accepted = np.sort(np.concatenate([accepted, new[~repeat]]))
            redraw = redraw[repeat]
        else:
            raise RuntimeError("synthetic documents: repeated terms left after 1000 redraws")
        order = np.argsort(rows * vocab_size + terms)
        stop = int(indptr[start + len(chunk)])
        indices[indptr[start]:stop] = terms[order]
        values[indptr[start]:stop] = weights[order]
    indices.flush()
    values.flush()
    del indices, values
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def statistics_of(folder: Path, vocab_size: int) -> dict[str, str]:
    """Terms/document, df/N and weight quantiles of a CSR folder (weights from a fixed sample of 5M)."""
    indptr, indices, values = load_csr(folder)
    n_docs, terms = len(indptr) - 1, np.diff(indptr)
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(indices), 50_000_000):
        df += np.bincount(indices[start:start + 50_000_000], minlength=vocab_size)
    share = df[df > 0] / n_docs
    sample = values[np.sort(np.random.default_rng(SEED).integers(0, len(values), min(len(values), 5_000_000)))]

    def quantiles(array: np.ndarray, qs: tuple[float, ...], fmt: str) -> str:
        return " / ".join(format(float(v), fmt) for v in np.quantile(array, qs))

    return {"documents": f"{n_docs:,}", "postings": f"{len(indices):,}",
            "terms/doc mean": f"{terms.mean():.1f}", "terms/doc p10 / p50 / p90": quantiles(terms, (.1, .5, .9), ".0f"),
            "terms used": f"{len(share):,}",
            "df/N p50 / p90 / p99 / max": quantiles(share, (.5, .9, .99, 1.0), ".2e"),
            "weight p10 / p50 / p90 / p99 / max": quantiles(sample, (.1, .5, .9, .99, 1.0), ".3f")}


def postings_touched(docs: Path, queries: Path, vocab_size: int) -> float:
    """Mean postings a query's terms reach (the work of an exhaustive term-at-a-time search)."""
    d_indices, (q_ptr, q_indices, _) = load_csr(docs)[1], load_csr(queries)
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(d_indices), 50_000_000):
        df += np.bincount(d_indices[start:start + 50_000_000], minlength=vocab_size)
    return float(df[np.asarray(q_indices)].sum() / (len(q_ptr) - 1))


# ------------------------------------------------------------------------------------------- children


def memory() -> dict[str, float]:
    """This process's VmRSS and VmHWM (its own peak since exec), MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def query_rows(queries: CSR) -> list[tuple[np.ndarray, np.ndarray]]:
    ptr, ids, weights = (np.asarray(a) for a in queries)
    return [(ids[a:b], weights[a:b]) for a, b in zip(ptr[:-1], ptr[1:])]


def top_rows(scores: Any, k: int) -> Lists:
    """Rows of a scipy CSR score matrix -> top k (documents, scores) by score, ties by document (-1 padded)."""
    docs, best = np.full((scores.shape[0], k), -1, dtype=np.int64), np.zeros((scores.shape[0], k))
    for row in range(scores.shape[0]):
        a, b = scores.indptr[row], scores.indptr[row + 1]
        values, columns = scores.data[a:b], scores.indices[a:b]
        positive = values > 0
        values, columns = values[positive], columns[positive]
        if len(values) > k:
            cut = np.partition(values, len(values) - k)[len(values) - k]
            keep = values >= cut  # every document tied with the k-th, then ties resolved below
            values, columns = values[keep], columns[keep]
        order = np.lexsort((columns, -values))[:k]
        docs[row, :len(order)], best[row, :len(order)] = columns[order], values[order]
    return docs, best


class Engine:
    """One system in its child process: `build` the index, then `search` query batches."""

    LIBRARIES: tuple[str, ...] = ()  # imported before the baseline RSS: the index's growth excludes them

    def __init__(self, docs: CSR, vocab_size: int, setting: dict[str, Any]):
        self.n_docs, self.vocab_size, self.setting = len(docs[0]) - 1, vocab_size, setting

    def search(self, queries: CSR, k: int, threads: int) -> Lists:
        raise NotImplementedError

    def save(self, folder: Path) -> Path:
        raise NotImplementedError


def csr_batch(arrays: CSR, vocab_size: int) -> SparseBatch:
    from spladerunner.sparse import SparseBatch

    return SparseBatch(arrays[0], arrays[1], arrays[2], vocab_size)


class Spladerunner(Engine):
    LIBRARIES = ("spladerunner.retrieval",)

    def __init__(self, docs: CSR, vocab_size: int, setting: dict[str, Any]):
        from spladerunner.retrieval import SparseIndex

        super().__init__(docs, vocab_size, setting)
        self.index = SparseIndex(precision=setting["precision"])
        self.index.add_vectors(csr_batch(docs, vocab_size))
        self.index.compact()  # merges the pending documents: part of the build, not of the first search

    def search(self, queries: CSR, k: int, threads: int) -> Lists:
        results = self.index.search(csr_batch(queries, self.vocab_size), k=k, threads=threads)
        docs, best = np.full((len(results), k), -1, dtype=np.int64), np.zeros((len(results), k))
        for row, (ids, scores) in enumerate(zip(results.ids, results.scores)):
            docs[row, :len(ids)], best[row, :len(ids)] = np.array(ids, dtype=np.int64), scores
        return docs, best

    def save(self, folder: Path) -> Path:
        return self.index.save(folder / "index")


class SpladeIndex(Engine):
    LIBRARIES = ("splade_index", "splade_index.numba.retrieve_utils")

    def __init__(self, docs: CSR, vocab_size: int, setting: dict[str, Any]):
        import scipy.sparse
        from splade_index import SPLADE

        super().__init__(docs, vocab_size, setting)
        csc = scipy.sparse.csr_matrix((docs[2], docs[1], docs[0]), shape=(self.n_docs, vocab_size)).tocsc()
        self.model = SPLADE(backend="numba")
        self.model.scores = {"data": csc.data.astype(np.float32, copy=False),
                             "indices": csc.indices.astype(np.int32, copy=False),
                             "indptr": csc.indptr.astype(np.int32), "num_docs": self.n_docs}
        self.model.vocab_dict, self.model.document_ids = {}, np.arange(self.n_docs)

    def search(self, queries: CSR, k: int, threads: int) -> Lists:
        from splade_index.numba.retrieve_utils import _retrieve_numba_functional

        rows = query_rows(queries)
        docs, scores = _retrieve_numba_functional([r[0] for r in rows], [r[1] for r in rows], self.model.scores,
                                                  k=k, show_progress=False, n_threads=threads)
        docs = np.where(scores > 0, docs, -1)  # it fills k slots: documents scoring 0 are no hits
        return docs, np.where(scores > 0, scores, 0.0)

    def save(self, folder: Path) -> Path:
        self.model.save(folder / "index")
        return folder / "index"


class Scipy(Engine):
    LIBRARIES = ("scipy.sparse",)
    CHUNK = 32  # queries per product: bounds the score matrix (a query reaches most of a large corpus)

    def __init__(self, docs: CSR, vocab_size: int, setting: dict[str, Any]):
        import scipy.sparse

        super().__init__(docs, vocab_size, setting)
        dtype = np.float64 if setting.get("reference") else np.float32
        matrix = scipy.sparse.csr_matrix((np.asarray(docs[2], dtype=dtype), docs[1], docs[0]),
                                         shape=(self.n_docs, vocab_size))
        self.terms = matrix.T.tocsr()  # term -> documents (the CSC of D): Q @ D.T is then CSR @ CSR
        self.dtype = dtype

    def search(self, queries: CSR, k: int, threads: int) -> Lists:
        import scipy.sparse

        q = scipy.sparse.csr_matrix((np.asarray(queries[2], dtype=self.dtype), queries[1], queries[0]),
                                    shape=(len(queries[0]) - 1, self.vocab_size))
        chunks = [q[start:start + self.CHUNK] for start in range(0, q.shape[0], self.CHUNK)]
        if threads == 1:
            parts = [top_rows(part @ self.terms, k) for part in chunks]
        else:
            with ThreadPoolExecutor(threads) as pool:  # scipy's sparse product releases the GIL
                parts = list(pool.map(lambda part: top_rows(part @ self.terms, k), chunks))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def save(self, folder: Path) -> Path:
        import scipy.sparse

        scipy.sparse.save_npz(folder / "index.npz", self.terms, compressed=False)
        return folder / "index.npz"


class Seismic(Engine):
    LIBRARIES = ("seismic",)

    def __init__(self, docs: CSR, vocab_size: int, setting: dict[str, Any]):
        from seismic import SeismicDataset, SeismicIndex

        super().__init__(docs, vocab_size, setting)
        dataset = SeismicDataset(dim=vocab_size)
        indptr = np.asarray(docs[0])
        for start in range(0, self.n_docs, 50_000):  # its int64 copies one slice at a time
            stop = min(start + 50_000, self.n_docs)
            a, b = int(indptr[start]), int(indptr[stop])
            dataset.add_documents_by_id([str(d) for d in range(start, stop)], np.asarray(docs[1][a:b], np.int64),
                                        np.asarray(docs[2][a:b], np.float32), indptr[start:stop + 1] - a)
        self.index = SeismicIndex.build_from_dataset(dataset, num_threads=len(os.sched_getaffinity(0)))
        del dataset

    def search(self, queries: CSR, k: int, threads: int) -> Lists:
        from seismic import get_seismic_string

        string = get_seismic_string()
        rows = query_rows(queries)
        components = [ids.astype(str).astype(string) for ids, _ in rows]
        weights = [w.astype(np.float32) for _, w in rows]
        qids = np.array([str(q) for q in range(len(rows))], dtype=string)
        found = self.index.batch_search(qids, components, weights, k=k, query_cut=self.setting["query_cut"],
                                        heap_factor=self.setting["heap_factor"], num_threads=threads)
        docs, best = np.full((len(rows), k), -1, dtype=np.int64), np.zeros((len(rows), k))
        for hits in found:  # one list per query, not in query order: each hit names its query
            hits = [h for h in hits if h[1] > 0]
            if not hits:
                continue
            row = int(hits[0][0])
            docs[row, :len(hits)] = [int(h[2]) for h in hits]
            best[row, :len(hits)] = [h[1] for h in hits]
        return docs, best

    def save(self, folder: Path) -> Path:
        self.index.save(str(folder / "index"))
        return folder


ENGINES: dict[str, type[Engine]] = {"spladerunner": Spladerunner, "splade-index": SpladeIndex, "scipy": Scipy,
                                    "seismic": Seismic, "reference": Scipy}


def child(job: dict[str, Any]) -> dict[str, Any]:
    """Build one system's index over the job's documents, then time each query-time variant and save its
    top-k lists (`<variant>-k<k>.npz` in the job's folder)."""
    out = Path(job["out"])
    queries = load_csr(Path(job["queries"]))
    # splade-index imports torch when it can (for a top-k it does not need here): blocked, or torch's few hundred
    # MB would count as its index.
    sys.modules["torch"] = None  # type: ignore[assignment]
    for library in ENGINES[job["system"]].LIBRARIES:
        importlib.import_module(library)
    started_mb = memory()["VmRSS"]
    started = time.perf_counter()
    docs = load_csr(Path(job["docs"]))
    engine = ENGINES[job["system"]](docs, job["vocab_size"], job["setting"])
    build_s = time.perf_counter() - started
    del docs
    gc.collect()
    result: dict[str, Any] = {"build_s": build_s, "rss_start_mb": started_mb, "rss_index_mb": memory()["VmRSS"]}
    if job["system"] == "reference":
        np.savez(out / "reference.npz", *engine.search(queries, max(job["ks"]), 1))
        return result | memory()
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        result["disk_bytes"] = folder_bytes(engine.save(Path(scratch)))
    rows = query_rows(queries)
    warm = min(50, len(rows))
    warm = (np.asarray(queries[0][:warm + 1]),) + tuple(np.asarray(a[:queries[0][warm]]) for a in queries[1:])
    for variant, setting in enumerate(job["variants"]):
        engine.setting = {**job["setting"], **setting}
        engine.search(warm, 10, 1)  # compiles numba's kernel, touches the index
        timed: dict[str, Any] = {}
        for k in job["ks"]:
            lists = {}
            for threads in THREADS:
                tic = time.perf_counter()
                lists[threads] = engine.search(queries, k, threads)
                timed[f"qps k={k} t={threads}"] = len(rows) / (time.perf_counter() - tic)
            timed[f"same lists k={k}"] = bool(np.array_equal(lists[1][0], lists[2][0]))
            np.savez(out / f"{variant}-k{k}.npz", *lists[1])
        latencies = []
        for row in range(min(job["latency"], len(rows))):
            one = (np.array([0, len(rows[row][0])]), rows[row][0], rows[row][1])
            tic = time.perf_counter()
            engine.search(one, 10, 1)
            latencies.append(time.perf_counter() - tic)
        timed["p50_ms"], timed["p99_ms"] = (float(np.quantile(latencies, q) * 1000) for q in (.5, .99))
        result[str(variant)] = timed
    return result | memory()


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    """`child(job)` in a fresh process (threads of every library capped at the most a run asks for)."""
    cap = str(max(THREADS))
    env = {**os.environ, "NUMBA_NUM_THREADS": cap, "OMP_NUM_THREADS": cap, "OPENBLAS_NUM_THREADS": cap,
           "MKL_NUM_THREADS": cap, "RAYON_NUM_THREADS": cap}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.retrieval_scale", "--child", json.dumps(job)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True)
    print(f"{job['label']}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{job['label']} failed (status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- checks


def load_lists(path: Path) -> Lists:
    with np.load(path) as data:
        return data["arr_0"], data["arr_1"]


def exact_score(docs: CSR, doc: int, terms: np.ndarray, weights: np.ndarray) -> float:
    """Dot product of document `doc` with one query, in float64."""
    a, b = int(docs[0][doc]), int(docs[0][doc + 1])
    _, mine, theirs = np.intersect1d(np.asarray(docs[1][a:b]), terms, assume_unique=True, return_indices=True)
    return float(np.dot(np.asarray(docs[2][a:b], dtype=np.float64)[mine], weights.astype(np.float64)[theirs]))


def mismatches(reference: Lists, found: Lists, k: int, docs: CSR, queries: CSR) -> tuple[int, int]:
    """(queries breaking the identity rule of the module docstring, queries whose lists are identical in order)."""
    ref_docs, ref_scores = reference[0][:, :k], reference[1][:, :k]
    rows = query_rows(queries)
    bad = same = 0
    for q, (r_docs, r_scores, f_docs, f_scores) in enumerate(zip(ref_docs, ref_scores, *found)):
        hits = int(np.count_nonzero(r_docs >= 0))
        tolerance = TOLERANCE * (r_scores[0] if hits else 0.0)
        if (int(np.count_nonzero(f_docs >= 0)) != hits
                or np.any(np.abs(f_scores[:hits] - r_scores[:hits]) > tolerance)):
            bad += 1
            continue
        if np.array_equal(r_docs, f_docs):
            same += 1
            continue
        kth = r_scores[hits - 1]
        differing = set(r_docs[:hits].tolist()) ^ set(f_docs[:hits].tolist())
        if any(abs(exact_score(docs, d, *rows[q]) - kth) > tolerance for d in differing):
            bad += 1
    return bad, same


def recall(reference: np.ndarray, found: np.ndarray, k: int) -> float:
    """Mean share of the brute-force top-k (scoring > 0) that a system found, over queries with any hit."""
    shares = [len(set(r[r >= 0].tolist()) & set(f[f >= 0].tolist())) / np.count_nonzero(r >= 0)
              for r, f in zip(reference[:, :k], found[:, :k]) if np.count_nonzero(r >= 0)]
    return float(np.mean(shares))


# ------------------------------------------------------------------------------------------- report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    total = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable CPUs, {total:.0f} GB RAM, {platform.platform()}"


def versions() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found) + f", Python {platform.python_version()}"


def jobs_for(systems: list[str]) -> Iterator[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]]:
    """(engine, build setting, [(row label, query-time setting)]) of every child process."""
    for system in systems:
        if system == "spladerunner":
            for precision in ("float32", "float16"):
                yield system, {"precision": precision}, [(f"spladerunner SparseIndex {precision}", {})]
        elif system == "seismic":  # one build, searched at each setting
            yield system, {}, [(f"Seismic query_cut={cut} heap_factor={heap}",
                                {"query_cut": cut, "heap_factor": heap}) for cut, heap in SEISMIC_SETTINGS]
        else:
            yield system, {}, [({"splade-index": "splade-index (numba)", "scipy": "scipy CSR"}[system], {})]


def measure(name: str, docs: Path, queries: Path, args: argparse.Namespace, vocab_size: int,
            work: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every system's rows on one corpus; the identity failures found."""
    ks = sorted(args.k)
    base = {"docs": str(docs), "queries": str(queries), "vocab_size": vocab_size, "ks": ks,
            "latency": args.latency}
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    run_child({**base, "label": f"{name}: brute force", "system": "reference", "setting": {"reference": True},
               "variants": [], "out": str(folder)})
    reference = load_lists(folder / "reference.npz")
    doc_arrays, query_arrays = load_csr(docs), load_csr(queries)
    n_postings = len(doc_arrays[1])
    rows, failures = {}, []
    for system, setting, variants in jobs_for(args.systems):
        out = folder / f"{system}-{'-'.join(map(str, setting.values()))}".rstrip("-")
        out.mkdir(exist_ok=True)
        got = run_child({**base, "label": f"{name}: {variants[0][0]}", "system": system, "setting": setting,
                         "variants": [v for _, v in variants], "out": str(out)})
        exact = system != "seismic" and setting.get("precision", "float32") == "float32"
        for variant, (label, _) in enumerate(variants):
            timed = got[str(variant)]
            grown = (got["rss_index_mb"] - got["rss_start_mb"]) * 2**20 / n_postings
            row: dict[str, Any] = {"build s": f"{got['build_s']:.1f}", "index RSS MB": f"{got['rss_index_mb']:.0f}",
                                   "bytes/posting": f"{grown:.1f}", "peak RSS MB": f"{got['VmHWM']:.0f}",
                                   "disk MB": f"{got['disk_bytes'] / 1e6:.0f}"}
            for k in ks:
                for threads in THREADS:
                    row[f"k={k} q/s, {threads} thr"] = f"{timed[f'qps k={k} t={threads}']:,.0f}"
            row["p50 ms (batch 1)"], row["p99 ms"] = f"{timed['p50_ms']:.2f}", f"{timed['p99_ms']:.2f}"
            identity = []
            for k in ks:
                found = load_lists(out / f"{variant}-k{k}.npz")
                row[f"recall@{k}"] = f"{recall(reference[0], found[0], k):.4f}"
                if exact:
                    bad, same = mismatches(reference, found, k, doc_arrays, query_arrays)
                    if bad or not timed[f"same lists k={k}"]:
                        failures.append(f"{name}, {label}, k={k}: {bad} queries differ from brute force"
                                        + ("" if timed[f"same lists k={k}"] else "; 2 threads gave other lists"))
                    identity.append(f"k={k}: {'yes' if not bad else f'NO ({bad})'}, {same} same order")
            row["identical to brute force"] = "; ".join(identity) if exact else "(approximate)"
            row["_qps"] = timed[f"qps k={ks[0]} t=1"]
            rows[label] = row
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=None, help="first N queries (default all 6,980)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("-k", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--latency", type=int, default=300, help="queries timed one at a time (batch 1)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "spladerunner-bench")
    parser.add_argument("--work", type=Path, default=None, help="keep every system's top-k lists here")
    parser.add_argument("--smoke", action="store_true", help="tiny (seconds): 100 real documents per corpus (DL19 "
                        "measured, both templates), 1,000 synthetic, 100 queries, k=10/50")
    parser.add_argument("--output", default=None, help="also write the report to this markdown file "
                        "(benchmarks/RESULTS-retrieval-scale.md for a full run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.output and not Path(args.output).parent.is_dir():  # known before the run, not after it
        parser.error(f"--output {args.output}: folder {Path(args.output).parent} does not exist")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    limit = None
    if args.smoke:
        limit, args.docs, args.queries, args.k, args.latency = 100, 1000, args.queries or 100, [10, 50], 10
    load_start, started = os.getloadavg(), time.time()
    from spladerunner import Expander

    vocab = Expander(MODEL).vocab
    cache = args.cache_dir
    real = {name: expanded(cache, name, limit) for name in REAL}
    queries = query_folder(cache, vocab, args.queries)
    templates = concat_csr(list(real.values()))
    template_folder = cache / f"templates-{'-'.join(f.name for f in real.values())}"
    if not (template_folder / "values.npy").is_file():
        save_csr(template_folder, *templates)
    recipe = template_folder.name + inspect.getsource(synthesize)  # any change to the recipe builds anew
    synthetic = cache / f"synthetic-{args.docs}-seed{SEED}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if not (synthetic / "values.npy").is_file():
        tic = time.perf_counter()
        synthesize(templates, args.docs, len(vocab), synthetic)
        print(f"built {args.docs:,} synthetic documents in {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    del templates
    corpora = {**{f"{name} (real, splade-tiny)": folder for name, folder in real.items()
                  if not args.smoke or name == "dl19-subset"},
               f"synthetic ({args.docs:,} documents)": synthetic}
    n_queries = len(load_csr(queries)[0]) - 1
    stats = {"templates (SciFact + DL19 subset)": statistics_of(template_folder, len(vocab)),
             f"synthetic {args.docs:,}": statistics_of(synthetic, len(vocab))}
    work = args.work or Path(tempfile.mkdtemp(prefix="retrieval-scale-"))
    sections, failures, speed = [], [], {}
    for name, folder in corpora.items():
        rows, failed = measure(name.split(" ")[0], folder, queries, args, len(vocab), work)
        failures += failed
        touched = postings_touched(folder, queries, len(vocab))
        speed[name] = ({label: row.pop("_qps") for label, row in rows.items()}, touched,
                       len(load_csr(folder)[0]) - 1)
        sections.append((name, touched, rows))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    report = render(args, stats, sections, speed, n_queries, load_start, started, failures)
    publish(report, args.output)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def render(args: argparse.Namespace, stats: dict[str, dict[str, str]], sections: list, speed: dict,
           n_queries: int, load_start: tuple[float, ...], started: float, failures: list[str]) -> str:
    from spladerunner.evaluation import markdown_table

    command = " ".join(["python -m benchmarks.retrieval_scale", *args.argv])
    lines = [f"# Exact retrieval at scale ({datetime.fromtimestamp(started, timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"`{command.strip()}`)", ""]
    if args.smoke:
        lines += ["**SMOKE RUN**: tiny corpora, few queries; the figures mean nothing.", ""]
    lines += [f"Machine: {machine()}; load average (1/5/15 min) at start "
              f"{' / '.join(f'{x:.2f}' for x in load_start)}, at end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"
              f" (a shared machine: other work in the load average took CPU from these runs).",
              f"Versions: {versions()}.", "",
              f"Queries: {n_queries:,} SPLADE++ ED MS MARCO dev query vectors ({QUERIES.name}, integer impacts). "
              f"Documents: built-in splade-tiny int8, max length {MAX_LENGTH}; synthetic ones built from them (seed "
              f"{SEED}: each copies a random real document's length and weights, keeps {KEEP:.0%} of its terms, "
              f"draws the rest from the real document-frequency distribution without repeats, weights x "
              f"U[{1 - JITTER:g}, {1 + JITTER:g}]; `benchmarks/retrieval_scale.py` says exactly how). "
              "Every system runs in a fresh process of its own; q/s = the whole query batch, timed once after a "
              f"warm-up; p50/p99 = {args.latency} queries one at a time, k=10, 1 thread. Index RSS: the process "
              "after building (corpus maps released); bytes/posting: its growth over the process before loading, "
              "per posting. Brute force: scipy in float64, ties by document number; exact systems must match it "
              f"(scores within {TOLERANCE:g} x the top score position by position; sets may differ only by "
              "documents tied with the k-th score within that tolerance). float16 is exact on its rounded weights: "
              "its recall is against the float32 brute force. splade-index builds in float32 through scipy's "
              "CSC; Seismic builds with its default parameters on all CPUs.", "",
              "## Synthetic corpus against its templates", "", markdown_table(stats), ""]
    for name, touched, rows in sections:
        lines += [f"## {name}", "", f"Postings a query reaches: {touched:,.0f} on average.", "",
                  markdown_table(rows), ""]
    names = list(speed)
    if len(names) >= 2:
        (small, small_touched, small_docs), (large, large_touched, large_docs) = speed[names[0]], speed[names[-1]]
        lines += [f"## How cost grows from {small_docs:,} to {large_docs:,} documents", "",
                  f"{large_docs / small_docs:.0f}x the documents, {large_touched / small_touched:.0f}x the postings a "
                  f"query reaches; time per query at k={min(args.k)}, 1 thread:", ""]
        for label in small:
            if label in large and not label.startswith("Seismic"):
                lines.append(f"- {label}: {1000 / small[label]:.3f} ms -> {1000 / large[label]:.2f} ms per query "
                             f"({small[label] / large[label]:.1f}x)")
        lines.append("")
    lines += (["## FAILED", ""] + [f"- {f}" for f in failures] if failures
              else ["Every exact system returned the brute-force documents (rule above)."])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
