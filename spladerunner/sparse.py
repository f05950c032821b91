"""Sparse bag-of-words vectors: one (`SparseVector`) and many in CSR layout (`SparseBatch`).

Ids are int32 vocabulary entries sorted ascending, weights float32 and strictly positive. The batch
form holds `indptr`, `indices`, `values` exactly as scipy's `csr_matrix` wants them, so a retriever
or scipy takes them without copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .arguments import check_count
from .errors import InputError, InputTypeError


@dataclass(frozen=True)
class SparseVector:
    """One text's expansion: `ids` (int32, ascending) and their `weights` (float32, > 0)."""

    ids: np.ndarray
    weights: np.ndarray
    vocab: Sequence[str] | None = field(default=None, repr=False)
    truncated: bool = False
    windows: int = 1  # how many token windows of the text were expanded (max-aggregated) into this vector

    def __len__(self) -> int:
        return len(self.ids)

    def decode(self, top_k: int | None = None) -> list[tuple[str, float]]:
        """(token, weight) pairs, heaviest first (ties by id), at most `top_k` (needs the tokenizer vocabulary)."""
        if self.vocab is None:
            raise InputError("this vector has no vocabulary attached; use to_id_dict()")
        return [(self.vocab[i], w) for i, w in self._heaviest(top_k)]

    def to_dict(self) -> dict[str, float]:
        """Token string -> weight, heaviest first (`decode` as a dict)."""
        return dict(self.decode())

    def to_id_dict(self) -> dict[int, float]:
        """Token id -> weight, heaviest first."""
        return dict(self._heaviest(None))

    def _heaviest(self, top_k: int | None) -> list[tuple[int, float]]:
        if top_k is not None:
            check_count("top_k", top_k)
        order = np.argsort(-self.weights, kind="stable")[:top_k]
        return list(zip(self.ids[order].tolist(), self.weights[order].tolist()))

    def dot(self, other: SparseVector) -> float:
        """SPLADE score: the dot product over shared ids."""
        shared, mine, theirs = np.intersect1d(self.ids, other.ids, assume_unique=True, return_indices=True)
        return float(np.dot(self.weights[mine].astype(np.float64), other.weights[theirs]))


