"""Search kernels shared by the indexes: postings grouped by term, query chunks, exact top-k selection."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Score cells (queries x documents, float64) per search chunk: 512 KiB stays in L2 cache, which measured
# fastest; a corpus larger than this is scored one query at a time.
MAX_SCORE_CELLS = 1 << 16
GROUP = 16  # most score columns per group in top-k selection (a power of 2)
PAD = 64  # score rows are padded to a multiple of this, so top-k can always form groups


def padded_width(n_docs: int) -> int:
    """Columns of a score row for `n_docs` documents: padded for `top_k`'s groups (padding scores 0)."""
    return -(-n_docs // PAD) * PAD


def group_by_term(terms: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Postings in (slot, term) order -> (term_ptr [vocab_size + 1], the stable order that groups them by term).

    Applying the order to the postings' slots keeps them ascending within each term.
    """
    order = np.argsort(terms, kind="stable")
    term_ptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=vocab_size), out=term_ptr[1:])
    return term_ptr, order


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def search_in_chunks(n_queries: int, n_docs: int, k: int, chunk: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                     *, threads: int = 1, chunk_queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (slots [n_queries, k] int64, -1 padded; scores float64) from `chunk(start, stop)` per query chunk.

    chunk_queries: queries per chunk; by default as many as keep a chunk's score matrix within
    `MAX_SCORE_CELLS` (at least one). With threads > 1 the chunks run on that many threads: `chunk`
    must be safe to call concurrently (the kernels only read the postings snapshot).
    """
    if n_docs == 0 or n_queries == 0:
        return np.full((n_queries, k), -1, dtype=np.int64), np.zeros((n_queries, k))
    step = chunk_queries or max(1, MAX_SCORE_CELLS // (n_docs + PAD))
    starts = range(0, n_queries, step)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(starts))) as pool:
            parts = list(pool.map(lambda start: chunk(start, min(start + step, n_queries)), starts))
    else:
        parts = [chunk(start, min(start + step, n_queries)) for start in starts]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k highest positive scores: (columns [rows, k] with -1 padding, scores).

    Columns are split into groups (column c in group c mod n_groups, up to 16 per group); the k-th
    largest group maximum bounds the k-th score from below, so only members of groups reaching it
    are candidates. That costs one vectorised max over the matrix instead of a full partition.
    Candidates are ranked exactly, ties going to the lower column (argpartition picks arbitrarily).
    """
    rows_n, cols_n = scores.shape
    size = 1
    while size < GROUP and cols_n % (2 * size) == 0 and cols_n // (2 * size) >= 2 * k:
        size *= 2
    groups = scores.reshape(rows_n, size, cols_n // size)
    group_max = groups.max(axis=1) if size > 1 else scores
    n_groups = group_max.shape[1]
    bound = np.partition(group_max, n_groups - k, axis=1)[:, n_groups - k] if k < n_groups else np.zeros(rows_n)
    bound = np.maximum(bound, np.finfo(scores.dtype).smallest_subnormal)  # hits score > 0
    rows, hit_groups = np.nonzero(group_max >= bound[:, None])
    candidates = groups[rows, :, hit_groups]
    at, member = np.nonzero(candidates >= bound[rows, None])
    rows, cols, values = rows[at], member * n_groups + hit_groups[at], candidates[at, member]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    out_cols = np.full((rows_n, k), -1, dtype=np.int64)
    out_scores = np.zeros((rows_n, k), dtype=scores.dtype)
    out_cols[rows[keep], rank[keep]] = cols[keep]
    out_scores[rows[keep], rank[keep]] = values[keep]
    return out_cols, out_scores
