"""What `SparseIndex` and `SparsEmbedIndex` share: document ids and slots, term-grouped postings, and
adding, deleting, compacting, saving and loading them, safely from many threads.

Each document gets a slot (its position in the order documents were added, the tie order); the
postings hold, per vocabulary term, the slots of the documents that contain it (ascending) and
per-posting columns (SPLADE weights; SparsEmbed embeddings too). Slots are stored as uint16 offsets
inside blocks of `BLOCK` documents, each term's postings split into one segment per block: 2 bytes a
posting instead of 4, which is what a search at scale is bound by (it streams every posting it reaches
from memory), and a block's scores fit a core's cache. Added documents wait in a pending
list and are merged into the postings at the next search; deleted slots are masked in search and
dropped at compaction (once they outnumber the live ones, or at save).

Threads: the postings are published as an immutable `Postings` snapshot that is replaced, never
changed in place. Writers (add, delete, merge, compact, save) hold the index's lock; a search holds
it only while it merges pending documents (if any) and takes the current snapshot, then scores
without it, so concurrent searches run in parallel and a search never sees half an update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from .arguments import check_count
from .documents import check_new_ids, document_texts
from .errors import IndexFormatError, InputError
from .index_folder import (
    MANIFEST_FILE,
    count_field,
    decode_ids,
    encode_ids,
    read_arrays,
    read_manifest,
    write_index_folder,
)
from .results import SearchResults
from .scoring import group_by_term, padded_width, search_in_chunks, top_k, usable_cpus
from .sparse import gather_ranges

Index = TypeVar("Index", bound="PostingsIndex")

BLOCK_BITS = 16
BLOCK = 1 << BLOCK_BITS  # documents per block: a slot's offset inside its block fits uint16
SEGMENT_CHUNK = 1 << 24  # postings per step while counting segments (bounds that step's memory)


def count_blocks(n_slots: int) -> int:
    """Blocks of `BLOCK` documents that `n_slots` documents take (at least one)."""
    return max(1, -(-n_slots // BLOCK))


def segment_pointers(term_ptr: np.ndarray, slots: np.ndarray, n_blocks: int) -> np.ndarray:
    """Term-grouped postings (slots ascending within each term) -> segment_ptr [vocab_size * n_blocks + 1]:
    the postings of term t in block b are segment t * n_blocks + b."""
    if n_blocks == 1:
        return np.ascontiguousarray(term_ptr, dtype=np.int64)
    vocab_size = len(term_ptr) - 1
    counts = np.zeros(vocab_size * n_blocks, dtype=np.int64)
    term = 0
    while term < vocab_size:  # a run of terms holding about SEGMENT_CHUNK postings at a time
        stop = min(vocab_size, max(term + 1, int(np.searchsorted(term_ptr, term_ptr[term] + SEGMENT_CHUNK)) - 1))
        keys = np.repeat(np.arange(stop - term, dtype=np.int64) * n_blocks, np.diff(term_ptr[term:stop + 1]))
        keys += slots[term_ptr[term]:term_ptr[stop]] >> BLOCK_BITS
        counts[term * n_blocks:stop * n_blocks] = np.bincount(keys, minlength=(stop - term) * n_blocks)
        term = stop
    segment_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=segment_ptr[1:])
    return segment_ptr


@dataclass(frozen=True)
class Postings:
    """One consistent state of the postings, as searches see it.

    segment_ptr: [vocab_size * n_blocks + 1] offsets of each (term, block) segment of the postings, term-major;
    offsets: uint16 slot - block start per posting; columns: per-posting arrays (first axis = postings);
    ids: slot -> document id (entries below `n_slots` never change); dead: deleted slots below `n_slots`.
    """

    segment_ptr: np.ndarray
    offsets: np.ndarray
    columns: Mapping[str, np.ndarray]
    ids: list[str]
    n_slots: int
    dead: np.ndarray

    @classmethod
    def from_slots(cls, term_ptr: np.ndarray, slots: np.ndarray, columns: Mapping[str, np.ndarray], ids: list[str],
                   n_slots: int, dead: np.ndarray) -> Postings:
        """Postings from term-grouped slots (ascending within each term), split into blocks."""
        segment_ptr = segment_pointers(term_ptr, slots, count_blocks(n_slots))
        return cls(segment_ptr, (slots & (BLOCK - 1)).astype(np.uint16), columns, ids, n_slots, dead)

    @property
    def n_blocks(self) -> int:
        return count_blocks(self.n_slots)

    @property
    def term_ptr(self) -> np.ndarray:
        """[vocab_size + 1] offsets of each term's postings (a view: a term's segments are contiguous)."""
        return self.segment_ptr[::self.n_blocks]

    def gather(self, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings of `terms`, concatenated in `terms` order: (positions, slots int64, postings per term)."""
        n_blocks = self.n_blocks
        segments = (np.asarray(terms, dtype=np.int64)[:, None] * n_blocks + np.arange(n_blocks)).reshape(-1)
        positions, lengths = gather_ranges(self.segment_ptr, segments)
        slots = self.offsets[positions].astype(np.int64)
        if n_blocks > 1:
            slots += np.repeat(np.tile(np.arange(n_blocks, dtype=np.int64) << BLOCK_BITS, len(terms)), lengths)
        return positions, slots, lengths.reshape(len(terms), n_blocks).sum(axis=1)

    def slots(self) -> np.ndarray:
        """Every posting's slot (int32, term-grouped), materialised: for merging, compacting and exporting."""
        slots = self.offsets.astype(np.int32)
        if self.n_blocks > 1:
            starts = np.arange(self.n_blocks, dtype=np.int32) << BLOCK_BITS
            slots += np.repeat(np.tile(starts, len(self.segment_ptr) // self.n_blocks), np.diff(self.segment_ptr))
        return slots

    @property
    def width(self) -> int:
        """Columns of a score row (documents, padded for `top_k`; padding scores 0, so it is never a hit)."""
        return padded_width(self.n_slots)

    @cached_property
    def id_table(self) -> np.ndarray:
        """`ids` as an object array (built once per snapshot), for turning result slots into ids."""
        return np.asarray(self.ids[:self.n_slots], dtype=object)

    @cached_property
    def dead_mask(self) -> np.ndarray:
        """True for each deleted slot (bool [n_slots]); empty when none is deleted."""
        mask = np.zeros(self.n_slots if self.dead.size else 0, dtype=bool)
        mask[self.dead] = True
        return mask

    def rank(self, cells: np.ndarray, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat scores [n_rows * width] -> top k (slots, scores) per row, deleted documents excluded."""
        scores = cells.astype(np.float64, copy=False).reshape(n_rows, self.width)
        if self.dead.size:
            scores[:, self.dead] = 0.0
        return top_k(scores, k)


class PostingsIndex:
    """Base of the inverted indexes; subclasses say how vectors become posting columns and how to score."""

    FORMAT_NAME: ClassVar[str]
    COLUMNS: ClassVar[tuple[str, ...]]  # names of the per-posting columns, in save order

    def __init__(self, encoder: Any = None, *, metadata: dict[str, Any] | None = None):
        self.encoder = encoder
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.vocab_size: int | None = None
        self._lock = threading.RLock()
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._dead: list[int] = []
        self._pending: list[Any] = []
        self._postings: Postings | None = None

    # -- to be defined by subclasses --------------------------------------------------------------

    def _encode(self, texts: list[str], *, query: bool) -> Any:
        """Texts -> vectors with the index's encoder."""
        raise NotImplementedError

    def add_vectors(self, vectors: Any, ids: Sequence[str] | None = None, *, replace: bool = False) -> None:
        raise NotImplementedError

    def _empty_columns(self) -> dict[str, np.ndarray]:
        """Zero-length columns of the right dtypes and trailing shapes."""
        raise NotImplementedError

    def _new_postings(self, batch: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """A batch of vectors -> (terms, postings per row, columns), row-major: what to merge."""
        raise NotImplementedError

    def _header(self) -> dict[str, Any]:
        """Manifest fields (besides format, sizes and files) that `_from_manifest` reads back."""
        raise NotImplementedError

    @classmethod
    def _from_manifest(cls: type[Index], manifest: Mapping[str, Any], path: Path, encoder: Any) -> Index:
        """An empty index with the settings the manifest records."""
        raise NotImplementedError

    def _column_layout(self, n_postings: int) -> dict[str, tuple[int, type]]:
        """{column: (flattened length, dtype)} of the saved columns."""
        raise NotImplementedError

    # -- bookkeeping ----------------------------------------------------------------------------

    def _init_postings(self, vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)
        self._postings = Postings(np.zeros(self.vocab_size + 1, dtype=np.int64), np.zeros(0, dtype=np.uint16),
                                  self._empty_columns(), self._ids, 0, np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        """Live documents (deleted ones do not count)."""
        return len(self._slot)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    @property
    def ids(self) -> list[str]:
        """Ids of the live documents, in the order they were added (the tie order)."""
        with self._lock:
            return [doc for slot, doc in enumerate(self._ids) if self._slot.get(doc) == slot]

    def add(self, documents: Sequence[str | Mapping[str, Any]], *, key: str = "id",
            on: Sequence[str] = ("title", "text"), replace: bool = False, batch_size: int = 256,
            progress: bool = False) -> None:
        """Encode and add documents: plain texts (ids are running numbers) or dicts (see `document_texts`).

        replace: documents whose id is already indexed replace the old version; otherwise that is an error.
        progress: a progress line on stderr.
        """
        if self.encoder is None:
            raise InputError(f"this index has no encoder; pass one to {type(self).__name__}(...) or use add_vectors()")
        batch_size = check_count("batch_size", batch_size)
        with self._lock:
            ids, texts = document_texts(documents, key=key, on=on, first_id=len(self._ids))
            self._register(ids, len(ids), replace)
        from .progress import Progress

        bar = Progress(len(texts), "indexed", enabled=progress)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            self.add_vectors(self._encode(chunk, query=False), ids[start:start + batch_size], replace=replace)
            bar.update(len(chunk))
        bar.close()

    def _encode_queries(self, queries: str | Sequence[str]) -> Any:
        """Query texts -> vectors with the index's encoder."""
        if self.encoder is None:
            raise InputError("this index has no encoder to encode query texts; pass vectors to search()")
        return self._encode([queries] if isinstance(queries, str) else list(queries), query=True)

    def _register(self, ids: Sequence[str] | None, n_vectors: int, replace_ids: bool) -> list[str]:
        """Check and assign slots to the ids of `n_vectors` new documents (caller holds the lock)."""
        ids = [str(i) for i in ids] if ids is not None else [str(len(self._ids) + i) for i in range(n_vectors)]
        if len(ids) != n_vectors:
            raise InputError(f"{len(ids)} ids for {n_vectors} vectors")
        check_new_ids(ids, () if replace_ids else self._slot, "; pass replace=True")
        return ids

    def _append(self, ids: list[str], vectors: Any, replace_ids: bool) -> None:
        """Add checked vectors under their ids (caller holds the lock)."""
        if replace_ids:
            self._delete_locked([i for i in ids if i in self._slot])
        first = len(self._ids)
        self._ids.extend(ids)
        self._slot.update(zip(ids, range(first, first + len(ids))))
        self._pending.append(vectors)

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Remove documents by id; returns how many were removed."""
        ids = [str(i) for i in ids]
        with self._lock:
            missing = [i for i in ids if i not in self._slot]
            if missing and not missing_ok:
                raise KeyError(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
            return self._delete_locked(ids)

    def _delete_locked(self, ids: Sequence[str]) -> int:
        removed = [self._slot.pop(i) for i in dict.fromkeys(ids) if i in self._slot]
        if removed:
            self._dead.extend(removed)
            if self._postings is not None:
                self._postings = replace(self._postings, dead=self._dead_below(self._postings.n_slots))
        return len(removed)

    def _dead_below(self, n_slots: int) -> np.ndarray:
        dead = np.asarray(self._dead, dtype=np.int64)
        return dead[dead < n_slots]

    # -- merging and compaction -----------------------------------------------------------------

    def _snapshot(self) -> Postings:
        """The current postings, with pending documents merged (and compacted when mostly deleted)."""
        with self._lock:
            if self._postings is None:
                raise InputError("the index is empty")
            self._merge_pending()
            if len(self._dead) > len(self._slot):
                self._compact_locked()
            return self._postings

    def _merge_pending(self) -> None:
        if not self._pending:
            return
        batch = type(self._pending[0]).concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        old = self._postings
        terms, counts, columns = self._new_postings(batch)
        n_new = len(counts)
        ptr_b, order = group_by_term(terms, self.vocab_size)
        del terms  # peak memory: an index of a million documents holds hundreds of millions of postings
        slots = np.repeat(np.arange(old.n_slots, old.n_slots + n_new, dtype=np.int32), counts)
        ptr_a = old.term_ptr
        term_ptr = ptr_a + ptr_b
        old_slots = old.slots()
        if len(old_slots):
            # New slots all follow the old ones: old posting j of term t moves to j + ptr_b[t], new posting j
            # of term t goes to j + ptr_a[t + 1], so each term's slots stay ascending without a sort.
            dest_a = np.repeat(ptr_b[:-1], np.diff(ptr_a))
            dest_a += np.arange(len(old_slots))
            dest_b = np.repeat(ptr_a[1:], np.diff(ptr_b))
            dest_b += np.arange(len(order))

        def place(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            if not len(a):  # the first documents: grouping them by term is all there is to do
                return b[order]
            merged = np.empty((int(term_ptr[-1]), *a.shape[1:]), dtype=a.dtype)
            merged[dest_a], merged[dest_b] = a, b[order]
            return merged

        n_slots = old.n_slots + n_new
        merged_slots = place(old_slots, slots)
        del old_slots, slots
        self._postings = Postings.from_slots(term_ptr, merged_slots,
                                             {name: place(old.columns[name], columns[name]) for name in self.COLUMNS},
                                             self._ids, n_slots, self._dead_below(n_slots))
        self._pending = []

    def compact(self) -> None:
        """Merge pending documents, drop deleted ones' postings and renumber slots (order, hence ties, kept)."""
        with self._lock:
            if self._postings is None:
                return
            self._merge_pending()
            self._compact_locked()

    def _compact_locked(self) -> None:
        if not self._dead:
            return
        old = self._postings
        alive = np.ones(len(self._ids), dtype=bool)
        alive[self._dead] = False
        new_slot = np.cumsum(alive, dtype=np.int64) - 1
        old_slots = old.slots()
        keep = alive[old_slots]
        terms = np.repeat(np.arange(self.vocab_size), np.diff(old.term_ptr))[keep]
        term_ptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=self.vocab_size), out=term_ptr[1:])
        self._ids = [i for i, a in zip(self._ids, alive.tolist()) if a]
        self._slot = dict(zip(self._ids, range(len(self._ids))))
        self._dead = []
        self._postings = Postings.from_slots(term_ptr, new_slot[old_slots[keep]].astype(np.int32),
                                             {name: old.columns[name][keep] for name in self.COLUMNS},
                                             self._ids, len(self._ids), np.zeros(0, dtype=np.int64))

    # -- searching ------------------------------------------------------------------------------

    def _search_postings(self, n_queries: int, k: object, score: Any, *, threads: object = None,
                         chunk_queries: int | None = None) -> SearchResults:
        """Top-k results of `n_queries` queries; `score(postings, start, stop, k)` scores a chunk of them.

        k above the number of documents is cut to it (so k=10**9 allocates nothing large). threads: how
        many chunks are scored at once (default: the usable CPUs); chunk_queries: see `search_in_chunks`.
        """
        k = check_count("k", k)
        threads = usable_cpus() if threads is None else check_count("threads", threads)
        if self._postings is None:
            return SearchResults([[] for _ in range(n_queries)], [np.zeros(0, np.float32)] * n_queries)
        postings = self._snapshot()
        k = min(k, max(postings.n_slots, 1))
        slots, scores = search_in_chunks(n_queries, postings.n_slots, k,
                                         lambda start, stop: score(postings, start, stop, k),
                                         threads=threads, chunk_queries=chunk_queries)
        return SearchResults.from_slots(slots, scores, postings.id_table)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to folder `path`, crash-safe (see `index_folder`); returns the path.

        An existing folder is replaced only if it is an index folder (or empty).
        """
        with self._lock:
            if self._postings is None:
                raise InputError("cannot save an empty index that has no vocabulary size yet")
            self.compact()
            postings = self._postings
            id_bytes, id_offsets = encode_ids(postings.ids)
            arrays = {"segment_ptr": postings.segment_ptr, "offsets": postings.offsets,
                      **{name: postings.columns[name].reshape(-1) for name in self.COLUMNS},
                      "id_bytes": id_bytes, "id_offsets": id_offsets}
            header = {"format": self.FORMAT_NAME, "vocab_size": self.vocab_size, "documents": postings.n_slots,
                      "postings": len(postings.offsets), "block_bits": BLOCK_BITS, **self._header(),
                      "metadata": self.metadata}
            return write_index_folder(path, arrays, header)

    @classmethod
    def load(cls: type[Index], path: str | Path, encoder: Any = None, *, mmap: bool = True,
             verify: bool = True) -> Index:
        """Open a saved index; arrays are memory-mapped read-only unless `mmap=False`.

        verify: check every file's sha256 against `index.json` (reads each file once).
        Raises `IndexFormatError` naming the file for anything missing, corrupt, modified or of
        another format or version.
        """
        path = Path(path)
        manifest = read_manifest(path, cls.FORMAT_NAME)
        vocab_size = count_field(manifest, "vocab_size", path, minimum=1)
        n_docs = count_field(manifest, "documents", path)
        n_postings = count_field(manifest, "postings", path)
        index = cls._from_manifest(manifest, path, encoder)
        # Versions 1-2 stored int32 slots; they are split into blocks in memory (save again to map them).
        blocked = manifest["version"] >= 3
        if blocked and manifest.get("block_bits") != BLOCK_BITS:
            raise IndexFormatError(f"{path / MANIFEST_FILE}: block_bits {manifest.get('block_bits')!r}, this "
                                   f"spladerunner reads {BLOCK_BITS}")
        n_blocks = count_blocks(n_docs)
        postings_layout = ({"segment_ptr": (vocab_size * n_blocks + 1, np.int64), "offsets": (n_postings, np.uint16)}
                           if blocked else {"term_ptr": (vocab_size + 1, np.int64), "slots": (n_postings, np.int32)})
        layout = {**postings_layout, **index._column_layout(n_postings), "id_bytes": (None, np.uint8),
                  "id_offsets": (n_docs + 1, np.int64)}
        arrays = read_arrays(path, manifest, layout, mmap=mmap, verify=verify)
        pointers, positions = ((arrays["segment_ptr"], arrays["offsets"]) if blocked
                               else (arrays["term_ptr"], arrays["slots"]))
        if pointers[0] != 0 or pointers[-1] != n_postings or np.any(np.diff(pointers) < 0):
            raise IndexFormatError(f"{path}: postings arrays disagree with each other or with the manifest")
        if blocked:  # only the last block can hold offsets past the last document
            last, _ = gather_ranges(pointers, np.arange(vocab_size, dtype=np.int64) * n_blocks + n_blocks - 1)
            out_of_range = len(last) and int(positions[last].max()) >= n_docs - ((n_blocks - 1) << BLOCK_BITS)
        else:
            out_of_range = n_postings and (int(positions.min()) < 0 or int(positions.max()) >= n_docs)
        if out_of_range:
            raise IndexFormatError(f"{path}: postings name documents the manifest does not have")
        ids = decode_ids(path, arrays["id_bytes"], arrays["id_offsets"])
        if len(set(ids)) != len(ids):
            raise IndexFormatError(f"{path}: document ids are not unique")
        empty = index._empty_columns()
        columns = {name: arrays[name].reshape(-1, *empty[name].shape[1:]) for name in cls.COLUMNS}
        index.vocab_size = vocab_size
        index._ids = ids
        index._slot = dict(zip(ids, range(n_docs)))
        no_dead = np.zeros(0, dtype=np.int64)
        index._postings = (Postings(pointers, positions, columns, ids, n_docs, no_dead) if blocked else
                           Postings.from_slots(pointers, positions, columns, ids, n_docs, no_dead))
        return index
