"""Exact SparsEmbed retrieval in numpy: an inverted index whose postings carry term embeddings.

Score(q, d) = sum over the terms q and d share of <e_q,t, e_d,t>. Only documents sharing a term with
the query, the documents of positive sparse dot product, can score, so the postings of the query's
terms are the candidates: each posting holds its document's slot, SPLADE weight and embedding, and
search gathers them, takes one dot product per posting and sums per document with `np.bincount`,
then selects with `scoring.top_k`. `candidates=N` first keeps the N documents of highest sparse dot
product per query (SPLADE retrieval over the same postings) and rescores those only: a two-stage
search, approximate when N is below the number of matching documents.

Ids, adding, deleting, replacing, thread safety and the crash-safe folder format are those of
`SparseIndex` (`postings.PostingsIndex`); ties go to the document added first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .arguments import check_count
from .documents import check_vectors
from .errors import IndexFormatError, InputError, InputTypeError
from .index_folder import count_field
from .postings import Postings, PostingsIndex
from .results import SearchResults
from .sparsembed import SparsEmbedBatch

BLOCK = 1 << 16  # postings per block of embedding dot products (bounds the gathered [block, dim] arrays)


class SparsEmbedEncoderLike(Protocol):
    """Anything that encodes texts into a `SparsEmbedBatch` (`SparsEmbedEncoder`)."""

    def encode_batch(self, texts: Sequence[str], *, query: bool = False) -> SparsEmbedBatch: ...


class SparsEmbedIndex(PostingsIndex):
    """Inverted index over SparsEmbed document vectors with exact batched search.

    encoder: encodes texts for `add` and `search` (optional when you bring `SparsEmbedBatch`es).
    metadata: free-form JSON-able dict saved with the index.
    Safe to share across threads: searches run in parallel, adds and deletes are atomic.
    """

    FORMAT_NAME = "spladerunner-sparsembed-index"
    COLUMNS = ("weights", "embeddings")

    def __init__(self, encoder: SparsEmbedEncoderLike | None = None, *, vocab_size: int | None = None,
                 dim: int | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(encoder, metadata=metadata)
        self.dim: int | None = None
        if vocab_size is not None and dim is not None:
            self.dim = int(dim)
            self._init_postings(vocab_size)

    def __repr__(self) -> str:
        return f"SparsEmbedIndex({len(self)} documents, vocab_size={self.vocab_size}, dim={self.dim})"

    def _encode(self, texts: list[str], *, query: bool) -> SparsEmbedBatch:
        return self.encoder.encode_batch(texts, query=query)

    def add_vectors(self, vectors: SparsEmbedBatch, ids: Sequence[str] | None = None, *,
                    replace: bool = False) -> None:
        """Add encoded documents; `ids` default to running numbers."""
        with self._lock:
            self._check(vectors, "document")
            ids = self._register(ids, len(vectors), replace)
            if self.vocab_size is None:
                self.dim = vectors.dim
                self._init_postings(vectors.terms.vocab_size)
            self._append(ids, vectors, replace)

    def _check(self, vectors: SparsEmbedBatch, what: str) -> None:
        if not isinstance(vectors, SparsEmbedBatch):
            raise InputTypeError(f"{what} vectors must be a SparsEmbedBatch, got {type(vectors).__name__}")
        check_vectors(vectors.terms, what, self.vocab_size)
        if self.dim is not None and vectors.dim != self.dim:
            raise InputError(f"{what} vectors have embedding dim {vectors.dim}, the index {self.dim}")
        if vectors.embeddings.shape != (int(vectors.terms.indptr[-1]), vectors.dim):
            raise InputError(f"{what} vectors: one embedding per term expected, got {vectors.embeddings.shape}")
        if not np.all(np.isfinite(vectors.embeddings)):
            raise InputError(f"{what} embeddings must be finite")

    def _empty_columns(self) -> dict[str, np.ndarray]:
        return {"weights": np.zeros(0, dtype=np.float32), "embeddings": np.zeros((0, self.dim), dtype=np.float32)}

    def _new_postings(self, batch: SparsEmbedBatch) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        return batch.terms.indices, batch.terms.nnz, {
            "weights": batch.terms.values.astype(np.float32, copy=False),
            "embeddings": batch.embeddings.astype(np.float32, copy=False)}

    def search(self, queries: str | Sequence[str] | SparsEmbedBatch, k: int = 10, *,
               candidates: int | None = None) -> SearchResults:
        """Top-k documents per query by SparsEmbed score; texts are encoded with the index's encoder.

        candidates: rescore only this many documents per query, those of highest sparse dot product
        (default: every document sharing a term, which is exact).
        """
        k = check_count("k", k)
        if candidates is not None and check_count("candidates", candidates) < k:
            raise InputError(f"candidates must be >= k, got k={k}, candidates={candidates}")
        if not isinstance(queries, SparsEmbedBatch):
            queries = self._encode_queries(queries)
        self._check(queries, "query")
        return self._search_postings(len(queries), k, lambda postings, start, stop, k: self._score(
            postings, queries, start, stop, k, candidates))

    def _score(self, postings: Postings, queries: SparsEmbedBatch, start: int, stop: int, k: int,
               candidates: int | None) -> tuple[np.ndarray, np.ndarray]:
        width = postings.width
        cells_n = (stop - start) * width
        ptr = queries.terms.indptr[start:stop + 1]
        terms = queries.terms.indices[ptr[0]:ptr[-1]]
        positions, slots, lengths = postings.gather(terms)
        cells = np.repeat(np.repeat(np.arange(stop - start, dtype=np.int64) * width, np.diff(ptr)), lengths)
        cells += slots
        owner = np.repeat(np.arange(ptr[0], ptr[-1], dtype=np.int64), lengths)  # each posting's query term
        if candidates is not None:
            products = postings.columns["weights"][positions] * queries.terms.values[owner].astype(np.float64)
            best, _ = postings.rank(np.bincount(cells, products, minlength=cells_n), stop - start,
                                    min(candidates, postings.n_slots))
            rows, ranks = np.nonzero(best >= 0)
            allowed = np.zeros(cells_n, dtype=bool)
            allowed[rows * width + best[rows, ranks]] = True
            keep = allowed[cells]
            positions, cells, owner = positions[keep], cells[keep], owner[keep]
        embeddings = postings.columns["embeddings"]
        products = np.empty(len(positions))
        for at in range(0, len(positions), BLOCK):
            block = slice(at, at + BLOCK)
            products[block] = np.einsum("ij,ij->i", embeddings[positions[block]].astype(np.float64),
                                        queries.embeddings[owner[block]])
        return postings.rank(np.bincount(cells, products, minlength=cells_n), stop - start, k)

    def _header(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @classmethod
    def _from_manifest(cls, manifest: Mapping[str, Any], path: Path, encoder: Any) -> SparsEmbedIndex:
        metadata = manifest.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise IndexFormatError(f"{path}: metadata must be an object")
        index = cls(encoder, metadata=metadata)
        index.dim = count_field(manifest, "dim", path, minimum=1)
        return index

    def _column_layout(self, n_postings: int) -> dict[str, tuple[int, type]]:
        return {"weights": (n_postings, np.float32), "embeddings": (n_postings * self.dim, np.float32)}
