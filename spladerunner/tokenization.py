"""Tokenisation and batching: texts -> length-sorted, padded int64 batches under a token budget."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers

from .errors import InputError
from .sparse import SparseBatch


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a `tokenizer.json`, with an error that names the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise InputError(f"{path}: not a valid tokenizers file ({exc})") from None
    # The runtime pads and truncates itself; a padding setting inside the file would silently pad
    # every text to a fixed length, a truncation setting would fight ours.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def special_token_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], ...): never part of a sparse vector."""
    return sorted(i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special)


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """Token strings indexed by id (gaps, if any, become empty strings)."""
    vocab = [""] * tokenizer.get_vocab_size(with_added_tokens=True)
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        vocab[index] = token
    return vocab


def vocabulary_sha256(vocab: Tokenizer | Sequence[str]) -> str:
    """sha256 of the id-ordered token strings (a compact ASCII JSON list), for the manifest: a tokenizer of
    the same size may still hold other tokens."""
    tokens = vocabulary(vocab) if isinstance(vocab, Tokenizer) else list(vocab)
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Batch:
    """One padded batch: `rows` are the positions of its texts in the caller's input."""

    rows: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def token_type_ids(self) -> np.ndarray:
        return np.zeros_like(self.input_ids)


@dataclass(frozen=True)
class Encoded:
    """Token ids of every row (ragged), whether each was cut at the max length, and whether it was blank.

    A row is a text, or one token window of a long text (`encode(..., stride=)`); `owner` maps rows to
    the texts they come from (None: row i is text i). A blank text (empty, whitespace, control characters
    only: nothing left once tokenised) has one row and carries no content; the expander gives it an empty
    vector without running it through the model. `text_tokens` (per text, when known) counts each text's
    tokens before any cut, special tokens excluded: the length a windowed document is normalised by.
    """

    ids: list[Sequence[int]]
    truncated: np.ndarray
    blank: np.ndarray | None = None
    owner: np.ndarray | None = None
    text_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.blank is None:
            object.__setattr__(self, "blank", np.zeros(len(self.ids), dtype=bool))
        if self.owner is None:
            object.__setattr__(self, "owner", np.arange(len(self.ids), dtype=np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(i) for i in self.ids), dtype=np.int64, count=len(self.ids))

    def subset(self, rows: np.ndarray) -> Encoded:
        """These rows only, in this order (owners kept)."""
        return Encoded([self.ids[r] for r in rows.tolist()], self.truncated[rows], self.blank[rows], self.owner[rows],
                       self.text_tokens)


def window_starts(length: int, room: int, stride: int) -> range | list[int]:
    """Where the windows of `room` tokens over `length` tokens start: every `stride` tokens, the last one
    ending at the text's end (so every window is full and every token is in one)."""
    if length <= room:
        return [0]
    return [*range(0, length - room, stride), length - room]


