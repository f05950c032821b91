"""Exact SparsEmbed retrieval in numpy: an inverted index whose postings carry term embeddings.

Score(q, d) = sum over the terms q and d share of <e_q,t, e_d,t>. Only documents sharing a term with
the query, the documents of positive sparse dot product, can score, so the postings of the query's
terms are the candidates: each posting holds its document's slot, SPLADE weight and embedding, and
search gathers them (`retrieval.gather_postings`), takes one dot product per posting and sums per
document with `np.bincount`, then selects with `retrieval.top_k`. `candidates=N` first keeps the N
documents of highest sparse dot product per query (SPLADE retrieval over the same postings) and
rescores those only: a two-stage search, approximate when N is below the number of matching documents.

Ties go to the document added first, as in `SparseIndex`. Documents are append-only (no deletion).
`save` writes `.npy` files (embeddings flattened) and `index.json` with sha256 of every file into a
temporary folder renamed into place; `load` memory-maps them and checks the hashes. Both use the
index-folder functions that `retrieval` shares with `SparseIndex` (`write_index_folder`, `read_arrays`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .retrieval import (
    PAD,
    SearchResults,
    check_new_ids,
    check_weights,
    decode_postings_ids,
    document_texts,
    encode_ids,
    gather_postings,
    group_by_term,
    malformed_manifest,
    read_arrays,
    read_manifest,
    search_in_chunks,
    top_k,
    write_index_folder,
)
from .sparsembed import SparsEmbedBatch

FORMAT_NAME = "spladerunner-sparsembed-index"
FORMAT_VERSION = 1
BLOCK = 1 << 16  # postings per block of embedding dot products (bounds the gathered [block, dim] arrays)


class SparsEmbedEncoderLike(Protocol):
    """Anything that encodes texts into a `SparsEmbedBatch` (`SparsEmbedEncoder`)."""

    def encode_batch(self, texts: Sequence[str], *, query: bool = False) -> SparsEmbedBatch: ...


class SparsEmbedIndex:
    """Inverted index over SparsEmbed document vectors with exact batched search.

    encoder: encodes texts for `add` and `search` (optional when you bring `SparsEmbedBatch`es).
    metadata: free-form JSON-able dict saved with the index.
    """

    def __init__(self, encoder: SparsEmbedEncoderLike | None = None, *, vocab_size: int | None = None,
                 dim: int | None = None, metadata: dict[str, Any] | None = None):
        self.encoder = encoder
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.vocab_size: int | None = None
        self.dim: int | None = None
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._pending: list[SparsEmbedBatch] = []
        self._flushed = 0
        if vocab_size is not None and dim is not None:
            self._init_postings(vocab_size, dim)

    def _init_postings(self, vocab_size: int, dim: int) -> None:
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self._term_ptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
        self._slots = np.zeros(0, dtype=np.int32)
        self._weights = np.zeros(0, dtype=np.float32)
        self._embeddings = np.zeros((0, self.dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    def __repr__(self) -> str:
        return f"SparsEmbedIndex({len(self)} documents, vocab_size={self.vocab_size}, dim={self.dim})"

    @property
    def ids(self) -> list[str]:
        """Document ids in the order they were added (the tie order)."""
        return list(self._ids)

    def add(self, documents: Sequence[str | Mapping[str, Any]], *, key: str = "id",
            on: Sequence[str] = ("title", "text"), batch_size: int = 256) -> None:
        """Encode and add documents: plain texts (ids are running numbers) or dicts (see `document_texts`)."""
        if self.encoder is None:
            raise ValueError("this index has no encoder; pass one to SparsEmbedIndex(...) or use add_vectors()")
        ids, texts = document_texts(documents, key=key, on=on, first_id=len(self._ids))
        check_new_ids(ids, self._slot)
        for start in range(0, len(texts), batch_size):
            self.add_vectors(self.encoder.encode_batch(texts[start:start + batch_size], query=False),
                             ids[start:start + batch_size])

    def add_vectors(self, vectors: SparsEmbedBatch, ids: Sequence[str] | None = None) -> None:
        """Add encoded documents; `ids` default to running numbers."""
        ids = [str(i) for i in ids] if ids is not None else [str(len(self._ids) + i) for i in range(len(vectors))]
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if self.vocab_size is None:
            self._init_postings(vectors.terms.vocab_size, vectors.dim)
        self._check_shape(vectors, "document")
        check_new_ids(ids, self._slot)
        self._ids.extend(ids)
        self._slot.update(zip(ids, range(len(self._ids) - len(ids), len(self._ids))))
        self._pending.append(vectors)

    def _check_shape(self, vectors: SparsEmbedBatch, what: str) -> None:
        if (vectors.terms.vocab_size, vectors.dim) != (self.vocab_size, self.dim):
            raise ValueError(f"{what} vectors have vocab_size {vectors.terms.vocab_size} and dim {vectors.dim}, "
                             f"the index {self.vocab_size} and {self.dim}")
        check_weights(vectors.terms, what)
        if not np.all(np.isfinite(vectors.embeddings)):
            raise ValueError(f"{what} embeddings must be finite")

    def _flush(self) -> None:
        """Merge pending documents into the term-grouped postings (a stable sort keeps slots ascending per term)."""
        if not self._pending:
            return
        batch = SparsEmbedBatch.concat(self._pending)
        self._pending = []
        old_terms = np.repeat(np.arange(self.vocab_size, dtype=np.int64), np.diff(self._term_ptr))
        new_slots = np.repeat(np.arange(self._flushed, len(self._ids), dtype=np.int32), batch.terms.nnz)
        terms = np.concatenate([old_terms, batch.terms.indices])
        # `group_by_term` groups a payload by term: here each posting's position, to carry the other arrays.
        self._term_ptr, self._slots, order = group_by_term(terms, np.concatenate([self._slots, new_slots]),
                                                           np.arange(len(terms)), self.vocab_size)
        self._weights = np.concatenate([self._weights, batch.terms.values])[order]
        self._embeddings = np.concatenate([self._embeddings, batch.embeddings.astype(np.float32)])[order]
        self._flushed = len(self._ids)

    def search(self, queries: str | Sequence[str] | SparsEmbedBatch, k: int = 10, *,
               candidates: int | None = None) -> SearchResults:
        """Top-k documents per query by SparsEmbed score; texts are encoded with the index's encoder.

        candidates: rescore only this many documents per query, those of highest sparse dot product
        (default: every document sharing a term, which is exact).
        """
        if k < 1 or (candidates is not None and candidates < k):
            raise ValueError(f"k must be >= 1 and candidates >= k, got k={k}, candidates={candidates}")
        if not isinstance(queries, SparsEmbedBatch):
            if self.encoder is None:
                raise ValueError("this index has no encoder to encode query texts; pass a SparsEmbedBatch")
            queries = self.encoder.encode_batch([queries] if isinstance(queries, str) else list(queries), query=True)
        self._flush()
        if self._ids:
            self._check_shape(queries, "query")
        slots, scores = search_in_chunks(len(queries), len(self._ids), k,
                                         lambda start, stop: self._search_chunk(queries, start, stop, k, candidates))
        return SearchResults.from_slots(slots, scores, self._ids)

    def _search_chunk(self, queries: SparsEmbedBatch, start: int, stop: int, k: int,
                      candidates: int | None) -> tuple[np.ndarray, np.ndarray]:
        # Score rows are padded for top_k's groups; the padding scores 0, so it is never a hit.
        width = -(-len(self._ids) // PAD) * PAD
        cells_n = (stop - start) * width
        ptr = queries.terms.indptr[start:stop + 1]
        terms = queries.terms.indices[ptr[0]:ptr[-1]]
        positions, lengths = gather_postings(self._term_ptr, terms)
        cells = np.repeat(np.repeat(np.arange(stop - start, dtype=np.int64) * width, np.diff(ptr)), lengths)
        cells += self._slots[positions]
        owner = np.repeat(np.arange(ptr[0], ptr[-1], dtype=np.int64), lengths)  # each posting's query term
        if candidates is not None:
            sparse = np.bincount(cells, self._weights[positions] * queries.terms.values[owner].astype(np.float64),
                                 minlength=cells_n)
            best, _ = top_k(sparse.reshape(stop - start, width), candidates)
            rows, ranks = np.nonzero(best >= 0)
            allowed = np.zeros(cells_n, dtype=bool)
            allowed[rows * width + best[rows, ranks]] = True
            keep = allowed[cells]
            positions, cells, owner = positions[keep], cells[keep], owner[keep]
        products = np.empty(len(positions))
        for at in range(0, len(positions), BLOCK):
            block = slice(at, at + BLOCK)
            products[block] = np.einsum("ij,ij->i", self._embeddings[positions[block]].astype(np.float64),
                                        queries.embeddings[owner[block]])
        scores = np.bincount(cells, products, minlength=cells_n).astype(np.float64, copy=False)
        return top_k(scores.reshape(stop - start, width), k)

    def save(self, path: str | Path) -> Path:
        """Write the index to folder `path` atomically (temp folder, then rename); returns the path.

        An existing folder is replaced only if it is an index folder (or empty).
        """
        self._flush()
        if self.vocab_size is None:
            raise ValueError("cannot save an empty index that has no vocabulary size yet")
        id_bytes, id_offsets = encode_ids(self._ids)
        arrays = {"term_ptr": self._term_ptr, "slots": self._slots, "weights": self._weights,
                  "embeddings": self._embeddings.reshape(-1), "id_offsets": id_offsets, "id_bytes": id_bytes}
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                  "dim": self.dim, "documents": len(self._ids), "postings": len(self._slots),
                  "metadata": self.metadata}
        return write_index_folder(path, arrays, header)

    @classmethod
    def load(cls, path: str | Path, encoder: SparsEmbedEncoderLike | None = None, *, mmap: bool = True,
             verify: bool = True) -> SparsEmbedIndex:
        """Open a saved index; arrays are memory-mapped read-only unless `mmap=False`.

        verify: check every file's sha256 against `index.json`. Raises `IndexFormatError` naming the
        file for anything missing, corrupt or of another format or version.
        """
        path = Path(path)
        manifest = read_manifest(path, FORMAT_NAME, FORMAT_VERSION)
        with malformed_manifest(path):
            index = cls(encoder, vocab_size=manifest["vocab_size"], dim=manifest["dim"],
                        metadata=manifest.get("metadata"))
            n_docs, n_postings = manifest["documents"], manifest["postings"]
            layout = {"term_ptr": (index.vocab_size + 1, np.int64), "slots": (n_postings, np.int32),
                      "weights": (n_postings, np.float32), "embeddings": (n_postings * index.dim, np.float32),
                      "id_offsets": (n_docs + 1, np.int64), "id_bytes": (None, np.uint8)}
        arrays = read_arrays(path, manifest, layout, mmap=mmap, verify=verify)
        index._ids = decode_postings_ids(path, arrays, n_postings)
        index._slot = dict(zip(index._ids, range(n_docs)))
        index._term_ptr, index._slots, index._weights = arrays["term_ptr"], arrays["slots"], arrays["weights"]
        index._embeddings = arrays["embeddings"].reshape(n_postings, index.dim)
        index._flushed = n_docs
        return index
