"""Exact SparsEmbed retrieval in numpy: an inverted index whose postings carry term embeddings.

Score(q, d) = sum over the terms q and d share of <e_q,t, e_d,t>. Only documents sharing a term with
the query, the documents of positive sparse dot product, can score, so the postings of the query's
terms are the candidates: each posting holds its document's slot, SPLADE weight and embedding, and
search gathers them (`retrieval._gather`), takes one dot product per posting and sums per document
with `np.bincount`, then selects with `retrieval.top_k`. `candidates=N` first keeps the N documents
of highest sparse dot product per query (SPLADE retrieval over the same postings) and rescores those
only: a two-stage search, approximate when N is below the number of matching documents.

Ties go to the document added first, as in `SparseIndex`. Documents are append-only (no deletion).
`save` writes `.npy` files (embeddings flattened) and `index.json` with sha256 of every file into a
temporary folder renamed into place; `load` memory-maps them and checks the hashes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .retrieval import (
    MANIFEST_FILE,
    MAX_SCORE_CELLS,
    PAD,
    IndexFormatError,
    SearchResults,
    _check_weights,
    _csc,
    _gather,
    _load_array,
    _sha256,
    document_texts,
    top_k,
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
        self._check_new_ids(ids)
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
        self._check_new_ids(ids)
        self._ids.extend(ids)
        self._slot.update(zip(ids, range(len(self._ids) - len(ids), len(self._ids))))
        self._pending.append(vectors)

    def _check_shape(self, vectors: SparsEmbedBatch, what: str) -> None:
        if (vectors.terms.vocab_size, vectors.dim) != (self.vocab_size, self.dim):
            raise ValueError(f"{what} vectors have vocab_size {vectors.terms.vocab_size} and dim {vectors.dim}, "
                             f"the index {self.vocab_size} and {self.dim}")
        _check_weights(vectors.terms, what)
        if not np.all(np.isfinite(vectors.embeddings)):
            raise ValueError(f"{what} embeddings must be finite")

    def _check_new_ids(self, ids: Sequence[str]) -> None:
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids among the documents being added")
        taken = [i for i in ids if i in self._slot]
        if taken:
            raise ValueError(f"{len(taken)} id(s) already indexed, e.g. {taken[0]!r}")

    def _flush(self) -> None:
        """Merge pending documents into the term-grouped postings (a stable sort keeps slots ascending per term)."""
        if not self._pending:
            return
        batch = SparsEmbedBatch.concat(self._pending)
        self._pending = []
        old_terms = np.repeat(np.arange(self.vocab_size, dtype=np.int64), np.diff(self._term_ptr))
        new_slots = np.repeat(np.arange(self._flushed, len(self._ids), dtype=np.int32), batch.terms.nnz)
        terms = np.concatenate([old_terms, batch.terms.indices])
        # `_csc` groups a payload by term: the payload is each posting's position, to carry the other arrays.
        self._term_ptr, self._slots, order = _csc(terms, np.concatenate([self._slots, new_slots]),
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
        n_docs = len(self._ids)
        if n_docs == 0:
            slots, scores = np.full((len(queries), k), -1, dtype=np.int64), np.zeros((len(queries), k))
        else:
            self._check_shape(queries, "query")
            step = max(1, MAX_SCORE_CELLS // (n_docs + PAD))
            parts = [self._search_chunk(queries, start, min(start + step, len(queries)), k, candidates)
                     for start in range(0, len(queries), step)]
            slots = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), dtype=np.int64)
            scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k))
        counts = np.count_nonzero(slots >= 0, axis=1).tolist()
        return SearchResults([[self._ids[s] for s in row[:n]] for row, n in zip(slots.tolist(), counts)],
                             [row[:n] for row, n in zip(scores.astype(np.float32), counts)])

    def _search_chunk(self, queries: SparsEmbedBatch, start: int, stop: int, k: int,
                      candidates: int | None) -> tuple[np.ndarray, np.ndarray]:
        # Score rows are padded for top_k's groups; the padding scores 0, so it is never a hit.
        width = -(-len(self._ids) // PAD) * PAD
        cells_n = (stop - start) * width
        ptr = queries.terms.indptr[start:stop + 1]
        terms = queries.terms.indices[ptr[0]:ptr[-1]]
        positions, lengths = _gather(self._term_ptr, terms)
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
        path = Path(path)
        if path.exists() and not (path.is_dir() and ((path / MANIFEST_FILE).is_file() or not any(path.iterdir()))):
            raise FileExistsError(f"{path}: exists and is not an index folder; not overwriting it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        tmp.mkdir()
        try:
            id_bytes = [i.encode("utf-8") for i in self._ids]
            id_offsets = np.zeros(len(id_bytes) + 1, dtype=np.int64)
            np.cumsum([len(b) for b in id_bytes], out=id_offsets[1:])
            arrays = {"term_ptr": self._term_ptr, "slots": self._slots, "weights": self._weights,
                      "embeddings": self._embeddings.reshape(-1), "id_offsets": id_offsets,
                      "id_bytes": np.frombuffer(b"".join(id_bytes), dtype=np.uint8)}
            files = {}
            for name, array in arrays.items():
                file = tmp / f"{name}.npy"
                with open(file, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                    handle.flush()
                    os.fsync(handle.fileno())
                files[file.name] = {"sha256": _sha256(file), "bytes": file.stat().st_size}
            manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                        "dim": self.dim, "documents": len(self._ids), "postings": len(self._slots),
                        "metadata": self.metadata, "files": files}
            with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=1)
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

    @classmethod
    def load(cls, path: str | Path, encoder: SparsEmbedEncoderLike | None = None, *, mmap: bool = True,
             verify: bool = True) -> SparsEmbedIndex:
        """Open a saved index; arrays are memory-mapped read-only unless `mmap=False`.

        verify: check every file's sha256 against `index.json`. Raises `IndexFormatError` naming the
        file for anything missing, corrupt or of another format or version.
        """
        path = Path(path)
        manifest_file = path / MANIFEST_FILE
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{path}: not an index folder (no {MANIFEST_FILE})")
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT_NAME:
                raise IndexFormatError(f"{manifest_file}: not a {FORMAT_NAME} manifest")
            if manifest.get("version") != FORMAT_VERSION:
                raise IndexFormatError(f"{manifest_file}: format version {manifest.get('version')!r}, this "
                                       f"spladerunner reads version {FORMAT_VERSION}")
            index = cls(encoder, vocab_size=manifest["vocab_size"], dim=manifest["dim"],
                        metadata=manifest.get("metadata"))
            n_docs, n_postings = manifest["documents"], manifest["postings"]
            expected = {"term_ptr": (index.vocab_size + 1, np.int64), "slots": (n_postings, np.int32),
                        "weights": (n_postings, np.float32), "embeddings": (n_postings * index.dim, np.float32),
                        "id_offsets": (n_docs + 1, np.int64), "id_bytes": (None, np.uint8)}
            arrays = {name: _load_array(path / f"{name}.npy", manifest["files"].get(f"{name}.npy"), length, dtype,
                                        mmap=mmap, verify=verify)
                      for name, (length, dtype) in expected.items()}
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{manifest_file}: malformed manifest ({exc!r})") from None
        if arrays["term_ptr"][-1] != n_postings or arrays["id_offsets"][-1] != len(arrays["id_bytes"]):
            raise IndexFormatError(f"{path}: array sizes disagree with {MANIFEST_FILE}")
        blob, offsets = arrays["id_bytes"].tobytes(), arrays["id_offsets"].tolist()
        index._ids = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        index._slot = dict(zip(index._ids, range(n_docs)))
        index._term_ptr, index._slots, index._weights = arrays["term_ptr"], arrays["slots"], arrays["weights"]
        index._embeddings = arrays["embeddings"].reshape(n_postings, index.dim)
        index._flushed = n_docs
        return index