def special_frame(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The special tokens the tokenizer's post-processor puts before and after one text's tokens ([CLS] and
    [SEP] for BERT), read off a processed sample; an `InputError` if it does more than frame the text."""
    sample = tokenizer.encode("a b", add_special_tokens=False)
    processed = tokenizer.post_process(sample)
    content, ids = sample.ids, processed.ids
    for start in range(len(ids) - len(content) + 1):
        if ids[start:start + len(content)] == content and all(processed.special_tokens_mask[:start]) and all(
                processed.special_tokens_mask[start + len(content):]):
            return np.array(ids[:start], np.int64), np.array(ids[start + len(content):], np.int64)
    raise InputError("this tokenizer's post-processor does more than add special tokens around a text: token "
                     "windows are not supported for it")


# Windowed texts longer than this (characters) are tokenised in pieces: the tokenizer's output for one text
# holds far more than its ids while it lasts (offsets, token strings, masks).
PIECE_CHARS = 1 << 16


def cuts_at_spaces(tokenizer: Tokenizer) -> bool:
    """Whether a text cut just after a space gives the same ids piece by piece as whole: true when the
    normaliser works character by character and the pre-tokenizer splits at whitespace and drops it
    (BERT's tokenizers, `Whitespace`)."""
    local = tokenizer.normalizer is None or isinstance(tokenizer.normalizer, normalizers.BertNormalizer)
    return local and isinstance(tokenizer.pre_tokenizer, (pre_tokenizers.BertPreTokenizer, pre_tokenizers.Whitespace,
                                                          pre_tokenizers.WhitespaceSplit))


def piece_ids(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """A long text's ids (no special tokens), tokenised `PIECE_CHARS` characters at a time, each piece cut
    just after a space (`cuts_at_spaces` makes the ids those of the whole text)."""
    parts, start = [], 0
    while start < len(text):
        stop = len(text) if len(text) - start <= PIECE_CHARS else text.rfind(" ", start, start + PIECE_CHARS) + 1
        if stop <= start:  # no space within the piece: extend it to the next space
            stop = text.find(" ", start + PIECE_CHARS) + 1 or len(text)
        parts.append(np.array(tokenizer.encode(text[start:stop], add_special_tokens=False).ids, dtype=np.int64))
        start = stop
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, *, stride: int | None = None) -> Encoded:
    """Tokenise with special tokens, cutting each text at `max_length` tokens; with `stride`, a longer text
    becomes overlapping windows instead (rows owned by the text, `window_starts`), each framed by the
    special tokens and `max_length` long.

    Thread-safe: the shared tokenizer is never reconfigured (toggling its truncation around each call
    made concurrent callers fail with tokenizers' "Already borrowed"). Each text is tokenised without
    special tokens, cut to leave room for them, then post-processed: exactly the steps, and so the ids,
    of tokenizers' own right-side truncation (tests/test_tokenization.py checks the equality). A window is
    the same frame around its slice of the text's tokens, so a text that fits gets the ids it gets without
    windows, and the first window of a long one the ids of its truncation.
    """
    room = max_length - tokenizer.num_special_tokens_to_add(False)
    if room < 0:
        raise InputError(f"max_length {max_length} leaves no room for the tokenizer's special tokens")
    if stride is not None and not 1 <= stride <= room:
        raise InputError(f"window stride must be in [1, {room}] (the tokens a window holds besides its special "
                         f"tokens), got {stride}")
    frame = special_frame(tokenizer) if stride is not None else None
    texts = list(texts)
    # Very long texts (windows only) are tokenised apart, in pieces: bounded memory (`piece_ids`).
    pieces = {i for i, text in enumerate(texts) if len(text) > PIECE_CHARS} if frame is not None and (
        cuts_at_spaces(tokenizer)) else set()
    encodings = tokenizer.encode_batch(["" if i in pieces else t for i, t in enumerate(texts)],
                                       add_special_tokens=False)
    ids: list[Sequence[int]] = []
    truncated, blank, owner = [], [], []
    text_tokens = np.zeros(len(texts), dtype=np.int64)
    for text, encoding in enumerate(encodings):
        encodings[text] = None  # free each text's tokenizer output once read (long documents)
        text_tokens[text] = len(encoding.ids)
        if text in pieces or (frame is not None and len(encoding.ids) > room):
            tokens = piece_ids(tokenizer, texts[text]) if text in pieces else np.array(encoding.ids, dtype=np.int64)
            text_tokens[text] = len(tokens)
            for start in window_starts(len(tokens), room, stride):
                ids.append(np.concatenate([frame[0], tokens[start:start + room], frame[1]]))
                owner.append(text)
            truncated += [False] * (len(ids) - len(truncated))
            blank += [len(tokens) == 0] * (len(ids) - len(blank))
            continue
        blank.append(not encoding.ids)
        truncated.append(len(encoding.ids) > room)
        if truncated[-1]:
            encoding.truncate(room)
        ids.append(tokenizer.post_process(encoding).ids)
        owner.append(text)
    return Encoded(ids, np.array(truncated, dtype=bool), np.array(blank, dtype=bool), np.array(owner, dtype=np.int64),
                   text_tokens)


def batches(encoded: Encoded, *, max_tokens: int, max_batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Length-sorted batches whose padded size (rows x longest) stays within `max_tokens`.

    Sorting by length keeps padding, and so wasted compute, near zero. A single text longer than
    the budget still gets a batch of its own.
    """
    lengths = encoded.lengths
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        # Lengths grow along `order`, so the padded size of [start, stop) is rows * lengths[order[stop-1]].
        while (stop < len(order) and stop - start < max_batch_size
               and (stop + 1 - start) * lengths[order[stop]] <= max_tokens):
            stop += 1
        rows = order[start:stop]
        width = int(lengths[rows[-1]])
        input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids = encoded.ids[row]
            input_ids[r, : len(ids)] = ids
            attention_mask[r, : len(ids)] = 1
        yield Batch(rows, input_ids, attention_mask)
        start = stop


def as_tokenizer(tokenizer: str | Path | Tokenizer) -> Tokenizer:
    """A `Tokenizer`, loading it when given the path of a tokenizer.json."""
    return tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)


def token_counts(tokenizer: Tokenizer, texts: Sequence[str], drop_ids: np.ndarray, vocab: Sequence[str]) -> SparseBatch:
    """Term frequencies of each text's tokens (special ones dropped) as a CSR batch, ids ascending."""
    vocab_size = len(vocab)
    # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we do not need.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = encode(list(texts), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(encodings), dtype=np.int64), lengths)
    keep = ~np.isin(ids, drop_ids)
    keys, counts = np.unique(rows[keep] * vocab_size + ids[keep], return_counts=True)
    indptr = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // vocab_size, minlength=len(encodings)), out=indptr[1:])
    return SparseBatch(indptr, (keys % vocab_size).astype(np.int32), counts.astype(np.float32), vocab_size, vocab)
