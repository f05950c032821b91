"""The numba search kernel (`compiled_search`) against the numpy path and brute force: bit-identical results."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_retrieval import assert_same, brute_force

from spladerunner.errors import InputError
from spladerunner.postings import BLOCK
from spladerunner.results import SearchResults
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch

VOCAB = 200


def corpus(rng: np.random.Generator, rows: int, terms: int, *, integer: bool) -> SparseBatch:
    """Rows of `terms` distinct random terms; integer weights in 1..3 make exact score ties common."""
    indices = np.sort(np.argsort(rng.random((rows, VOCAB)), axis=1)[:, :terms], axis=1).astype(np.int32).ravel()
    values = (rng.integers(1, 4, len(indices)) if integer else rng.random(len(indices)) + 0.01).astype(np.float32)
    return SparseBatch(np.arange(rows + 1, dtype=np.int64) * terms, indices, values, VOCAB)


def same(a: SearchResults, b: SearchResults) -> None:
    assert a.ids == b.ids
    for x, y in zip(a.scores, b.scores):
        assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def many_blocks() -> tuple[SparseBatch, SparseBatch]:
    """More documents than two of the kernel's blocks, so postings cross block boundaries; tied weights.

    The queries reach enough postings (~1.2M) for a search to use 3 threads.
    """
    rng = np.random.default_rng(7)
    return corpus(rng, 2 * BLOCK + 1234, 6, integer=True), corpus(rng, 120, 5, integer=True)


@pytest.mark.parametrize("precision", ["float32", "float16", "impact"])
def test_numba_equals_numpy_bit_for_bit_across_blocks_with_ties_and_deletions(many_blocks, precision: str) -> None:
    docs, queries = many_blocks
    indexes = {kernel: SparseIndex(precision=precision, kernel=kernel) for kernel in ("numba", "numpy")}
    for index in indexes.values():
        index.add_vectors(docs)
        index.delete([str(i) for i in range(0, len(docs), 5)])
    assert indexes["numba"]._threads_for(queries, 3) == 3
    for k in (1, 10, 700):
        numpy_results = indexes["numpy"].search(queries, k=k)
        same(indexes["numba"].search(queries, k=k, threads=1), numpy_results)
        same(indexes["numba"].search(queries, k=k, threads=3), numpy_results)
    # Ties are common here: the kernel must keep the lower slot among equal scores, as numpy does.
    assert any(len(set(s.tolist())) < len(s) for s in numpy_results.scores)


@pytest.mark.parametrize("k", [1, 7, 1000])
def test_numba_equals_brute_force_with_empty_queries_and_pending_documents(k: int) -> None:
    rng = np.random.default_rng(k)
    first, later = corpus(rng, 300, 12, integer=False), corpus(rng, 200, 12, integer=False)
    docs = SparseBatch.concat([first, later])
    queries = SparseBatch.concat([SparseBatch(np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                                              VOCAB), corpus(rng, 30, 8, integer=False)])
    index = SparseIndex(kernel="numba")
    index.add_vectors(first)
    index.search(queries, k=k)
    index.add_vectors(later)  # pending until the next search merges them
    ids = [str(i) for i in range(len(docs))]
    assert_same(index.search(queries, k=k), brute_force(queries, docs, ids, k))


def test_a_memory_mapped_index_searches_with_the_kernel(tmp_path: Path, many_blocks) -> None:
    docs, queries = many_blocks
    index = SparseIndex(precision="float16", kernel="numpy")
    index.add_vectors(docs)
    loaded = SparseIndex.load(index.save(tmp_path / "index"))
    assert loaded.kernel == "auto"
    same(loaded.search(queries, k=20), index.search(queries, k=20))


def test_concurrent_searches_from_many_threads_agree(many_blocks) -> None:
    docs, queries = many_blocks
    index = SparseIndex(kernel="numba")
    index.add_vectors(docs)
    expected = index.search(queries, k=10, threads=1)
    assert index._threads_for(queries, 2) == 2  # each search also spreads its batch over threads
    results: list[SearchResults] = []
    workers = [threading.Thread(target=lambda: results.append(index.search(queries, k=10))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 4
    for result in results:
        same(result, expected)


def test_bad_kernel_and_threads_are_refused() -> None:
    with pytest.raises(InputError, match="kernel must be one of"):
        SparseIndex(kernel="rust")
    index = SparseIndex()
    index.add_vectors(corpus(np.random.default_rng(0), 10, 3, integer=False))
    with pytest.raises(InputError, match="threads must be an integer >= 1"):
        index.search(corpus(np.random.default_rng(1), 2, 3, integer=False), threads=0)


def test_without_numba_auto_falls_back_to_numpy_and_numba_is_an_error() -> None:
    code = """
import sys
sys.modules["numba"] = None  # as if numba were not installed
import numpy as np
from spladerunner.errors import InputError
from spladerunner.postings import BLOCK
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch
index = SparseIndex()
index.add_vectors(SparseBatch(np.array([0, 2]), np.array([1, 3], np.int32), np.array([0.5, 1.0], np.float32), 8))
print(index.search(SparseBatch(np.array([0, 1]), np.array([3], np.int32), np.array([2.0], np.float32), 8)).ids)
try:
    SparseIndex(kernel="numba")
except InputError as error:
    print(error)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "[['0']]"
    assert 'kernel "numba" needs numba: pip install "spladerunner[fast]"' in out


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_adds_across_block_boundaries_deletes_compaction_and_reload_equal_brute_force(tmp_path: Path,
                                                                                        kernel: str) -> None:
    """Postings are split into blocks of `BLOCK` documents: merging adds that straddle block boundaries,
    compacting (which renumbers slots across blocks) and saving keep every search equal to brute force."""
    rng = np.random.default_rng(11)
    docs = corpus(rng, 2 * BLOCK + 300, 4, integer=False)
    queries = corpus(rng, 25, 6, integer=False)
    index = SparseIndex(kernel=kernel)
    for rows in (slice(0, 50_000), slice(50_000, 100_000), slice(100_000, len(docs))):
        index.add_vectors(docs.take(np.arange(len(docs))[rows]), [str(i) for i in range(len(docs))[rows]])
        index.search(queries, k=3)  # merges this add
    dead = set(range(3, len(docs), 3)) | set(range(60_000, 80_000))  # most of block 0's tail
    index.delete([str(i) for i in sorted(dead)])
    alive = np.array([i for i in range(len(docs)) if i not in dead])
    expected = brute_force(queries, docs.take(alive), [str(i) for i in alive], 50)
    assert_same(index.search(queries, k=50), expected)
    index.compact()
    assert index._postings.n_blocks == 2  # slots were renumbered into fewer blocks
    assert_same(index.search(queries, k=50), expected)
    loaded = SparseIndex.load(index.save(tmp_path / "index"))
    loaded.kernel = kernel
    assert_same(loaded.search(queries, k=50), expected)
