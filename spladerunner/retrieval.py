"""Exact learned-sparse retrieval in numpy: an inverted index over `SparseBatch` vectors.

`SparseIndex` keeps, for every vocabulary term, the postings (document slots and weights) of the
documents that contain it: the CSC form of the document-term matrix. Search scores a batch of
queries with one `np.bincount` over their gathered postings and selects the top k without sorting
the scores (see `top_k`); with numba installed a compiled kernel does the same, faster
(`compiled_search`). Results equal a brute-force dot product; among equal scores the document
added earlier wins, so rankings are deterministic and independent of batching or compaction.

Documents can be added later (they are merged in on the next search), deleted or replaced by id
(deleted slots are masked, then dropped at the next compaction). `save` writes a folder of `.npy`
files plus `index.json` (format version, sizes, sha256 of every file), the manifest
replaced last, so a crash never leaves a half index that loads (`index_folder`); `load` memory-maps it.
One index is safe to share across threads (`postings`).

Weight storage (`precision`): "float32" is exact, 6 bytes a posting with its uint16 block offset;
"float16" halves the weight bytes (relative error 2^-11 per weight), 4 bytes a posting; "impact" stores
round(weight x `impact_scale`) as uint16 like Anserini's impact indexes (absolute error <= 0.5 / scale
per weight; weights that round to 0 are dropped). benchmarks/bench_search.py measures the score error,
top-10 overlap and speed of each against float32.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import check_count
from .documents import SparseEncoder, check_vectors
from .errors import IndexFormatError, InputError
from .index_folder import positive_float_field
from .postings import BLOCK, Postings, PostingsIndex
from .results import SearchResults
from .scoring import usable_cpus
from .sparse import SparseBatch

__all__ = ["WEIGHT_STORAGES", "IndexFormatError", "SearchResults", "SparseEncoder", "SparseIndex"]

WEIGHT_DTYPES = {"float32": np.float32, "float16": np.float16, "impact": np.uint16}
WEIGHT_STORAGES = tuple(WEIGHT_DTYPES)
# "auto": the compiled kernel when numba is installed (the `fast` extra), else numpy; both give the same results.
KERNELS = ("auto", "numba", "numpy")
POSTINGS_PER_THREAD = 1 << 18


@cache
def numba_installed() -> bool:
    """Whether numba can be imported (looked up once: the lookup costs more than a small search)."""
    return importlib.util.find_spec("numba") is not None


class SparseIndex(PostingsIndex):
    """Inverted index over sparse document vectors with exact batched dot-product search.

    encoder: turns texts into vectors for `add` and `search` (optional when you bring vectors).
    precision: weight storage, "float32", "float16" or "impact" (uint16 of weight x impact_scale).
    metadata: free-form JSON-able dict saved with the index (the CLI records its encoder there).
    kernel: "auto" (numba when installed, else numpy), "numba" (an error without it) or "numpy"; the kernels
    return identical results, numba's faster (`compiled_search`). Also settable later: `index.kernel = ...`.
    Safe to share across threads: searches run in parallel, adds and deletes are atomic.
    """

    FORMAT_NAME = "spladerunner-index"
    COLUMNS = ("weights",)

    def __init__(self, encoder: SparseEncoder | None = None, *, precision: str = "float32",
                 impact_scale: float = 100.0, vocab_size: int | None = None,
                 metadata: dict[str, Any] | None = None, kernel: str = "auto"):
        if precision not in WEIGHT_STORAGES:
            raise InputError(f"precision must be one of {WEIGHT_STORAGES}, got {precision!r}")
        if not np.isfinite(impact_scale) or impact_scale <= 0:
            raise InputError(f"impact_scale must be a finite number > 0, got {impact_scale!r}")
        super().__init__(encoder, metadata=metadata)
        self.precision = precision
        self.impact_scale = float(impact_scale) if precision == "impact" else 1.0
        self.kernel = kernel
        if vocab_size is not None:
            self._init_postings(vocab_size)

    @property
    def kernel(self) -> str:
        """The search kernel asked for: "auto", "numba" or "numpy"."""
        return self._kernel

    @kernel.setter
    def kernel(self, kernel: str) -> None:
        if kernel not in KERNELS:
            raise InputError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "numba" and not numba_installed():
            raise InputError('kernel "numba" needs numba: pip install "spladerunner[fast]" (or use kernel="numpy")')
        self._kernel = kernel

    def _compiled(self) -> bool:
        """Whether searches run the numba kernel."""
        return self._kernel == "numba" or (self._kernel == "auto" and numba_installed())

    def __repr__(self) -> str:
        return f"SparseIndex({len(self)} documents, vocab_size={self.vocab_size}, precision={self.precision!r})"

    # -- adding ---------------------------------------------------------------------------------

    def _encode(self, texts: list[str], *, query: bool) -> SparseBatch:
        return self.encoder.expand_batch(texts, query=query)

    def add_vectors(self, vectors: SparseBatch, ids: Sequence[str] | None = None, *, replace: bool = False) -> None:
        """Add precomputed document vectors; `ids` default to running numbers."""
        check_vectors(vectors, "document", None)
        self._check_fits(vectors.values)
        with self._lock:
            check_vectors(vectors, "document", self.vocab_size)
            ids = self._register(ids, len(vectors), replace)
            if self.vocab_size is None:
                self._init_postings(vectors.vocab_size)
            self._append(ids, vectors, replace)

    def _check_fits(self, values: np.ndarray) -> None:
        if self.precision == "float32":
            return
        limit = float(np.finfo(np.float16).max if self.precision == "float16" else np.iinfo(np.uint16).max)
        if float(values.max(initial=0.0)) * self.impact_scale > limit:
            raise InputError(f"weight {values.max():.4g} does not fit {self.precision} storage (max {limit:g}"
                             + (f" at impact_scale {self.impact_scale:g})" if self.precision == "impact" else ")"))

    def _empty_columns(self) -> dict[str, np.ndarray]:
        return {"weights": np.zeros(0, dtype=WEIGHT_DTYPES[self.precision])}

    def _new_postings(self, batch: SparseBatch) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        if self.precision == "impact":
            weights = np.rint(batch.values.astype(np.float64) * self.impact_scale).astype(np.uint16)
        else:
            weights = batch.values.astype(WEIGHT_DTYPES[self.precision], copy=False)
        keep = weights > 0  # weights that round or underflow to 0 would only cost space
        if keep.all():
            return batch.indices, batch.nnz, {"weights": weights}
        rows = np.repeat(np.arange(len(batch)), batch.nnz)[keep]
        return batch.indices[keep], np.bincount(rows, minlength=len(batch)), {"weights": weights[keep]}

    # -- reading --------------------------------------------------------------------------------

    def document_frequency(self) -> np.ndarray:
        """Live documents per term (int64, length vocab_size): p_d(t) x N for FLOPS."""
        postings = self._snapshot()
        terms = np.repeat(np.arange(self.vocab_size), np.diff(postings.term_ptr))
        if postings.dead.size:
            alive = np.ones(postings.n_slots, dtype=bool)
            alive[postings.dead] = False
            terms = terms[alive[postings.slots()]]
        return np.bincount(terms, minlength=self.vocab_size)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes of each stored array (`segment_ptr`, `offsets`, `weights`; see `postings`), after compaction."""
        self.compact()
        postings = self._snapshot()
        return {"segment_ptr": postings.segment_ptr.nbytes, "offsets": postings.offsets.nbytes,
                "weights": postings.columns["weights"].nbytes}

    def to_batch(self) -> SparseBatch:
        """The live documents as one CSR `SparseBatch`, rows in `ids` order (weights as stored)."""
        with self._lock:
            self.compact()
            postings = self._snapshot()
        terms = np.repeat(np.arange(self.vocab_size, dtype=np.int32), np.diff(postings.term_ptr))
        slots = postings.slots()
        order = np.lexsort((terms, slots))
        indptr = np.zeros(postings.n_slots + 1, dtype=np.int64)
        np.cumsum(np.bincount(slots, minlength=postings.n_slots), out=indptr[1:])
        values = postings.columns["weights"][order].astype(np.float32) / np.float32(self.impact_scale)
        return SparseBatch(indptr, terms[order], values, self.vocab_size)

    def search(self, queries: str | Sequence[str] | SparseBatch, k: int = 10, *,
               threads: int | None = None) -> SearchResults:
        """Top-k documents per query by dot product; texts are encoded with the index's encoder.

        threads: at most this many threads share a batch of queries (default: the CPUs this process may
        use); a batch too small to repay a thread hand-off runs on the calling thread.
        """
        if not isinstance(queries, SparseBatch):
            queries = self._encode_queries(queries)
        check_vectors(queries, "query", self.vocab_size)
        n_threads = self._threads_for(queries, usable_cpus() if threads is None else check_count("threads", threads))
        if self._compiled():
            from . import compiled_search

            def score(postings: Postings, start: int, stop: int, k: int) -> tuple[np.ndarray, np.ndarray]:
                ptr = queries.indptr[start:stop + 1]
                slots, best = compiled_search.search(
                    ptr - ptr[0], queries.indices[ptr[0]:ptr[-1]], queries.values[ptr[0]:ptr[-1]],
                    postings.segment_ptr, postings.offsets, postings.columns["weights"], postings.dead_mask,
                    postings.n_slots, BLOCK, k)
                if self.impact_scale != 1.0:
                    best /= self.impact_scale
                return slots, best

            # Several chunks per thread even out queries of unequal cost.
            chunk = max(1, -(-len(queries) // (4 * n_threads)))
            return self._search_postings(len(queries), k, score, threads=n_threads, chunk_queries=chunk)
        return self._search_postings(len(queries), k,
                                     lambda postings, start, stop, k: self._score(postings, queries, start, stop, k),
                                     threads=n_threads)

    def _threads_for(self, queries: SparseBatch, threads: int) -> int:
        """Threads worth starting for `queries`: one per `POSTINGS_PER_THREAD` postings they reach, at most `threads`.

        Starting a pool costs about what scoring a few hundred thousand postings does, so a batch of queries
        over a small index, or a single query, is faster on the calling thread alone.
        """
        if threads == 1 or self._postings is None:
            return 1
        postings = self._snapshot()
        reach = int((postings.term_ptr[queries.indices + 1] - postings.term_ptr[queries.indices]).sum())
        return max(1, min(threads, reach // POSTINGS_PER_THREAD))

    def _score(self, postings: Postings, queries: SparseBatch, start: int, stop: int,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        width = postings.width
        ptr = queries.indptr[start:stop + 1]
        terms = queries.indices[ptr[0]:ptr[-1]]
        query_weights = queries.values[ptr[0]:ptr[-1]]
        cell_type = np.int32 if (stop - start) * width < 2**31 else np.int64  # halves that pass's memory
        rows = np.repeat(np.arange(stop - start, dtype=cell_type) * cell_type(width), np.diff(ptr))
        positions, slots, lengths = postings.gather(terms)
        cells = np.repeat(rows, lengths) + slots
        products = postings.columns["weights"][positions]
        if not np.all(query_weights == 1):  # binary queries (BM25) need no multiply
            products = products * np.repeat(query_weights.astype(np.float64), lengths)
        slots, best = postings.rank(np.bincount(cells, products, minlength=(stop - start) * width), stop - start, k)
        if self.impact_scale != 1.0:
            best /= self.impact_scale
        return slots, best

    # -- persistence ----------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {"precision": self.precision, "impact_scale": self.impact_scale}

    @classmethod
    def _from_manifest(cls, manifest: Mapping[str, Any], path: Path, encoder: Any) -> SparseIndex:
        precision = manifest.get("precision")
        if precision not in WEIGHT_STORAGES:
            raise IndexFormatError(f"{path}: unknown weight storage {precision!r}")
        metadata = manifest.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise IndexFormatError(f"{path}: metadata must be an object")
        return cls(encoder, precision=precision, impact_scale=positive_float_field(manifest, "impact_scale", path),
                   metadata=metadata)

    def _column_layout(self, n_postings: int) -> dict[str, tuple[int, type]]:
        return {"weights": (n_postings, WEIGHT_DTYPES[self.precision])}
