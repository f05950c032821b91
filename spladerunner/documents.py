"""What goes into an index: documents as texts or dicts, their ids, and checks on the vectors.

Shared by `SparseIndex` and `SparsEmbedIndex`; every check raises `InputError` (a `ValueError`)
naming the argument or the position at fault.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from .errors import InputError, InputTypeError
from .sparse import SparseBatch


class SparseEncoder(Protocol):
    """Anything that turns texts into sparse vectors: `Expander`, `BM25Encoder`, `IdfQueryEncoder`."""

    def expand_batch(self, texts: Sequence[str], *, query: bool = False) -> SparseBatch: ...


def document_texts(documents: Sequence[str | Mapping[str, Any]], *, key: str = "id",
                   on: Sequence[str] = ("title", "text"), first_id: int = 0) -> tuple[list[str], list[str]]:
    """(ids, texts) of plain strings (ids = running numbers from `first_id`) or of dicts.

    A dict gives its id under `key` and the non-empty fields `on`, joined with a space (BEIR puts
    the title before the text).
    """
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Sequence):
        raise InputTypeError(f"documents must be a sequence of str or dict, got {type(documents).__name__}")
    ids: list[str] = []
    texts: list[str] = []
    for position, doc in enumerate(documents):
        if isinstance(doc, str):
            ids.append(str(first_id + position))
            texts.append(doc)
            continue
        if not isinstance(doc, Mapping):
            raise InputTypeError(f"documents[{position}] is {type(doc).__name__}, expected str or dict")
        if key not in doc:
            raise InputError(f"documents[{position}] has no id field {key!r}")
        if not any(f in doc for f in on):
            raise InputError(f"documents[{position}] has none of the fields {list(on)}")
        fields = [doc[f] for f in on if doc.get(f)]
        if not all(isinstance(f, str) for f in fields):
            raise InputTypeError(f"documents[{position}]: fields {list(on)} must be strings")
        ids.append(str(doc[key]))
        texts.append(" ".join(fields))
    return ids, texts


def check_new_ids(ids: Sequence[str], indexed: Container[str], hint: str = "") -> None:
    """Refuse ids repeated among `ids` or already in `indexed`; `hint` ends the message of the latter."""
    if len(set(ids)) != len(ids):
        raise InputError("duplicate ids among the documents being added")
    taken = [i for i in ids if i in indexed]
    if taken:
        raise InputError(f"{len(taken)} id(s) already indexed, e.g. {taken[0]!r}{hint}")


def check_vectors(batch: SparseBatch, what: str, vocab_size: int | None) -> None:
    """Refuse a malformed CSR batch, term ids outside [0, vocab_size) and weights not finite and > 0.

    Hits are the documents that score > 0, and a negative id would silently index another term.
    """
    if not isinstance(batch, SparseBatch):
        raise InputTypeError(f"{what} vectors must be a SparseBatch, got {type(batch).__name__}")
    if vocab_size is not None and batch.vocab_size != vocab_size:
        raise InputError(f"{what} vectors have vocab_size {batch.vocab_size}, the index {vocab_size}")
    indptr, indices, values = batch.indptr, batch.indices, batch.values
    if (indptr.ndim != 1 or len(indptr) < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(indices) or len(indices) != len(values)):
        raise InputError(f"{what} vectors: indptr, indices and values do not form a CSR batch")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= batch.vocab_size):
        bad = indices[(indices < 0) | (indices >= batch.vocab_size)][0]
        raise InputError(f"{what} vectors: term id {int(bad)} is outside the vocabulary [0, {batch.vocab_size})")
    if values.size and not (values.min() > 0 and values.max() < np.inf):  # NaN fails both
        raise InputError(f"{what} weights must be finite and > 0")
