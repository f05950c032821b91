"""Exact top-k search over postings compiled with numba (the `fast` extra): the numpy path's results, faster.

The numpy path (`SparseIndex._score`) gathers every posting a query touches into temporaries, sums them
into a corpus-wide score row and selects from it. This kernel walks the same postings in place instead:
documents are taken in blocks small enough that a block's float64 scores stay in the core's cache, each
query term's postings are consumed block by block (slots ascend within a term, so one cursor per term
suffices), and each block's scores feed a k-sized heap as they are cleared. Nothing corpus-sized is
allocated per query, and the kernel releases the GIL, so threads scale.

Results are identical to the numpy path, bit for bit: every score is the same float64 sum taken in the same
order (query terms in order, the weight widened exactly to float64 times the query weight), and ties go
to the lower slot. numpy stays the reference and the fallback when numba is not installed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

# Documents per block: 32,768 float64 scores are 256 KiB, which stays in a core's L2 cache.
BLOCK = 1 << 15


def weight_value(weights: np.ndarray, at: int, powers: np.ndarray) -> float:
    """Posting `at`'s weight as float64 (compiled per weight storage by the overload below)."""
    raise NotImplementedError("only called from compiled code")


@overload(weight_value, jit_options={"nogil": True})
def _weight_value(weights, at, powers):  # numba matches these names; annotations would have to match too
    if weights.dtype == types.int16:  # float16 bit patterns (see `search`)
        def float16_value(weights, at, powers):
            # Exactly (implicit 1 + mantissa) x 2^(exponent - 25); subnormals have no implicit 1 (exponent
            # field 0). Weights are > 0, so the sign bit is clear; inf and NaN are never stored.
            bits = np.int64(weights[at])
            exponent = bits >> 10
            mantissa = bits & 0x3FF
            if exponent:
                mantissa += 1024
            return mantissa * powers[exponent]
        return float16_value
    return lambda weights, at, powers: np.float64(weights[at])


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
           term_ptr: np.ndarray, slots: np.ndarray, weights: np.ndarray,
           dead: np.ndarray, n_docs: int, block: int, out_slots: np.ndarray, out_scores: np.ndarray) -> None:
    powers = np.empty(32)
    powers[0] = 2.0 ** -24
    for exponent in range(1, 32):
        powers[exponent] = 2.0 ** (exponent - 25)
    k = out_slots.shape[1]
    scores = np.zeros(min(block, max(n_docs, 1)))
    max_terms = 0
    for q in range(len(query_ptr) - 1):
        max_terms = max(max_terms, query_ptr[q + 1] - query_ptr[q])
    cursor = np.empty(max_terms, np.int64)
    heap_scores = np.empty(k)
    heap_slots = np.empty(k, np.int64)
    for q in range(len(query_ptr) - 1):
        first, n_terms = query_ptr[q], query_ptr[q + 1] - query_ptr[q]
        for i in range(n_terms):
            cursor[i] = term_ptr[query_terms[first + i]]
        size = 0
        for start in range(0, n_docs, block):
            stop = min(start + block, n_docs)
            for i in range(n_terms):
                p, end = cursor[i], term_ptr[query_terms[first + i] + 1]
                if p == end:
                    continue
                # This block's postings of the term end at the first slot >= stop (binary search): the
                # loop below then has no exit test of its own, which lets the compiler unroll it.
                if slots[end - 1] < stop:
                    block_end = end
                else:
                    low, high = p, end - 1
                    while low < high:
                        middle = (low + high) // 2
                        if slots[middle] < stop:
                            low = middle + 1
                        else:
                            high = middle
                    block_end = low
                weight = query_weights[first + i]
                for j in range(p, block_end):
                    scores[slots[j] - start] += weight_value(weights, j, powers) * weight
                cursor[i] = block_end
            # Compare against the heap's worst score rather than 0: once the heap is full few scores pass,
            # so the branch is predictable; the block is then cleared in one pass.
            threshold = heap_scores[0] if size == k else 0.0
            for j in range(stop - start):
                score = scores[j]
                if score > threshold:
                    slot = start + j
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
            scores[:stop - start] = 0.0
        # Pop worst-first into the row from its end: best first, ties by lower slot.
        for rank in range(k - 1, size - 1, -1):
            out_slots[q, rank] = -1
            out_scores[q, rank] = 0.0
        for rank in range(size - 1, -1, -1):
            out_slots[q, rank], out_scores[q, rank] = heap_slots[0], heap_scores[0]
            heap_scores[0], heap_slots[0] = heap_scores[rank], heap_slots[rank]
            sift_down(heap_scores, heap_slots, rank, 0)



def search(query_ptr: np.ndarray, query_terms: np.ndarray, query_weights: np.ndarray, term_ptr: np.ndarray,
           slots: np.ndarray, weights: np.ndarray, dead: np.ndarray, n_docs: int,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (slots [n_queries, k] int64, -1 padded; float64 scores) of CSR queries over term-grouped postings.

    weights: float32, float16 or uint16 per posting; dead: bool per slot (True = deleted), or empty.
    Runs without the GIL: call it from several threads on disjoint query ranges.
    """
    n_queries = len(query_ptr) - 1
    out_slots = np.empty((n_queries, k), dtype=np.int64)
    out_scores = np.empty((n_queries, k), dtype=np.float64)
    if weights.dtype == np.float16:  # numba has no float16 arithmetic: the kernel decodes the bits (as int16)
        weights = weights.view(np.int16)
    _search(np.ascontiguousarray(query_ptr, dtype=np.int64), np.ascontiguousarray(query_terms, dtype=np.int64),
            np.ascontiguousarray(query_weights, dtype=np.float64), np.asarray(term_ptr), np.asarray(slots),
            np.asarray(weights), dead, n_docs, BLOCK, out_slots, out_scores)
    return out_slots, out_scores
