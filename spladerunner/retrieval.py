"""Exact learned-sparse retrieval in numpy: an inverted index over `SparseBatch` vectors.

`SparseIndex` keeps, for every vocabulary term, the postings (document slots and weights) of the
documents that contain it: the CSC form of the document-term matrix. Search scores a batch of
queries with one `np.bincount` over their gathered postings and selects the top k without sorting
the scores (see `top_k`). Results equal a brute-force dot product; among equal scores the document
added earlier wins, so rankings are deterministic and independent of batching or compaction.

Documents can be added later (they are merged in on the next search), deleted or replaced by id
(deleted slots are masked, then dropped at the next compaction). `save` writes a folder of `.npy`
files plus `index.json` (format version, sizes, sha256 of every file) into a temporary folder
renamed into place, so a crash never leaves a half index that loads; `load` memory-maps it.

Weight storage (`precision`): "float32" is exact; "float16" halves the weight bytes (relative error
2^-11 per weight); "impact" stores round(weight x `impact_scale`) as uint16 like Anserini's impact
indexes (absolute error <= 0.5 / scale per weight; weights that round to 0 are dropped). Postings
(int32 slots) stay, so the index shrinks by a quarter, not a half. On BM25 MS MARCO passages with
SPLADE++ queries (benchmarks/bench_search.py) the largest score error is 1.7e-4 (float16) and 3.7e-4
(impact) of the top score, top-10 overlap 99.96% and 99.89%, search speed unchanged, and SciFact
BM25 nDCG@10 identical to 4 decimals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import IndexFormatError
from .sparse import SparseBatch

PRECISIONS = ("float32", "float16", "impact")
FORMAT_NAME = "spladerunner-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "index.json"
WEIGHT_DTYPES = {"float32": np.float32, "float16": np.float16, "impact": np.uint16}
# Score cells (queries x documents, float64) per search chunk: 512 KiB stays in L2 cache, which measured
# fastest; a corpus larger than this is scored one query at a time.
MAX_SCORE_CELLS = 1 << 16
GROUP = 16  # most score columns per group in top-k selection (a power of 2)
PAD = 64  # score rows are padded to a multiple of this, so top-k can always form groups


class Encoder(Protocol):
    """Anything that turns texts into sparse vectors: `Expander`, `BM25Encoder`, `IdfQueryEncoder`."""

    def expand_batch(self, texts: Sequence[str], *, query: bool = False) -> SparseBatch: ...


@dataclass(frozen=True)
class SearchResults:
    """Top-k hits per query, best first: `ids[q]` document ids, `scores[q]` their float32 scores.

    Only documents scoring > 0 (sharing a term with the query) are hits, so a query may have fewer
    than k, and an empty query none.
    """

    ids: list[list[str]]
    scores: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, query: int) -> list[tuple[str, float]]:
        """(document id, score) pairs of one query."""
        return list(zip(self.ids[query], self.scores[query].tolist()))

    def to_run(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """`{query id: {doc id: score}}`, the run format of `evaluation.evaluate` and pytrec_eval."""
        if len(query_ids) != len(self):
            raise ValueError(f"{len(query_ids)} query ids for {len(self)} result lists")
        return {str(q): dict(self.hits(i)) for i, q in enumerate(query_ids)}

    @classmethod
    def from_slots(cls, slots: np.ndarray, scores: np.ndarray, ids: Sequence[str]) -> SearchResults:
        """Results from `top_k` output: document slots [n_queries, k] (-1 padded) indexing `ids`, and scores."""
        counts = np.count_nonzero(slots >= 0, axis=1).tolist()
        return cls([[ids[s] for s in row[:n]] for row, n in zip(slots.tolist(), counts)],
                   [row[:n] for row, n in zip(scores.astype(np.float32), counts)])


def document_texts(documents: Sequence[str | Mapping[str, Any]], *, key: str = "id",
                   on: Sequence[str] = ("title", "text"), first_id: int = 0) -> tuple[list[str], list[str]]:
    """(ids, texts) of plain strings (ids = running numbers from `first_id`) or of dicts.

    A dict gives its id under `key` and the non-empty fields `on`, joined with a space (BEIR puts
    the title before the text).
    """
    ids: list[str] = []
    texts: list[str] = []
    for position, doc in enumerate(documents):
        if isinstance(doc, str):
            ids.append(str(first_id + position))
            texts.append(doc)
            continue
        if not isinstance(doc, Mapping):
            raise TypeError(f"documents[{position}] is {type(doc).__name__}, expected str or dict")
        if key not in doc:
            raise ValueError(f"documents[{position}] has no id field {key!r}")
        fields = [doc[f] for f in on if doc.get(f)]
        if not all(isinstance(f, str) for f in fields):
            raise TypeError(f"documents[{position}]: fields {list(on)} must be strings")
        if not any(f in doc for f in on):
            raise ValueError(f"documents[{position}] has none of the fields {list(on)}")
        ids.append(str(doc[key]))
        texts.append(" ".join(fields))
    return ids, texts


def check_new_ids(ids: Sequence[str], indexed: Container[str], hint: str = "") -> None:
    """Refuse ids repeated among `ids` or already in `indexed`; `hint` ends the message of the latter."""
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate ids among the documents being added")
    taken = [i for i in ids if i in indexed]
    if taken:
        raise ValueError(f"{len(taken)} id(s) already indexed, e.g. {taken[0]!r}{hint}")


def check_weights(batch: SparseBatch, what: str) -> None:
    """Refuse weights that are not all finite and > 0: hits are the documents that score > 0."""
    if batch.values.size and not (np.all(np.isfinite(batch.values)) and batch.values.min() > 0):
        raise ValueError(f"{what} weights must be finite and > 0")


def group_by_term(terms: np.ndarray, slots: np.ndarray, weights: np.ndarray,
                  vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postings in (slot, term) order -> (term_ptr, slots, weights) grouped by term, slots still ascending."""
    order = np.argsort(terms, kind="stable")
    term_ptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=vocab_size), out=term_ptr[1:])
    return term_ptr, slots[order], weights[order]


