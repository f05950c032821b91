"""`Expander`: texts in, sparse bag-of-words vectors out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .loading import DEFAULT_MODEL, ModelSource, load_manifest, open_source
from .manifest import (
    MODES,
    POOLED_OUTPUT,
    TOPK_IDS_OUTPUT,
    TOPK_WEIGHTS_OUTPUT,
    GraphEntry,
    Manifest,
    ManifestError,
    Mode,
)
from .session import CPU, CUDA, GraphSession, normalise_providers
from .sparse import SparseBatch, SparseVector, sparsify, sparsify_candidates
from .tokenization import Encoded, batches, encode, load_tokenizer, special_token_ids, vocabulary

logger = logging.getLogger("spladerunner")


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """The texts as a list, or a TypeError naming the first item that is not a str."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, expected str")
    return list(texts)


class Expander:
    """Expands queries and documents into SPLADE sparse vectors with onnxruntime.

    model: a local model folder or a hub id (read through the Hugging Face cache; `HF_HUB_OFFLINE=1`
        works once the files are cached). Our exports (`spladerunner.json`) and foreign logits graphs
        (fastembed/Qdrant, optimum, sentence-transformers `onnx/`) both load.
    precision: "fp32", "int8" or "fp16"; by default int8 on CPU and fp16 on CUDA when the folder has them.
    providers: onnxruntime providers or the shorthands "cpu"/"cuda"; CPU by default. A requested
        provider that onnxruntime does not activate raises `ProviderError` instead of running on CPU.
    threads: intra-op threads; by default the CPUs this process may use.
    query_max_length, document_max_length: override the manifest's max lengths (tokens, specials included).
    max_tokens: padded tokens (rows x longest) per batch; bounds memory, whatever the batch size. The graph
        writes a [rows, length, vocab] decoder output, so small batches are lighter and, on CPU, faster too
        (BERT-base int8, 2 cores: 1024 tokens 18.2 docs/s at 469 MB peak, 4096 tokens 14.2 docs/s at 985 MB).
    """

    KIND = "splade"  # the manifest kind this class runs (`SparsEmbedEncoder` subclasses it for "sparsembed")

    def __init__(self, model: str | Path = DEFAULT_MODEL, *, precision: str | None = None,
                 providers: Sequence[str | tuple[str, dict]] | None = None, threads: int | None = None,
                 revision: str | None = None, cache_dir: str | None = None,
                 query_max_length: int | None = None, document_max_length: int | None = None,
                 max_tokens: int = 1024, max_batch_size: int = 64):
        if max_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_tokens and max_batch_size must be positive")
        self.source: ModelSource = open_source(model, revision=revision, cache_dir=cache_dir)
        self.manifest: Manifest = load_manifest(self.source)
        if self.manifest.kind != self.KIND:
            raise ManifestError(f"{self.source.name}: kind {self.manifest.kind!r} is not a {self.KIND!r} model")
        self.providers = normalise_providers(providers)
        self.threads = threads
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.max_length: dict[str, int] = dict(self.manifest.max_length)
        for mode, override in (("query", query_max_length), ("document", document_max_length)):
            if override is not None:
                if override < 2:
                    raise ValueError(f"{mode}_max_length must be >= 2 (room for the special tokens)")
                self.max_length[mode] = override

        tokenizer_path = self.source.fetch(self.manifest.tokenizer)
        self.tokenizer = load_tokenizer(tokenizer_path)
        tokenizer_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if tokenizer_size != self.manifest.vocab_size:
            raise ManifestError(f"{tokenizer_path}: tokenizer has {tokenizer_size} tokens but the model "
                                f"outputs a vocabulary of {self.manifest.vocab_size}")
        self.vocab: list[str] = vocabulary(self.tokenizer)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        tokenizer_specials = special_token_ids(self.tokenizer)
        self.drop_ids = np.array(sorted(set(self.manifest.special_token_ids) | set(tokenizer_specials)),
                                 dtype=np.int64)
        self.precision = self._choose_precision(precision)
        self._sessions: dict[str, GraphSession] = {}

    def _choose_precision(self, precision: str | None) -> str:
        available = set(self.manifest.precisions("query")) & set(self.manifest.precisions("document"))
        if precision is not None:
            if precision not in available:
                raise ValueError(f"{self.source.name}: precision {precision!r} not exported; "
                                 f"available: {sorted(available)}")
            return precision
        on_cuda = CUDA in [p if isinstance(p, str) else p[0] for p in self.providers]
        for preferred in (("fp16", "fp32") if on_cuda else ("int8", "fp32")):
            if preferred in available:
                return preferred
        return sorted(available)[0]

    def graph(self, mode: Mode) -> GraphEntry:
        return self.manifest.encoders[mode][self.precision]

    def session(self, mode: Mode) -> GraphSession:
        """The session for a mode, created on first use; modes sharing a graph share the session."""
        entry = self.graph(mode)
        if entry.path not in self._sessions:
            self._sessions[entry.path] = GraphSession(
                self.source.fetch(entry.path), entry, vocab_size=self.manifest.vocab_size,
                pooling=self.manifest.pooling, providers=self.providers, threads=self.threads)
        return self._sessions[entry.path]

    def expand_batch(self, texts: str | Sequence[str], *, query: bool = False, top_k: int | None = None,
                     threshold: float = 0.0) -> SparseBatch:
        """Expand texts into one CSR `SparseBatch`, rows in input order.

        query: use the query encoder and max length instead of the document ones.
        top_k: keep at most this many terms per text (the heaviest); threshold: keep weights above it.
        `batch.truncated` marks the texts cut at the max length.
        """
        return self._run(texts, query=query, top_k=top_k, threshold=threshold)

    def _run(self, texts: str | Sequence[str], *, query: bool, top_k: int | None, threshold: float) -> Any:
        """Tokenise, batch by length, run, sparsify each batch (`_collect`) and restore input order."""
        texts = check_texts(texts)
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (weights are never negative), got {threshold}")
        mode: Mode = MODES[0] if query else MODES[1]
        session = self.session(mode)
        self._check_top_k(top_k, session.entry.top_k)
        encoded = self._encode(texts, mode)
        parts, order = [], []
        padded = batches(encoded, max_tokens=self.max_tokens, max_batch_size=self.max_batch_size, pad_id=self.pad_id)
        for batch, outputs in session.run_all(padded, overlap=session.providers[0] != CPU and len(texts) > 1):
            parts.append(self._collect(outputs, top_k=top_k, threshold=threshold,
                                       truncated=encoded.truncated[batch.rows]))
            order.append(batch.rows)
        if not parts:
            return self._empty()
        # Row r of the concatenation is input text sorted_rows[r]; invert that to restore input order.
        sorted_rows = np.concatenate(order)
        position = np.empty_like(sorted_rows)
        position[sorted_rows] = np.arange(len(sorted_rows))
        truncated = int(encoded.truncated.sum())
        if truncated:
            logger.info("%d of %d texts were truncated at %d tokens", truncated, len(texts), self.max_length[mode])
        return type(parts[0]).concat(parts).take(position)

    @staticmethod
    def _check_top_k(top_k: int | None, graph_top_k: int | None) -> None:
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        if top_k is not None and graph_top_k is not None and top_k > graph_top_k:
            raise ValueError(f"top_k={top_k} exceeds the {graph_top_k} terms this graph keeps per text")

    def _encode(self, texts: list[str], mode: Mode) -> Encoded:
        return encode(self.tokenizer, texts, self.max_length[mode])

    def _collect(self, outputs: dict[str, np.ndarray], *, top_k: int | None, threshold: float,
                 truncated: np.ndarray) -> SparseBatch:
        """One batch's graph outputs -> CSR rows (dense pooled weights or per-row candidates)."""
        if POOLED_OUTPUT in outputs:
            return sparsify(outputs[POOLED_OUTPUT].astype(np.float32, copy=False), threshold=threshold,
                            top_k=top_k, drop_ids=self.drop_ids, vocab=self.vocab, truncated=truncated)
        return sparsify_candidates(
            outputs[TOPK_IDS_OUTPUT], outputs[TOPK_WEIGHTS_OUTPUT].astype(np.float32, copy=False),
            vocab_size=self.manifest.vocab_size, threshold=threshold, top_k=top_k, drop_ids=self.drop_ids,
            vocab=self.vocab, truncated=truncated)

    def _empty(self) -> SparseBatch:
        return SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                           self.manifest.vocab_size, self.vocab)

    def expand(self, texts: str | Sequence[str], *, query: bool = False, top_k: int | None = None,
               threshold: float = 0.0) -> SparseVector | list[SparseVector]:
        """Expand one text (-> `SparseVector`) or a sequence of texts (-> list, in input order)."""
        result = self.expand_batch(texts, query=query, top_k=top_k, threshold=threshold)
        return result[0] if isinstance(texts, str) else result.to_list()

    def __repr__(self) -> str:
        return (f"Expander(model={self.source.name!r}, precision={self.precision!r}, "
                f"providers={self.providers!r})")
