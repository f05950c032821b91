"""BM25 as a sparse encoder over the model's own WordPiece vocabulary.

Documents get BM25 weights, queries binary weights, so the dot product of the two is the BM25
score, and BM25 runs through the same `SparseIndex` (and adapters) as SPLADE vectors. It is the
baseline for a SPLADE model and a model-free encoder for tests. Statistics (document frequency,
average length) come from `fit` and stay frozen, like a model's weights: documents added later are
weighted with them.

weight(t, d) = idf(t) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl)),
idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))  (Lucene's, never negative).
Defaults k1=0.9, b=0.4 are Anserini's. Special tokens ([CLS], [UNK], ...) are not terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import InputError
from .sparse import SparseBatch
from .tokenization import as_tokenizer, special_token_ids, token_counts, vocabulary


class BM25Encoder:
    """BM25 document weights and binary query weights over a WordPiece tokenizer's ids.

    tokenizer: a tokenizer.json path or a `tokenizers.Tokenizer` (bert-base-uncased for SPLADE).
    k1, b: the BM25 parameters. Call `fit(corpus texts)` before encoding documents.
    """

    def __init__(self, tokenizer: str | Path | Tokenizer, *, k1: float = 0.9, b: float = 0.4):
        if k1 < 0 or not 0 <= b <= 1:
            raise InputError("BM25 needs k1 >= 0 and 0 <= b <= 1")
        self.tokenizer = as_tokenizer(tokenizer)
        self.vocab = vocabulary(self.tokenizer)
        self.vocab_size = len(self.vocab)
        self.drop_ids = np.array(special_token_ids(self.tokenizer), dtype=np.int64)
        self.k1, self.b = float(k1), float(b)
        self.idf: np.ndarray | None = None
        self.n_docs = 0
        self.avgdl = 0.0

    def __repr__(self) -> str:
        return f"BM25Encoder(k1={self.k1}, b={self.b}, fitted on {self.n_docs} documents)"

    def fit(self, texts: Sequence[str]) -> BM25Encoder:
        """Learn document frequencies and the average length from the corpus; returns self."""
        self._fit(token_counts(self.tokenizer, texts, self.drop_ids, self.vocab))
        return self

    def fit_expand(self, texts: Sequence[str]) -> SparseBatch:
        """`fit` on the corpus and return its document vectors, tokenising it once."""
        counts = token_counts(self.tokenizer, texts, self.drop_ids, self.vocab)
        self._fit(counts)
        return self._weigh(counts)

    def _fit(self, counts: SparseBatch) -> None:
        if len(counts) == 0:
            raise InputError("cannot fit BM25 on an empty corpus")
        df = np.bincount(counts.indices, minlength=self.vocab_size)
        self.n_docs = len(counts)
        self.avgdl = float(counts.values.sum(dtype=np.float64)) / self.n_docs
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))

    def parameters(self) -> dict[str, float]:
        """k1, b and the fitted corpus size and average length (recorded in index metadata)."""
        return {"k1": self.k1, "b": self.b, "n_docs": self.n_docs, "avgdl": self.avgdl}

    def expand_batch(self, texts: Sequence[str], *, query: bool = False) -> SparseBatch:
        """Queries: weight 1 per distinct token. Documents: BM25 weights (needs `fit`)."""
        counts = token_counts(self.tokenizer, texts, self.drop_ids, self.vocab)
        if query:
            return SparseBatch(counts.indptr, counts.indices, np.ones_like(counts.values), self.vocab_size,
                               self.vocab)
        return self._weigh(counts)

    def _weigh(self, counts: SparseBatch) -> SparseBatch:
        if self.idf is None:
            raise InputError("BM25Encoder.fit(corpus) must run before encoding documents")
        tf = counts.values.astype(np.float64)
        rows = np.repeat(np.arange(len(counts)), counts.nnz)
        lengths = np.bincount(rows, weights=tf, minlength=len(counts))[rows]
        norm = self.k1 * (1.0 - self.b + self.b * lengths / self.avgdl)
        weights = self.idf[counts.indices] * tf * (self.k1 + 1.0) / (tf + norm)
        return SparseBatch(counts.indptr, counts.indices, weights.astype(np.float32), self.vocab_size, self.vocab)