def gather_postings(term_ptr: np.ndarray, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of all postings of `terms` (concatenated in term order), and each term's count."""
    starts = term_ptr[terms]
    lengths = term_ptr[terms + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - offsets, lengths), lengths




def search_in_chunks(n_queries: int, n_docs: int, k: int,
                     chunk: Callable[[int, int], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (slots [n_queries, k] int64, -1 padded; scores float64) from `chunk(start, stop)` per query chunk.

    Chunks hold as many queries as keep a chunk's score matrix within `MAX_SCORE_CELLS` (at least one).
    """
    if n_docs == 0:
        return np.full((n_queries, k), -1, dtype=np.int64), np.zeros((n_queries, k))
    step = max(1, MAX_SCORE_CELLS // (n_docs + PAD))
    parts = [chunk(start, min(start + step, n_queries)) for start in range(0, n_queries, step)]
    if not parts:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k highest positive scores: (columns [rows, k] with -1 padding, scores).

    Columns are split into groups (column c in group c mod n_groups, up to 16 per group); the k-th
    largest group maximum bounds the k-th score from below, so only members of groups reaching it
    are candidates. That costs one vectorised max over the matrix instead of a full partition.
    Candidates are ranked exactly, ties going to the lower column (argpartition picks arbitrarily).
    """
    rows_n, cols_n = scores.shape
    size = 1
    while size < GROUP and cols_n % (2 * size) == 0 and cols_n // (2 * size) >= 2 * k:
        size *= 2
    groups = scores.reshape(rows_n, size, cols_n // size)
    group_max = groups.max(axis=1) if size > 1 else scores
    n_groups = group_max.shape[1]
    bound = np.partition(group_max, n_groups - k, axis=1)[:, n_groups - k] if k < n_groups else np.zeros(rows_n)
    bound = np.maximum(bound, np.finfo(scores.dtype).smallest_subnormal)  # hits score > 0
    rows, hit_groups = np.nonzero(group_max >= bound[:, None])
    candidates = groups[rows, :, hit_groups]
    at, member = np.nonzero(candidates >= bound[rows, None])
    rows, cols, values = rows[at], member * n_groups + hit_groups[at], candidates[at, member]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    out_cols = np.full((rows_n, k), -1, dtype=np.int64)
    out_scores = np.zeros((rows_n, k), dtype=scores.dtype)
    out_cols[rows[keep], rank[keep]] = cols[keep]
    out_scores[rows[keep], rank[keep]] = values[keep]
    return out_cols, out_scores


class SparseIndex:
    """Inverted index over sparse document vectors with exact batched dot-product search.

    encoder: turns texts into vectors for `add` and `search` (optional when you bring vectors).
    precision: weight storage, "float32", "float16" or "impact" (uint16 of weight x impact_scale).
    metadata: free-form JSON-able dict saved with the index (the CLI records its encoder there).
    """

    def __init__(self, encoder: Encoder | None = None, *, precision: str = "float32",
                 impact_scale: float = 100.0, vocab_size: int | None = None,
                 metadata: dict[str, Any] | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if impact_scale <= 0:
            raise ValueError("impact_scale must be > 0")
        self.encoder = encoder
        self.precision = precision
        self.impact_scale = float(impact_scale) if precision == "impact" else 1.0
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.vocab_size: int | None = None
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._dead: list[int] = []
        self._pending: list[SparseBatch] = []
        self._flushed = 0  # slots already in the postings arrays
        if vocab_size is not None:
            self._init_postings(vocab_size)

    def _init_postings(self, vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)
        self._term_ptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
        self._slots = np.zeros(0, dtype=np.int32)
        self._weights = np.zeros(0, dtype=WEIGHT_DTYPES[self.precision])

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    def __repr__(self) -> str:
        return f"SparseIndex({len(self)} documents, vocab_size={self.vocab_size}, precision={self.precision!r})"

    @property
    def ids(self) -> list[str]:
        """Ids of the live documents, in the order they were added (the tie order)."""
        return [doc for slot, doc in enumerate(self._ids) if self._slot.get(doc) == slot]

    # -- adding and deleting ------------------------------------------------------------------

    def add(self, documents: Sequence[str | Mapping[str, Any]], *, key: str = "id",
            on: Sequence[str] = ("title", "text"), replace: bool = False, batch_size: int = 256,
            progress: bool = False) -> None:
        """Encode and add documents: plain texts (ids are running numbers) or dicts (see `document_texts`).

        replace: documents whose id is already indexed replace the old version; otherwise that is an error.
        """
        if self.encoder is None:
            raise ValueError("this index has no encoder; pass one to SparseIndex(...) or use add_vectors()")
        ids, texts = document_texts(documents, key=key, on=on, first_id=len(self._ids))
        self._check_new_ids(ids, replace)
        from .progress import Progress

        bar = Progress(len(texts), "indexed", enabled=progress)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            self.add_vectors(self.encoder.expand_batch(chunk, query=False), ids[start:start + batch_size],
                             replace=replace)
            bar.update(len(chunk))
        bar.close()

    def add_vectors(self, vectors: SparseBatch, ids: Sequence[str] | None = None, *, replace: bool = False) -> None:
        """Add precomputed document vectors; `ids` default to running numbers."""
        ids = [str(i) for i in ids] if ids is not None else [str(len(self._ids) + i) for i in range(len(vectors))]
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if self.vocab_size is None:
            self._init_postings(vectors.vocab_size)
        elif vectors.vocab_size != self.vocab_size:
            raise ValueError(f"vectors have vocab_size {vectors.vocab_size}, the index {self.vocab_size}")
        check_weights(vectors, "document")
        self._check_fits(vectors.values)
        self._check_new_ids(ids, replace)
        if replace:
            self.delete([i for i in ids if i in self._slot])
        first = len(self._ids)
        self._ids.extend(ids)
        self._slot.update(zip(ids, range(first, first + len(ids))))
        self._pending.append(vectors)

    def _check_new_ids(self, ids: Sequence[str], replace: bool) -> None:
        check_new_ids(ids, () if replace else self._slot, "; pass replace=True")  # replace: taken ids are fine

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Remove documents by id; returns how many were removed."""
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in self._slot]
        if missing and not missing_ok:
            raise KeyError(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
        removed = [self._slot.pop(i) for i in dict.fromkeys(ids) if i in self._slot]
        self._dead.extend(removed)
        return len(removed)

    def _flush(self) -> None:
        """Merge pending vectors into the postings; compact once deleted slots outnumber live ones."""
        self._merge_pending()
        if len(self._dead) > len(self._slot):
            self.compact()

    def _merge_pending(self) -> None:
        if not self._pending:
            return
        batch = SparseBatch.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        weights = self._encode_weights(batch.values)
        keep = weights > 0  # weights that round or underflow to 0 would only cost space
        slots = np.repeat(np.arange(self._flushed, self._flushed + len(batch), dtype=np.int32), batch.nnz)
        self._merge(*group_by_term(batch.indices[keep], slots[keep], weights[keep], self.vocab_size))
        self._flushed += len(batch)

    def _check_fits(self, values: np.ndarray) -> None:
        if self.precision == "float32":
            return
        limit = float(np.finfo(np.float16).max if self.precision == "float16" else np.iinfo(np.uint16).max)
        if float(values.max(initial=0.0)) * self.impact_scale > limit:
            raise ValueError(f"weight {values.max():.4g} does not fit {self.precision} storage (max {limit:g}"
                             + (f" at impact_scale {self.impact_scale:g})" if self.precision == "impact" else ")"))

    def _encode_weights(self, values: np.ndarray) -> np.ndarray:
        if self.precision == "impact":
            return np.rint(values.astype(np.float64) * self.impact_scale).astype(np.uint16)
        return values.astype(WEIGHT_DTYPES[self.precision], copy=False)

    def _merge(self, ptr_b: np.ndarray, slots_b: np.ndarray, weights_b: np.ndarray) -> None:
        """Append postings whose slots all follow the existing ones: each term's list stays ascending."""
        ptr_a = self._term_ptr
        term_ptr = ptr_a + ptr_b
        slots = np.empty(int(term_ptr[-1]), dtype=np.int32)
        weights = np.empty(int(term_ptr[-1]), dtype=self._weights.dtype)
        # Old posting j of term t moves to j + ptr_b[t]; new posting j of term t goes to j + ptr_a[t + 1].
        dest_a = np.arange(len(self._slots)) + np.repeat(ptr_b[:-1], np.diff(ptr_a))
        dest_b = np.arange(len(slots_b)) + np.repeat(ptr_a[1:], np.diff(ptr_b))
        slots[dest_a], weights[dest_a] = self._slots, self._weights
        slots[dest_b], weights[dest_b] = slots_b, weights_b
        self._term_ptr, self._slots, self._weights = term_ptr, slots, weights

    def compact(self) -> None:
        """Drop deleted documents' postings and renumber slots (relative order, hence ties, is kept)."""
        self._merge_pending()
        if not self._dead:
            return
        alive = np.ones(len(self._ids), dtype=bool)
        alive[self._dead] = False
        new_slot = np.cumsum(alive, dtype=np.int64) - 1
        keep = alive[self._slots]
        terms = np.repeat(np.arange(self.vocab_size), np.diff(self._term_ptr))[keep]
        self._term_ptr = np.concatenate([[0], np.cumsum(np.bincount(terms, minlength=self.vocab_size))])
        self._slots = new_slot[self._slots[keep]].astype(np.int32)
        self._weights = self._weights[keep]
        self._ids = [i for i, a in zip(self._ids, alive.tolist()) if a]
        self._slot = dict(zip(self._ids, range(len(self._ids))))
        self._dead = []
        self._flushed = len(self._ids)

    # -- reading --------------------------------------------------------------------------------

    def document_frequency(self) -> np.ndarray:
        """Live documents per term (int64, length vocab_size): p_d(t) x N for FLOPS."""
        self._flush()
        if self.vocab_size is None:
            raise ValueError("the index is empty")
        terms = np.repeat(np.arange(self.vocab_size), np.diff(self._term_ptr))
        if self._dead:
            alive = np.ones(len(self._ids), dtype=bool)
            alive[self._dead] = False
            terms = terms[alive[self._slots]]
        return np.bincount(terms, minlength=self.vocab_size)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes of each stored array (postings as `slots`, `weights`, `term_ptr`), after compaction."""
        self.compact()
        return {"term_ptr": self._term_ptr.nbytes, "slots": self._slots.nbytes, "weights": self._weights.nbytes}

    def to_batch(self) -> SparseBatch:
        """The live documents as one CSR `SparseBatch`, rows in `ids` order (weights as stored)."""
        self.compact()
        if self.vocab_size is None:
            raise ValueError("the index is empty")
        terms = np.repeat(np.arange(self.vocab_size, dtype=np.int32), np.diff(self._term_ptr))
        order = np.lexsort((terms, self._slots))
        indptr = np.zeros(len(self._ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._slots, minlength=len(self._ids)), out=indptr[1:])
        values = self._weights[order].astype(np.float32) / np.float32(self.impact_scale)
        return SparseBatch(indptr, terms[order], values, self.vocab_size)

    def search(self, queries: str | Sequence[str] | SparseBatch, k: int = 10) -> SearchResults:
        """Top-k documents per query by dot product; texts are encoded with the index's encoder."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not isinstance(queries, SparseBatch):
            if self.encoder is None:
                raise ValueError("this index has no encoder to encode query texts; pass a SparseBatch")
            queries = self.encoder.expand_batch([queries] if isinstance(queries, str) else list(queries),
                                                query=True)
        return SearchResults.from_slots(*self._search_slots(queries, k), self._ids)

    def _search_slots(self, queries: SparseBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots [n_queries, k] int64, -1 padded; scores float64, 0 padded), slots indexing `_ids`."""
        self._flush()
        if self.vocab_size is not None and queries.vocab_size != self.vocab_size:
            raise ValueError(f"queries have vocab_size {queries.vocab_size}, the index {self.vocab_size}")
        check_weights(queries, "query")
        dead = np.asarray(self._dead, dtype=np.int64)
        return search_in_chunks(len(queries), len(self._ids), k,
                                lambda start, stop: self._search_chunk(queries, start, stop, k, dead))

    def _search_chunk(self, queries: SparseBatch, start: int, stop: int, k: int,
                      dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Score rows are padded for top_k's groups; the padding scores 0, so it is never a hit.
        width = -(-len(self._ids) // PAD) * PAD
        ptr = queries.indptr[start:stop + 1]
        terms = queries.indices[ptr[0]:ptr[-1]]
        query_weights = queries.values[ptr[0]:ptr[-1]]
        cell_type = np.int32 if (stop - start) * width < 2**31 else np.int64  # halves that pass's memory
        rows = np.repeat(np.arange(stop - start, dtype=cell_type) * cell_type(width), np.diff(ptr))
        positions, lengths = gather_postings(self._term_ptr, terms)
        cells = np.repeat(rows, lengths) + self._slots[positions]
        products = self._weights[positions]
        if not np.all(query_weights == 1):  # binary queries (BM25) need no multiply
            products = products * np.repeat(query_weights.astype(np.float64), lengths)
        scores = np.bincount(cells, products, minlength=(stop - start) * width)
        scores = scores.astype(np.float64, copy=False).reshape(stop - start, width)  # float even if no postings
        if dead.size:
            scores[:, dead] = 0.0
        slots, best = top_k(scores, k)
        if self.impact_scale != 1.0:
            best /= self.impact_scale
        return slots, best

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to folder `path` atomically (temp folder, then rename); returns the path.

        An existing folder is replaced only if it is an index folder (or empty).
        """
        self.compact()
        if self.vocab_size is None:
            raise ValueError("cannot save an empty index that has no vocabulary size yet")
        id_bytes, id_offsets = encode_ids(self._ids)
        arrays = {"term_ptr": self._term_ptr, "slots": self._slots, "weights": self._weights,
                  "id_bytes": id_bytes, "id_offsets": id_offsets}
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                  "documents": len(self._ids), "postings": len(self._slots), "precision": self.precision,
                  "impact_scale": self.impact_scale, "metadata": self.metadata}
        return write_index_folder(path, arrays, header)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None, *, mmap: bool = True,
             verify: bool = True) -> SparseIndex:
        """Open a saved index; arrays are memory-mapped read-only unless `mmap=False`.

        verify: check every file's sha256 against `index.json` (reads each file once).
        Raises `IndexFormatError` naming the file for anything missing, corrupt or of another version.
        """
        path = Path(path)
        manifest = read_manifest(path, FORMAT_NAME, FORMAT_VERSION)
        with malformed_manifest(path):
            index = cls(encoder, precision=manifest["precision"], impact_scale=manifest["impact_scale"],
                        vocab_size=manifest["vocab_size"], metadata=manifest.get("metadata"))
            n_docs, n_postings = manifest["documents"], manifest["postings"]
            layout = {"term_ptr": (index.vocab_size + 1, np.int64), "slots": (n_postings, np.int32),
                      "weights": (n_postings, WEIGHT_DTYPES[index.precision]), "id_bytes": (None, np.uint8),
                      "id_offsets": (n_docs + 1, np.int64)}
        arrays = read_arrays(path, manifest, layout, mmap=mmap, verify=verify)
        index._ids = decode_postings_ids(path, arrays, n_postings)
        index._slot = dict(zip(index._ids, range(n_docs)))
        index._term_ptr, index._slots, index._weights = arrays["term_ptr"], arrays["slots"], arrays["weights"]
        index._flushed = n_docs
        return index


# -- index folders (SparseIndex and SparsEmbedIndex) ----------------------------------------------


def write_index_folder(path: str | Path, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> Path:
    """Write each array as `NAME.npy` and `header` plus every file's size and sha256 as `index.json`.

    Atomic: all is written and fsynced into a temporary sibling folder that is then renamed to `path`,
    so a crash leaves the previous folder, never half an index. An existing `path` is replaced only if
    it is an index folder (or empty), so a wrong path cannot wipe user data.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and ((path / MANIFEST_FILE).is_file() or not any(path.iterdir()))):
        raise FileExistsError(f"{path}: exists and is not an index folder; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        files = {}
        for name, array in arrays.items():
            file = tmp / f"{name}.npy"
            with open(file, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            files[file.name] = {"sha256": _sha256(file), "bytes": file.stat().st_size}
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as handle:
            json.dump({**header, "files": files}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_manifest(path: Path, format_name: str, version: int) -> dict[str, Any]:
    """The `index.json` of folder `path`, refused (`IndexFormatError`) unless of `format_name` and `version`."""
    manifest_file = path / MANIFEST_FILE
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path}: not an index folder (no {MANIFEST_FILE})")
    with malformed_manifest(path):
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if manifest.get("format") != format_name:
        raise IndexFormatError(f"{manifest_file}: not a {format_name} manifest")
    if manifest.get("version") != version:
        raise IndexFormatError(f"{manifest_file}: format version {manifest.get('version')!r}, this "
                               f"spladerunner reads version {version}")
    return manifest


@contextmanager
def malformed_manifest(path: Path) -> Iterator[None]:
    """Turn bad JSON or a missing or mistyped manifest field (KeyError, TypeError) into `IndexFormatError`."""
    try:
        yield
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path / MANIFEST_FILE}: malformed manifest ({exc!r})") from None


def read_arrays(path: Path, manifest: Mapping[str, Any], layout: Mapping[str, tuple[int | None, type]], *,
                mmap: bool, verify: bool) -> dict[str, np.ndarray]:
    """The arrays `layout` names ({name: (length or None for any, dtype)}) from folder `path`.

    Each file must be listed in the manifest with its size (and sha256 if `verify`) and hold a 1-D array
    of that dtype and length; arrays are memory-mapped read-only unless `mmap=False`.
    """
    with malformed_manifest(path):
        return {name: _load_array(path / f"{name}.npy", manifest["files"].get(f"{name}.npy"), length, dtype,
                                  mmap=mmap, verify=verify)
                for name, (length, dtype) in layout.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_array(file: Path, entry: Mapping[str, Any] | None, length: int | None, dtype: type, *, mmap: bool,
                verify: bool) -> np.ndarray:
    if entry is None or not file.is_file():
        raise IndexFormatError(f"{file}: missing")
    if file.stat().st_size != entry["bytes"] or (verify and _sha256(file) != entry["sha256"]):
        raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise IndexFormatError(f"{file}: unreadable ({exc})") from None
    if array.ndim != 1 or array.dtype != dtype or (length is not None and len(array) != length):
        raise IndexFormatError(f"{file}: expected a 1-D {np.dtype(dtype)} array"
                               + (f" of length {length}" if length is not None else ""))
    return array


def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids as two flat arrays for `.npy` files: their UTF-8 bytes concatenated (uint8) and int64 offsets [n + 1]."""
    encoded = [i.encode("utf-8") for i in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def decode_ids(id_bytes: np.ndarray, id_offsets: np.ndarray) -> list[str]:
    """The ids `encode_ids` turned into (id_bytes, id_offsets)."""
    blob, offsets = id_bytes.tobytes(), id_offsets.tolist()
    return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]


def decode_postings_ids(path: Path, arrays: Mapping[str, np.ndarray], n_postings: int) -> list[str]:
    """The document ids of loaded index arrays, after checking the postings and id arrays agree in size."""
    if arrays["term_ptr"][-1] != n_postings or arrays["id_offsets"][-1] != len(arrays["id_bytes"]):
        raise IndexFormatError(f"{path}: array sizes disagree with {MANIFEST_FILE}")
    return decode_ids(arrays["id_bytes"], arrays["id_offsets"])


# -- command line ---------------------------------------------------------------------------------


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the encoder: a SPLADE model, BM25 or inference-free IDF queries."""
    from .loading import DEFAULT_MODEL

    parser.add_argument("--model", default=None, help=f"model folder or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--bm25", action="store_true", help="BM25 over WordPiece tokens instead of a model")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json for --bm25 / --idf-queries")
    parser.add_argument("--idf-queries", default=None, metavar="IDF_JSON",
                        help="encode queries with this IDF table only (inference-free, doc-only models)")
    parser.add_argument("--precision", choices=["fp32", "int8", "fp16"], default=None, help="model precision")
    parser.add_argument("--threads", type=int, default=None)


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `spladerunner index`."""
    parser.add_argument("corpus", help="JSONL corpus, one document per line (BEIR corpus.jsonl works)")
    parser.add_argument("output", help="index folder to write")
    parser.add_argument("--id-field", default="_id", help="id field (default _id)")
    parser.add_argument("--text-field", action="append", default=None,
                        help="text field; repeat to join several (default: title and text)")
    parser.add_argument("--weights", choices=PRECISIONS, default="float32", help="weight storage")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress line on stderr (default: when stderr is a terminal)")
    add_encoder_arguments(parser)


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `spladerunner search`."""
    parser.add_argument("index", help="index folder written by `spladerunner index`")
    parser.add_argument("queries", nargs="*", help="query texts (or use --queries-file)")
    parser.add_argument("--queries-file", default=None, help="JSONL {_id, text} or plain lines")
    parser.add_argument("-k", "--top-k", type=int, default=10)
    parser.add_argument("--format", choices=["trec", "jsonl"], default="trec",
                        help="TREC run lines (qid Q0 doc rank score tag) or JSONL")
    add_encoder_arguments(parser)


def encoders_from_args(args: argparse.Namespace, saved: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """(document encoder, query encoder) for the CLI; `saved` is an index's metadata to fall back on.

    A BM25 document encoder comes back unfitted: the caller fits it on its corpus.
    """
    saved = saved or {}
    if args.bm25 or (args.model is None and saved.get("encoder") == "bm25"):
        tokenizer = args.tokenizer or saved.get("tokenizer")
        if tokenizer is None:
            raise ValueError("--bm25 needs --tokenizer PATH (a tokenizer.json)")
        from .bm25 import BM25Encoder

        documents = BM25Encoder(tokenizer)
    else:
        from .expander import Expander
        from .loading import DEFAULT_MODEL

        documents = Expander(args.model or saved.get("model") or DEFAULT_MODEL,
                             precision=args.precision or saved.get("precision"), threads=args.threads)
    idf = args.idf_queries or saved.get("idf_queries")
    if idf is None:
        return documents, documents
    from .idf_queries import IdfQueryEncoder

    return documents, IdfQueryEncoder(documents.tokenizer, idf)


def encoder_metadata(args: argparse.Namespace, documents: Any) -> dict[str, Any]:
    """What `search` needs to rebuild the query encoder, saved in the index (local paths made absolute)."""
    from .bm25 import BM25Encoder

    if isinstance(documents, BM25Encoder):
        meta: dict[str, Any] = {"encoder": "bm25", "tokenizer": str(Path(args.tokenizer).resolve()),
                                **documents.parameters()}
    else:
        source = documents.source
        meta = {"encoder": "model", "model": str(source.folder.resolve()) if source.is_local else source.name,
                "precision": documents.precision}
    if args.idf_queries:
        meta["idf_queries"] = str(Path(args.idf_queries).resolve())
    return meta


def index_corpus(args: argparse.Namespace, corpus: Sequence[Mapping[str, Any]], *, key: str,
                 on: Sequence[str]) -> tuple[SparseIndex, Any]:
    """Index a corpus with the encoders the CLI arguments choose -> (index, query encoder).

    BM25 is fitted on the corpus and weighs it in the same tokenisation.
    """
    from .bm25 import BM25Encoder

    documents, queries = encoders_from_args(args)
    if isinstance(documents, BM25Encoder):
        ids, texts = document_texts(corpus, key=key, on=on)
        vectors = documents.fit_expand(texts)
    index = SparseIndex(documents, precision=args.weights, metadata=encoder_metadata(args, documents))
    if isinstance(documents, BM25Encoder):
        index.add_vectors(vectors, ids)
    else:
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        index.add(corpus, key=key, on=on, batch_size=args.batch_size, progress=show)
    return index, queries


def run_index(args: argparse.Namespace) -> int:
    """`spladerunner index CORPUS OUTPUT`: encode a JSONL corpus and save the index folder."""
    from .evaluation import read_jsonl

    index, _ = index_corpus(args, list(read_jsonl(args.corpus)), key=args.id_field,
                            on=args.text_field or ["title", "text"])
    index.save(args.output)
    print(f"indexed {len(index)} documents into {args.output}", file=sys.stderr)
    return 0


def read_queries(path: str | Path) -> tuple[list[str], list[str]]:
    """(ids, texts) from JSONL ({"_id" or "id" or "qid", "text"}) or plain lines (ids = 0, 1, ...)."""
    from .cli import detect_format
    from .evaluation import read_jsonl

    if detect_format(str(path)) == "jsonl":
        records = list(read_jsonl(path))
        return ([str(r.get("_id", r.get("id", r.get("qid", n)))) for n, r in enumerate(records)],
                [r["text"] for r in records])
    with open(path, encoding="utf-8") as handle:
        texts = [line.rstrip("\r\n") for line in handle if line.strip()]
    return [str(n) for n in range(len(texts))], texts


def run_search(args: argparse.Namespace) -> int:
    """`spladerunner search INDEX QUERY...`: print the top-k documents per query."""
    if args.queries_file:
        query_ids, texts = read_queries(args.queries_file)
    else:
        query_ids, texts = [str(i) for i in range(len(args.queries))], list(args.queries)
    if not texts:
        raise ValueError("no queries: give query texts or --queries-file")
    index = SparseIndex.load(args.index)
    _, queries = encoders_from_args(args, index.metadata)
    results = index.search(queries.expand_batch(texts, query=True), k=args.top_k)
    for qid, text, position in zip(query_ids, texts, range(len(results))):
        hits = results.hits(position)
        if args.format == "jsonl":
            print(json.dumps({"qid": qid, "text": text, "hits": [{"id": d, "score": s} for d, s in hits]},
                             ensure_ascii=False))
        else:
            for rank, (doc, score) in enumerate(hits, 1):
                print(f"{qid} Q0 {doc} {rank} {score:.6f} spladerunner")
    return 0
