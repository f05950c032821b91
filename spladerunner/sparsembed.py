"""SparsEmbed on onnxruntime: texts -> top-k sparse terms, each with its contextual embedding.

A SparsEmbed folder (manifest kind "sparsembed") holds graphs that output `top_ids`, `top_weights`
and `top_embeddings` [batch, k, dim]; `extra` gives k per mode, the embedding dim, the softmax axis
the graph was built with, and the text prefix and appended [MASK] count per mode, which are applied
here, on the tokenisation side. A text's score against another is the sum, over the terms both keep,
of the dot products of their embeddings (`SparsEmbedVector.score`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ManifestError
from .expander import Expander
from .manifest import MODES, TOPK_EMBEDDINGS_OUTPUT, TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT, Manifest, Mode
from .sparse import SparseBatch, SparseVector, gather_ranges, sparsify_candidates
from .tokenization import Encoded, encode

SOFTMAX_AXES = ("positions", "terms")
MASK_TOKEN = "[MASK]"
MAX_EMBEDDING_DIM = 1 << 16


@dataclass(frozen=True)
class SparsEmbedSettings:
    """The manifest's SparsEmbed fields (`extra`), checked."""

    k: dict[str, int]
    embedding_dim: int
    softmax_axis: str
    prefix: dict[str, str]
    mask_tokens: dict[str, int]

    @classmethod
    def from_manifest(cls, manifest: Manifest, name: str) -> SparsEmbedSettings:
        extra: dict[str, Any] = manifest.extra

        def per_mode(field: str, kind: type, default: Any = None) -> dict:
            value = extra.get(field, {mode: default for mode in MODES} if default is not None else None)
            if not isinstance(value, dict) or not all(
                    isinstance(value.get(m), kind) and not isinstance(value.get(m), bool) for m in MODES):
                raise ManifestError(f"{name}: extra.{field} must map query and document to {kind.__name__}")
            return {m: value[m] for m in MODES}

        settings = cls(k=per_mode("k", int), embedding_dim=extra.get("embedding_dim"),
                       softmax_axis=extra.get("softmax_axis", "positions"), prefix=per_mode("prefix", str, ""),
                       mask_tokens=per_mode("mask_tokens", int, 0))
        dim = settings.embedding_dim
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBEDDING_DIM:
            raise ManifestError(f"{name}: extra.embedding_dim must be an integer in [1, {MAX_EMBEDDING_DIM}]")
        if settings.softmax_axis not in SOFTMAX_AXES:
            raise ManifestError(f"{name}: extra.softmax_axis {settings.softmax_axis!r} is not one of {SOFTMAX_AXES}")
        for mode in MODES:
            k, masks = settings.k[mode], settings.mask_tokens[mode]
            if not 1 <= k <= manifest.vocab_size or not 0 <= masks <= manifest.max_length[mode] - 2:
                raise ManifestError(f"{name}: extra.k.{mode} must be >= 1 and extra.mask_tokens.{mode} leave "
                                    f"room for 2 special tokens within max_length.{mode}")
        return settings


@dataclass(frozen=True)
class SparsEmbedVector:
    """One text: its terms (`SparseVector`, ids ascending) and their embeddings [len, dim], row-aligned."""

    terms: SparseVector
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.terms)

    def score(self, other: SparsEmbedVector) -> float:
        """SparsEmbed score: the sum over shared terms of the dot products of their embeddings."""
        _, mine, theirs = np.intersect1d(self.terms.ids, other.terms.ids, assume_unique=True, return_indices=True)
        return float(np.einsum("ij,ij->", self.embeddings[mine].astype(np.float64), other.embeddings[theirs]))