@dataclass(frozen=True)
class SparseBatch:
    """Many vectors in CSR layout: row i is `indices[indptr[i]:indptr[i+1]]` with `values` alike."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int
    vocab: Sequence[str] | None = field(default=None, repr=False)
    truncated: np.ndarray | None = None
    windows: np.ndarray | None = None  # per row: token windows max-aggregated into it (1 unless windowed)

    def __post_init__(self) -> None:
        if self.truncated is None:
            object.__setattr__(self, "truncated", np.zeros(len(self), dtype=bool))
        if self.windows is None:
            object.__setattr__(self, "windows", np.ones(len(self), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, row: int) -> SparseVector:
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} out of range for a batch of {len(self)}")
        row %= len(self)
        start, stop = self.indptr[row], self.indptr[row + 1]
        return SparseVector(self.indices[start:stop], self.values[start:stop], self.vocab, bool(self.truncated[row]),
                            int(self.windows[row]))

    def __iter__(self) -> Iterator[SparseVector]:
        return (self[i] for i in range(len(self)))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.vocab_size)

    @property
    def nnz(self) -> np.ndarray:
        """Active terms per row."""
        return np.diff(self.indptr)

    def to_list(self) -> list[SparseVector]:
        return list(self)

    def decode(self, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Per row, (token, weight) pairs heaviest first, at most `top_k` (`SparseVector.decode`)."""
        return [vector.decode(top_k) for vector in self]

    def dot(self, other: SparseBatch, *, max_bytes: int = 1 << 27) -> np.ndarray:
        """Scores of every row against every row of `other`: float64 [len(self), len(other)], each entry
        exactly `self[i].dot(other[j])` (float64 sums). numpy only; `other`'s rows are gathered against
        blocks of this batch's rows made dense, blocks sized to keep the work arrays near `max_bytes`."""
        if not isinstance(other, SparseBatch):
            raise InputTypeError(f"other must be a SparseBatch, got {type(other).__name__}")
        if other.vocab_size != self.vocab_size:
            raise InputError(f"vocabularies differ: {self.vocab_size} and {other.vocab_size} tokens")
        scores = np.zeros((len(self), len(other)), dtype=np.float64)
        filled = np.flatnonzero(other.nnz)  # rows of `other` with terms; empty ones score 0
        if not len(self) or not len(filled):
            return scores
        starts = other.indptr[filled]
        per_row = max(self.vocab_size, int(other.indptr[-1])) * 8 * 2
        block = max(1, min(len(self), max_bytes // per_row))
        for first in range(0, len(self), block):
            part = self.take(np.arange(first, min(first + block, len(self))))
            dense = np.zeros((len(part), self.vocab_size), dtype=np.float64)
            dense[np.repeat(np.arange(len(part)), part.nnz), part.indices] = part.values
            products = dense[:, other.indices] * other.values
            scores[first:first + len(part), filled] = np.add.reduceat(products, starts, axis=1)
        return scores

    def max_by_group(self, groups: np.ndarray, n_groups: int) -> SparseBatch:
        """Row g of the result is the element-wise max of the rows i with `groups[i] == g` (an id kept
        by any of them keeps its largest weight): the aggregation of a document's token windows."""
        keys = np.repeat(np.asarray(groups, dtype=np.int64), self.nnz) * self.vocab_size + self.indices
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        values = np.maximum.reduceat(self.values[order], first) if len(keys) else self.values[:0]
        unique = keys[first]
        indptr = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(np.bincount(unique // self.vocab_size, minlength=n_groups), out=indptr[1:])
        return SparseBatch(indptr, (unique % self.vocab_size).astype(np.int32), values.astype(np.float32, copy=False),
                           self.vocab_size, self.vocab)

    def heaviest(self, top_k: int) -> SparseBatch:
        """At most the `top_k` heaviest terms of each row (ties: the lower id), ids still ascending."""
        rows = np.repeat(np.arange(len(self)), self.nnz)
        order = np.lexsort((self.indices, -self.values, rows))  # by row, then heaviest, then lowest id
        rank = np.arange(len(order)) - np.repeat(self.indptr[:-1], self.nnz)
        keep = np.sort(order[rank < top_k])  # rows and ids ascending again
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.minimum(self.nnz, top_k), out=indptr[1:])
        return SparseBatch(indptr, self.indices[keep], self.values[keep], self.vocab_size, self.vocab, self.truncated,
                           self.windows)

    def to_scipy(self):
        """A `scipy.sparse.csr_matrix` sharing this batch's arrays (scipy is an optional dependency)."""
        try:
            from scipy.sparse import csr_matrix
        except ImportError as exc:
            raise ImportError("to_scipy() needs scipy: pip install scipy") from exc
        return csr_matrix((self.values, self.indices, self.indptr), shape=self.shape, copy=False)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), self.nnz)
        dense[rows, self.indices] = self.values
        return dense

    def take(self, rows: np.ndarray) -> SparseBatch:
        """The rows in the given order (used to restore input order after length-sorted batching)."""
        rows = np.asarray(rows, dtype=np.int64)
        gather, lengths = gather_ranges(self.indptr, rows)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return SparseBatch(indptr, self.indices[gather], self.values[gather], self.vocab_size, self.vocab,
                           self.truncated[rows], self.windows[rows])

    @classmethod
    def concat(cls, batches: Sequence[SparseBatch]) -> SparseBatch:
        if not batches:
            raise InputError("concat needs at least one batch")
        offsets = np.cumsum([0] + [b.indptr[-1] for b in batches[:-1]])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + off for b, off in zip(batches, offsets)]).astype(np.int64)
        return cls(indptr,
                   np.concatenate([b.indices for b in batches]).astype(np.int32, copy=False),
                   np.concatenate([b.values for b in batches]).astype(np.float32, copy=False),
                   batches[0].vocab_size, batches[0].vocab,
                   np.concatenate([b.truncated for b in batches]), np.concatenate([b.windows for b in batches]))

    @classmethod
    def from_vectors(cls, vectors: Sequence[SparseVector], vocab_size: int) -> SparseBatch:
        """Stack vectors the caller brings (ids need not be sorted; duplicates are rejected)."""
        ids = [np.asarray(v.ids, dtype=np.int64) for v in vectors]
        weights = [np.asarray(v.weights, dtype=np.float32) for v in vectors]
        for i, (row_ids, row_weights) in enumerate(zip(ids, weights)):
            if row_ids.shape != row_weights.shape or row_ids.ndim != 1:
                raise InputError(f"vector {i}: ids and weights must be 1-D arrays of equal length")
            if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= vocab_size):
                raise InputError(f"vector {i}: ids must lie in [0, {vocab_size})")
            if len(np.unique(row_ids)) != len(row_ids):
                raise InputError(f"vector {i}: duplicate ids")
        order = [np.argsort(r, kind="stable") for r in ids]
        indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in ids], out=indptr[1:])
        empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0, np.float32)
        indices = np.concatenate([r[o] for r, o in zip(ids, order)] or [empty_i]).astype(np.int32)
        values = np.concatenate([w[o] for w, o in zip(weights, order)] or [empty_f]).astype(np.float32)
        vocab = next((v.vocab for v in vectors if v.vocab is not None), None)
        truncated = np.array([v.truncated for v in vectors], dtype=bool)
        windows = np.array([v.windows for v in vectors], dtype=np.int64)
        return cls(indptr, indices, values, vocab_size, vocab, truncated, windows)


