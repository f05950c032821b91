"""Sparse vectors in and out of search engines' formats.

- Qdrant: `SparseVector(indices, values)` for sparse-vector collections (qdrant-client, optional).
- OpenSearch / Elasticsearch: token -> weight objects for `rank_features` / `sparse_vector` fields
  and `neural_sparse` / `sparse_vector` queries.
- Anserini: JsonVectorCollection lines ({"id", "contents", "vector": {token: int}}) and query TSV
  lines (`qid<TAB>tokens`, each token repeated as many times as its integer weight), both with
  impacts = round(weight x scale), scale 100 as in Anserini's SPLADE indexes.
- scipy: `from_scipy` here, `SparseBatch.to_scipy()` for the other way.

Escaping policy for OpenSearch / Elasticsearch: feature names are field names, and Elasticsearch
(rank_features, and sparse_vector before 8.16) rejects names containing "." (it would read them as
object paths) as well as empty names. `escape_token` percent-encodes "%" as "%25" and "." as "%2E",
nothing else, so WordPiece tokens stay readable ("##ing", "u") and `unescape_token` restores them
exactly; pass `escape=False` for engines that accept dots. Weights must be positive normal floats
(Lucene's FeatureField), so weights below float32's smallest normal are dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .readers import read_placed_jsonl, record_id, record_text
from .sparse import SparseBatch

ANSERINI_SCALE = 100.0
_ESCAPES = (("%", "%25"), (".", "%2E"))


def escape_token(token: str) -> str:
    """A token as an Elasticsearch/OpenSearch feature name: "%" -> "%25", "." -> "%2E"."""
    if not token:
        raise InputError("an empty token cannot be a feature name")
    for raw, escaped in _ESCAPES:
        token = token.replace(raw, escaped)
    return token


def unescape_token(name: str) -> str:
    """Inverse of `escape_token`."""
    for raw, escaped in reversed(_ESCAPES):
        name = name.replace(escaped, raw)
    return name


def _vocab(vectors: SparseBatch, vocab: Sequence[str] | None) -> Sequence[str]:
    vocab = vocab if vocab is not None else vectors.vocab
    if vocab is None:
        raise InputError("these vectors carry no vocabulary; pass vocab= (tokenization.vocabulary(tokenizer))")
    return vocab


def _csr(rows: np.ndarray, ids: np.ndarray, values: np.ndarray, n_rows: int, vocab_size: int,
         vocab: Sequence[str] | None) -> SparseBatch:
    """Unordered (row, id, value) triples -> CSR with ids ascending, zero weights dropped.

    Rejects ids outside the vocabulary, negative or non-finite weights and an id repeated in a row.
    """
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise InputError(f"ids must lie in [0, {vocab_size})")
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        raise InputError("weights must be finite and >= 0")
    keep = values > 0
    rows, ids, values = rows[keep], ids[keep], values[keep]
    order = np.lexsort((ids, rows))
    rows, ids, values = rows[order], ids[order], values[order]
    if np.any((np.diff(ids) == 0) & (np.diff(rows) == 0)):
        raise InputError("a vector lists the same id twice")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return SparseBatch(indptr, ids.astype(np.int32), values.astype(np.float32), vocab_size, vocab)


def from_token_lists(tokens: Sequence[Sequence[str]], weights: Sequence[Sequence[float]], vocab: Sequence[str],
                     *, scale: float = 1.0) -> SparseBatch:
    """Per-vector tokens and weights (divided by `scale`) -> a CSR batch; unknown tokens raise."""
    token_id = {t: i for i, t in enumerate(vocab)}
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    try:
        ids = np.fromiter((token_id[t] for row in tokens for t in row), dtype=np.int64, count=int(lengths.sum()))
    except KeyError as exc:
        raise InputError(f"token {exc.args[0]!r} is not in the vocabulary") from None
    values = np.fromiter((w for row in weights for w in row), dtype=np.float64, count=int(lengths.sum()))
    return _csr(np.repeat(np.arange(len(tokens)), lengths), ids, values / scale, len(tokens), len(vocab), vocab)


def _rows(vectors: SparseBatch) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start, stop in zip(vectors.indptr[:-1].tolist(), vectors.indptr[1:].tolist()):
        yield vectors.indices[start:stop], vectors.values[start:stop]


# -- Qdrant ---------------------------------------------------------------------------------------


def to_qdrant(vectors: SparseBatch) -> list[Any]:
    """One `qdrant_client.models.SparseVector` per row (needs qdrant-client)."""
    try:
        from qdrant_client import models
    except ImportError as exc:
        raise ImportError("to_qdrant() needs qdrant-client: pip install qdrant-client") from exc
    return [models.SparseVector(indices=ids.tolist(), values=values.tolist()) for ids, values in _rows(vectors)]


def from_qdrant(vectors: Sequence[Any], vocab_size: int, vocab: Sequence[str] | None = None) -> SparseBatch:
    """Objects with `.indices` and `.values` (Qdrant SparseVectors) -> a CSR batch."""
    lengths = np.array([len(v.indices) for v in vectors], dtype=np.int64)
    ids = np.fromiter((i for v in vectors for i in v.indices), dtype=np.int64, count=int(lengths.sum()))
    values = np.fromiter((x for v in vectors for x in v.values), dtype=np.float64, count=int(lengths.sum()))
    return _csr(np.repeat(np.arange(len(vectors)), lengths), ids, values, len(vectors), vocab_size, vocab)


def from_scipy(matrix: Any, vocab: Sequence[str] | None = None) -> SparseBatch:
    """A scipy sparse matrix [n, vocab_size] (any format) -> a CSR batch; duplicates summed, zeros dropped."""
    csr = matrix.tocsr(copy=True)
    csr.sum_duplicates()
    coo = csr.tocoo()
    return _csr(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64), coo.shape[0],
                coo.shape[1], vocab)


# -- OpenSearch / Elasticsearch -------------------------------------------------------------------


def to_token_weights(vectors: SparseBatch, vocab: Sequence[str] | None = None, *,
                     escape: bool = True) -> list[dict[str, float]]:
    """One {feature name: weight} object per row, for rank_features / sparse_vector fields and queries."""
    vocab = _vocab(vectors, vocab)
    name = escape_token if escape else _check_name
    tiny = float(np.finfo(np.float32).tiny)
    return [{name(vocab[i]): w for i, w in zip(ids.tolist(), values.tolist()) if w >= tiny}
            for ids, values in _rows(vectors)]


def _check_name(token: str) -> str:
    if not token:
        raise InputError("an empty token cannot be a feature name")
    return token


def from_token_weights(objects: Sequence[Mapping[str, float]], vocab: Sequence[str], *,
                       escaped: bool = True) -> SparseBatch:
    """Inverse of `to_token_weights`: {feature name: weight} objects -> a CSR batch."""
    tokens = [[unescape_token(t) if escaped else t for t in obj] for obj in objects]
    return from_token_lists(tokens, [list(obj.values()) for obj in objects], vocab)


# -- Anserini -------------------------------------------------------------------------------------


def _impacts(vectors: SparseBatch, vocab: Sequence[str], scale: float) -> Iterator[dict[str, int]]:
    """Per row {token: round(weight x scale)}, zero impacts dropped; tokens must be whitespace-free."""
    for ids, values in _rows(vectors):
        impacts = np.rint(values.astype(np.float64) * scale).astype(np.int64)
        row = {vocab[i]: n for i, n in zip(ids.tolist(), impacts.tolist()) if n > 0}
        bad = [t for t in row if not t or t != "".join(t.split())]
        if bad:
            raise InputError(f"token {bad[0]!r} is empty or contains whitespace; Anserini cannot index it")
        yield row


def anserini_documents(ids: Sequence[str], vectors: SparseBatch, vocab: Sequence[str] | None = None, *,
                       scale: float = ANSERINI_SCALE, contents: Sequence[str] | None = None) -> Iterator[str]:
    """JsonVectorCollection lines: {"id", "contents", "vector": {token: integer impact}}."""
    if len(ids) != len(vectors) or (contents is not None and len(contents) != len(vectors)):
        raise InputError("ids (and contents) must have one entry per vector")
    for position, (doc_id, row) in enumerate(zip(ids, _impacts(vectors, _vocab(vectors, vocab), scale))):
        text = contents[position] if contents is not None else ""
        yield json.dumps({"id": str(doc_id), "contents": text, "vector": row}, ensure_ascii=False)


def anserini_queries(ids: Sequence[str], vectors: SparseBatch, vocab: Sequence[str] | None = None, *,
                     scale: float = ANSERINI_SCALE) -> Iterator[str]:
    """Query TSV lines `qid<TAB>tokens`, each token repeated by its integer impact (Anserini -impact)."""
    if len(ids) != len(vectors):
        raise InputError("ids must have one entry per vector")
    for qid, row in zip(ids, _impacts(vectors, _vocab(vectors, vocab), scale)):
        yield f"{qid}\t" + " ".join(" ".join([token] * n) for token, n in row.items())


def read_anserini_documents(lines: Iterable[str], vocab: Sequence[str], *,
                            scale: float = ANSERINI_SCALE) -> tuple[list[str], SparseBatch]:
    """Parse JsonVectorCollection lines -> (ids, vectors with weights = impact / scale)."""
    records = [json.loads(line) for line in lines if line.strip()]
    vectors = [r["vector"] for r in records]
    return ([str(r["id"]) for r in records],
            from_token_lists([list(v) for v in vectors], [list(v.values()) for v in vectors], vocab, scale=scale))


def read_anserini_queries(lines: Iterable[str], vocab: Sequence[str], *,
                          scale: float = ANSERINI_SCALE) -> tuple[list[str], SparseBatch]:
    """Parse query TSV lines (tokens repeated by impact) -> (ids, vectors with weights = count / scale)."""
    ids, tokens, counts = [], [], []
    for line in lines:
        if not line.strip():
            continue
        qid, _, text = line.rstrip("\r\n").partition("\t")
        count = Counter(text.split())
        ids.append(qid)
        tokens.append(list(count))
        counts.append(list(count.values()))
    return ids, from_token_lists(tokens, counts, vocab, scale=scale)


def read_impact_queries(path: str | Path, vocab: Sequence[str]) -> tuple[list[str], list[str], SparseBatch]:
    """A JSONL of pre-encoded queries {"qid", "text", "impacts": {token: int}} -> (qids, texts, vectors).

    Weights are the integer impacts as given (scale 1), e.g. shared/data/splade-queries.
    """
    qids, texts, impacts = [], [], []
    for where, record in read_placed_jsonl(path):
        qids.append(str(record_id(record, ["qid"], None, where)))
        texts.append(record_text(record, ["text"], where))
        weights = record.get("impacts")
        if not isinstance(weights, dict) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
            raise InputError(f"{where}: 'impacts' must be an object token -> number")
        impacts.append(weights)
    return qids, texts, from_token_lists([list(i) for i in impacts], [list(i.values()) for i in impacts], vocab)
