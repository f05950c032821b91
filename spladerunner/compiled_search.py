"""Exact top-k search over postings compiled with numba (the `fast` extra): the numpy path's results, faster.

The numpy path (`SparseIndex._score`) gathers every posting a query touches into temporaries, sums them
into a corpus-wide score row and selects from it. This kernel walks the same postings in place instead,
one block of documents at a time (the postings' own blocks, see `postings`): for each query term it adds
that block's segment of the term's postings into the block's float64 scores, which stay in the core's
cache, then offers the scores that beat the worst of the k best so far to a k-sized heap, testing 256
scores at a time so that most are passed over in vector instructions. Nothing corpus-sized is allocated
per query, and the kernel releases the GIL, so threads scale.

Results are identical to the numpy path, bit for bit: every score is the same float64 sum taken in the same
order (query terms in order, the weight widened exactly to float64 times the query weight), and ties go
to the lower slot. numpy stays the reference and the fallback when numba is not installed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

SCAN = 256  # scores tested at once for a candidate (the postings' block size is a multiple)

# Every float16 bit pattern's value (exact in float32): numba has no float16 arithmetic, and a lookup beats
# decoding the bits.
FLOAT16_VALUES = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def weight_value(weights: np.ndarray, at: int, float16_values: np.ndarray) -> float:
    """Posting `at`'s weight as float64 (compiled per weight storage by the overload below)."""
    raise NotImplementedError("only called from compiled code")


@overload(weight_value, jit_options={"nogil": True})
def _weight_value(weights, at, float16_values):  # numba matches these names; annotations would have to match too
    if weights.dtype == types.int16:  # float16 bit patterns (see `search`)
        return lambda weights, at, float16_values: np.float64(float16_values[np.uint64(np.uint16(weights[at]))])
    return lambda weights, at, float16_values: np.float64(weights[at])


@njit(nogil=True, cache=True)
def sift_down(heap_scores: np.ndarray, heap_slots: np.ndarray, size: int, at: int) -> None:
    # Min-heap on (score, -slot): the root is the worst kept hit (lowest score, then highest slot).
    score, slot = heap_scores[at], heap_slots[at]
    while True:
        child = 2 * at + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (heap_scores[right] < heap_scores[child] or (
                heap_scores[right] == heap_scores[child] and heap_slots[right] > heap_slots[child])):
            child = right
        if heap_scores[child] < score or (heap_scores[child] == score and heap_slots[child] > slot):
            heap_scores[at], heap_slots[at] = heap_scores[child], heap_slots[child]
            at = child
        else:
            break
    heap_scores[at], heap_slots[at] = score, slot


@njit(nogil=True, cache=True)
def _search(query_ptr: np.ndarray, query_terms: np.ndarray, query_weights: np.ndarray,
           segment_ptr: np.ndarray, offsets: np.ndarray, weights: np.ndarray, float16_values: np.ndarray,
           dead: np.ndarray, n_docs: int, block: int, out_slots: np.ndarray, out_scores: np.ndarray) -> None:
    k = out_slots.shape[1]
    n_blocks = max(1, (n_docs + block - 1) // block)
    scores = np.zeros(min(block, (n_docs + SCAN - 1) // SCAN * SCAN))
    heap_scores = np.empty(k)
    heap_slots = np.empty(k, np.int64)
    for q in range(len(query_ptr) - 1):
        size = 0
        threshold = 0.0  # a hit must score above it: 0, then the worst kept score once k are kept
        for at_block in range(n_blocks):
            start = at_block * block
            stop = min(start + block, n_docs)
            for i in range(query_ptr[q], query_ptr[q + 1]):
                segment = query_terms[i] * n_blocks + at_block
                weight = query_weights[i]
                # Unsigned positions: numba wraps negative indexes, a test and a select per access otherwise.
                for j in range(np.uint64(segment_ptr[segment]), np.uint64(segment_ptr[segment + 1])):
                    scores[offsets[j]] += weight_value(weights, j, float16_values) * weight
            for chunk in range(0, stop - start, SCAN):
                # Most chunks hold no candidate: a test the compiler vectorises (unsigned positions, as above),
                # then the scalar walk only on a hit. The score buffer's length is a multiple of SCAN; its tail
                # past n_docs stays 0.
                hits = 0
                for j in range(np.uint64(chunk), np.uint64(chunk + SCAN)):
                    if scores[j] > threshold:
                        hits += 1
                if hits == 0:
                    continue
                for j in range(np.uint64(chunk), np.uint64(chunk + SCAN)):
                    score = scores[j]
                    if score > threshold:
                        slot = start + np.int64(j)
                        if dead.size and dead[slot]:
                            continue
                        if size < k:
                            # Sift up the new hit (slots arrive ascending, so it is worse than an equal score).
                            at = size
                            size += 1
                            while at > 0:
                                parent = (at - 1) // 2
                                if heap_scores[parent] >= score:
                                    heap_scores[at], heap_slots[at] = heap_scores[parent], heap_slots[parent]
                                    at = parent
                                else:
                                    break
                            heap_scores[at], heap_slots[at] = score, slot
                            if size == k:
                                threshold = heap_scores[0]
                        else:
                            heap_scores[0], heap_slots[0] = score, slot
                            sift_down(heap_scores, heap_slots, size, 0)
                            threshold = heap_scores[0]
            scores[:] = 0.0
        # Pop worst-first into the row from its end: best first, ties by lower slot.
        for rank in range(k - 1, size - 1, -1):
            out_slots[q, rank] = -1
            out_scores[q, rank] = 0.0
        for rank in range(size - 1, -1, -1):
            out_slots[q, rank], out_scores[q, rank] = heap_slots[0], heap_scores[0]
            heap_scores[0], heap_slots[0] = heap_scores[rank], heap_slots[rank]
            sift_down(heap_scores, heap_slots, rank, 0)


def search(query_ptr: np.ndarray, query_terms: np.ndarray, query_weights: np.ndarray, segment_ptr: np.ndarray,
           offsets: np.ndarray, weights: np.ndarray, dead: np.ndarray, n_docs: int, block: int,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (slots [n_queries, k] int64, -1 padded; float64 scores) of CSR queries over blocked postings.

    segment_ptr, offsets, block: as in `postings.Postings` (block: documents per block, a multiple of `SCAN`);
    weights: float32, float16 or uint16 per posting; dead: bool per slot (True = deleted), or empty.
    Runs without the GIL: call it from several threads on disjoint query ranges.
    """
    n_queries = len(query_ptr) - 1
    out_slots = np.empty((n_queries, k), dtype=np.int64)
    out_scores = np.empty((n_queries, k), dtype=np.float64)
    if weights.dtype == np.float16:  # numba has no float16 type: the kernel looks the bits (as int16) up
        weights = weights.view(np.int16)
    _search(np.ascontiguousarray(query_ptr, dtype=np.int64), np.ascontiguousarray(query_terms, dtype=np.int64),
            np.ascontiguousarray(query_weights, dtype=np.float64), np.asarray(segment_ptr), np.asarray(offsets),
            np.asarray(weights), FLOAT16_VALUES, dead, n_docs, block, out_slots, out_scores)
    return out_slots, out_scores