@dataclass(frozen=True)
class SparsEmbedBatch:
    """Many texts: CSR `terms` and `embeddings` [terms.indices.size, dim], row j belonging to `terms.indices[j]`."""

    terms: SparseBatch
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.terms.indices):
            raise InputError(f"embeddings {self.embeddings.shape} do not align with {len(self.terms.indices)} terms")

    def __len__(self) -> int:
        return len(self.terms)

    def __getitem__(self, row: int) -> SparsEmbedVector:
        terms = self.terms[row]
        start = self.terms.indptr[row % len(self)]
        return SparsEmbedVector(terms, self.embeddings[start:start + len(terms)])

    def __iter__(self) -> Iterator[SparsEmbedVector]:
        return (self[i] for i in range(len(self)))

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def take(self, rows: np.ndarray) -> SparsEmbedBatch:
        """The rows in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        positions, _ = gather_ranges(self.terms.indptr, rows)
        return SparsEmbedBatch(self.terms.take(rows), self.embeddings[positions])

    @classmethod
    def concat(cls, batches: Sequence[SparsEmbedBatch]) -> SparsEmbedBatch:
        return cls(SparseBatch.concat([b.terms for b in batches]), np.concatenate([b.embeddings for b in batches]))

    @classmethod
    def empty(cls, vocab_size: int, dim: int, vocab: Sequence[str] | None = None, rows: int = 0) -> SparsEmbedBatch:
        """`rows` texts without terms."""
        terms = SparseBatch(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab_size,
                            vocab)
        return cls(terms, np.zeros((0, dim), np.float32))


def marked_texts(texts: Sequence[str], prefix: str, mask_tokens: int) -> list[str]:
    """The texts as strings with prefix and [MASK]s (for tools that tokenise themselves; truncation may cut masks)."""
    return [prefix + text + f" {MASK_TOKEN}" * mask_tokens for text in texts]


def encode_marked(tokenizer: Any, texts: Sequence[str], max_length: int, *, prefix: str = "", mask_tokens: int = 0,
                  mask_id: int | None = None) -> Encoded:
    """Tokenise `prefix + text`, then append `mask_tokens` [MASK]s before the final special token.

    The text is cut first, so the [MASK]s always survive truncation. A text is blank (`Encoded.blank`)
    when it adds no token to the prefix's.
    """
    encoded = encode(tokenizer, [prefix + text for text in texts], max_length - mask_tokens)
    if prefix:
        prefix_tokens = len(tokenizer.encode(prefix, add_special_tokens=False).ids)
        text_tokens = encoded.lengths - tokenizer.num_special_tokens_to_add(False) - prefix_tokens
        encoded = Encoded(encoded.ids, encoded.truncated, (text_tokens <= 0) & ~encoded.truncated)
    if not mask_tokens:
        return encoded
    masks = [mask_id] * mask_tokens
    return Encoded([ids[:-1] + masks + ids[-1:] for ids in encoded.ids], encoded.truncated, encoded.blank)


def split_candidates(ids: np.ndarray, weights: np.ndarray, embeddings: np.ndarray, *, vocab_size: int,
                     **options: Any) -> SparsEmbedBatch:
    """Graph outputs [B, K], [B, K], [B, K, dim] -> `SparsEmbedBatch` (options as `sparsify_candidates`)."""
    terms = sparsify_candidates(ids, weights, vocab_size=vocab_size, **options)
    # Ids are unique per row: find each kept (row, id) among the candidates by its key row * V + id.
    keys = (np.arange(len(ids), dtype=np.int64)[:, None] * vocab_size + ids).ravel()
    order = np.argsort(keys, kind="stable")
    wanted = np.repeat(np.arange(len(terms), dtype=np.int64), terms.nnz) * vocab_size + terms.indices
    found = order[np.searchsorted(keys, wanted, sorter=order)]
    return SparsEmbedBatch(terms, embeddings.reshape(-1, embeddings.shape[-1])[found].astype(np.float32, copy=False))


class SparsEmbedEncoder(Expander):
    """Encodes queries and documents into SparsEmbed terms and term embeddings with onnxruntime.

    Arguments as `Expander`; the folder must be a SparsEmbed export. `expand_batch` gives the sparse
    terms alone, so the encoder also serves a plain `SparseIndex`.
    """

    KIND = "sparsembed"

    def __init__(self, model: str | Path, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.settings = SparsEmbedSettings.from_manifest(self.manifest, self.source.name)
        self.mask_id = self.tokenizer.token_to_id(MASK_TOKEN)
        if self.mask_id is None and any(self.settings.mask_tokens.values()):
            raise ManifestError(f"{self.source.name}: the manifest appends {MASK_TOKEN} tokens, the tokenizer has none")

    def encode_batch(self, texts: str | Iterable[str], *, query: bool = False, top_k: int | None = None,
                     threshold: float = 0.0, progress: bool = False, long_documents: str | None = None,
                     window_stride: int | None = None) -> SparsEmbedBatch:
        """Encode texts into one `SparsEmbedBatch`, rows in input order (arguments as `expand_batch`;
        long_documents="windows" raises: not supported yet)."""
        return self._run(texts, query=query, top_k=top_k, threshold=threshold, progress=progress,
                         long_documents=long_documents, window_stride=window_stride)

    def _stride(self, long_documents: str | None, window_stride: int | None, *, query: bool) -> int | None:
        """Always None: texts are cut at the max length. Windows would need each term's embedding taken from
        one of its windows (e.g. where its weight peaks): not supported yet, so asking for them raises."""
        stride = super()._stride(long_documents, window_stride, query=False)
        if stride is not None:
            raise InputError(f"{self.source.name}: long_documents='windows' is not supported for SparsEmbed models "
                             f"yet; documents are cut at the document max length")
        return None

    def _encode(self, texts: list[str], mode: Mode, stride: None) -> Encoded:
        return encode_marked(self.tokenizer, texts, self.max_length[mode], prefix=self.settings.prefix[mode],
                             mask_tokens=self.settings.mask_tokens[mode], mask_id=self.mask_id)

    def _collect(self, outputs: dict[str, np.ndarray], *, top_k: int | None, threshold: float,
                 truncated: np.ndarray) -> SparsEmbedBatch:
        return split_candidates(
            outputs[TOPK_IDS_OUTPUT], outputs[TOPK_WEIGHTS_OUTPUT].astype(np.float32, copy=False),
            outputs[TOPK_EMBEDDINGS_OUTPUT], vocab_size=self.manifest.vocab_size, threshold=threshold,
            top_k=top_k, drop_ids=self.drop_ids, vocab=self.vocab, truncated=truncated)

    def _empty(self, rows: int) -> SparsEmbedBatch:
        return SparsEmbedBatch.empty(self.manifest.vocab_size, self.settings.embedding_dim, self.vocab, rows)

    def encode(self, texts: str | Iterable[str], *, query: bool = False) -> SparsEmbedVector | list[SparsEmbedVector]:
        """Encode one text (-> `SparsEmbedVector`) or a sequence of texts (-> list, in input order)."""
        result = self.encode_batch(texts, query=query)
        return result[0] if isinstance(texts, str) else list(result)

    def expand_batch(self, texts: str | Iterable[str], *, query: bool = False, top_k: int | None = None,
                     threshold: float = 0.0, progress: bool = False, long_documents: str | None = None,
                     window_stride: int | None = None) -> SparseBatch:
        """The sparse terms alone (prefix and [MASK]s applied), as `Expander.expand_batch`."""
        return self.encode_batch(texts, query=query, top_k=top_k, threshold=threshold, progress=progress,
                                 long_documents=long_documents, window_stride=window_stride).terms

    def __repr__(self) -> str:
        return (f"SparsEmbedEncoder(model={self.source.name!r}, precision={self.precision!r}, "
                f"softmax_axis={self.settings.softmax_axis!r}, dim={self.settings.embedding_dim})")