def gather_ranges(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the entries of `rows` in a CSR-style pointer array (concatenated in `rows` order), and
    each row's length: the row gather of `SparseBatch.take` and of an inverted index's postings."""
    starts = ptr[rows]
    lengths = ptr[rows + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - offsets, lengths), lengths


def sparsify(weights: np.ndarray, *, threshold: float = 0.0, top_k: int | None = None,
             drop_ids: np.ndarray | None = None, vocab: Sequence[str] | None = None,
             truncated: np.ndarray | None = None) -> SparseBatch:
    """Dense pooled weights [batch, vocab] -> CSR, keeping weights > threshold, at most top_k per row.

    `weights` is modified in place (dropped ids are zeroed): it is the session's output buffer.
    """
    batch, vocab_size = weights.shape
    if drop_ids is not None and len(drop_ids):
        weights[:, drop_ids] = 0.0
    if top_k is not None and top_k < vocab_size:
        candidates = np.argpartition(weights, vocab_size - top_k, axis=1)[:, vocab_size - top_k:]
        return sparsify_candidates(candidates, np.take_along_axis(weights, candidates, axis=1),
                                   vocab_size=vocab_size, threshold=threshold, vocab=vocab, truncated=truncated)
    keep = weights > threshold
    indptr = np.zeros(batch + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(keep, axis=1), out=indptr[1:])
    rows, cols = np.nonzero(keep)
    return SparseBatch(indptr, cols.astype(np.int32), weights[rows, cols].astype(np.float32, copy=False),
                       vocab_size, vocab, truncated)


def sparsify_candidates(ids: np.ndarray, weights: np.ndarray, *, vocab_size: int, threshold: float = 0.0,
                        top_k: int | None = None, drop_ids: np.ndarray | None = None,
                        vocab: Sequence[str] | None = None, truncated: np.ndarray | None = None) -> SparseBatch:
    """Per-row candidates [batch, K] (ids and weights, e.g. from an in-graph top-k) -> CSR."""
    ids = ids.astype(np.int64, copy=False)
    keep = weights > threshold
    if drop_ids is not None and len(drop_ids):
        keep &= ~np.isin(ids, drop_ids)
    if top_k is not None and top_k < ids.shape[1]:
        # Rank the kept candidates by weight and keep the first top_k of each row.
        ranked = np.argsort(np.where(keep, -weights, np.inf), axis=1, kind="stable")
        rank = np.empty_like(ranked)
        np.put_along_axis(rank, ranked, np.arange(ids.shape[1])[None, :].repeat(len(ids), 0), axis=1)
        keep &= rank < top_k
    # Sort each row by id with dropped candidates pushed past the end, then compress.
    order = np.argsort(np.where(keep, ids, vocab_size), axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    weights = np.take_along_axis(weights, order, axis=1)
    keep = np.take_along_axis(keep, order, axis=1)
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(keep, axis=1), out=indptr[1:])
    return SparseBatch(indptr, ids[keep].astype(np.int32), weights[keep].astype(np.float32, copy=False),
                       vocab_size, vocab, truncated)
