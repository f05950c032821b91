"""Inference-free query encoding for doc-only sparse models (OpenSearch neural sparse "doc-v*").

Those models expand documents only; a query is its tokens, each weighted by a trained IDF table
(`idf.json`, token -> weight) that ships with the model. Encoding a query is a tokenizer call and a
table lookup: no onnxruntime session, no model file, microseconds per query.

Policy for tokens missing from the table: they get `missing_weight`, 1.0 by default, which is the
weight the OpenSearch tables themselves give to tokens never seen in training ([PAD], [unused*]);
`missing_weight=None` drops them instead. Special tokens never count, repeated tokens count once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import InputError
from .readers import read_json_object
from .sparse import SparseBatch
from .tokenization import as_tokenizer, special_token_ids, token_counts, vocabulary


def load_idf(path: str | Path) -> dict[str, float]:
    """Read an idf.json (token -> weight), checking that weights are finite numbers >= 0."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IDF table not found")
    table = read_json_object(path)
    bad = [t for t, w in table.items()
           if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0]
    if bad:
        raise InputError(f"{path}: token {bad[0]!r} has weight {table[bad[0]]!r}; weights must be numbers >= 0")
    return {t: float(w) for t, w in table.items()}


class IdfQueryEncoder:
    """Queries -> sparse vectors with the weight of each distinct token looked up in an IDF table.

    tokenizer: the doc-only model's tokenizer (a tokenizer.json path or a `tokenizers.Tokenizer`).
    idf: the model's idf.json path, or a token -> weight mapping.
    missing_weight: weight of tokens absent from the table (None: drop them).
    """

    def __init__(self, tokenizer: str | Path | Tokenizer, idf: str | Path | Mapping[str, float], *,
                 missing_weight: float | None = 1.0):
        if missing_weight is not None and missing_weight < 0:
            raise InputError("missing_weight must be >= 0 (or None)")
        self.tokenizer = as_tokenizer(tokenizer)
        self.vocab = vocabulary(self.tokenizer)
        self.vocab_size = len(self.vocab)
        self.drop_ids = np.array(special_token_ids(self.tokenizer), dtype=np.int64)
        table = load_idf(idf) if isinstance(idf, (str, Path)) else idf
        self.missing = np.array([t not in table for t in self.vocab], dtype=bool)
        self.weights = np.array([table.get(t, missing_weight or 0.0) for t in self.vocab], dtype=np.float32)

    def __repr__(self) -> str:
        return f"IdfQueryEncoder({self.vocab_size} tokens, {int(self.missing.sum())} missing from the table)"

    def expand_batch(self, texts: Sequence[str], *, query: bool = True) -> SparseBatch:
        """Queries only: documents need the model's document encoder."""
        if not query:
            raise InputError("IdfQueryEncoder encodes queries only; expand documents with the model (Expander)")
        counts = token_counts(self.tokenizer, texts, self.drop_ids, self.vocab)
        weights = self.weights[counts.indices]
        keep = weights > 0
        rows = np.repeat(np.arange(len(counts)), counts.nnz)[keep]
        indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(counts)), out=indptr[1:])
        return SparseBatch(indptr, counts.indices[keep], weights[keep], self.vocab_size, self.vocab)
