import numpy as np
import pytest

from spladerunner.sparse import SparseBatch, SparseVector, sparsify, sparsify_candidates

VOCAB = [f"t{i}" for i in range(10)]


def dense_rows():
    return np.array([
        [0.0, 0.5, 0.0, 2.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.3],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0],
    ], dtype=np.float32)


def test_sparsify_keeps_positive_weights_sorted_by_id():
    batch = sparsify(dense_rows(), vocab=VOCAB)
    assert batch.shape == (3, 10)
    assert batch.nnz.tolist() == [4, 0, 4]
    assert batch[0].ids.tolist() == [1, 3, 4, 9]
    assert batch[0].weights.dtype == np.float32 and batch[0].ids.dtype == np.int32
    np.testing.assert_array_equal(batch.to_dense(), dense_rows())
    assert batch[0].to_dict() == pytest.approx({"t3": 2.0, "t1": 0.5, "t9": 0.3, "t4": 0.1})
    assert list(batch[0].to_dict()) == ["t3", "t1", "t9", "t4"]  # heaviest first


def test_drop_ids_threshold_and_top_k():
    batch = sparsify(dense_rows(), drop_ids=np.array([3]), threshold=0.2, top_k=2)
    assert batch[0].ids.tolist() == [1, 9]
    assert batch[1].ids.tolist() == []
    assert len(batch[2]) == 2 and 9 in batch[2].ids.tolist()


def test_candidates_path_equals_dense_path():
    rng = np.random.default_rng(0)
    dense = np.maximum(rng.normal(size=(6, 50)).astype(np.float32), 0)
    dense[:, 7] = 5.0  # a "special" id that must disappear
    k = 8
    ids = np.argsort(-dense, axis=1)[:, :k]
    from_candidates = sparsify_candidates(ids, np.take_along_axis(dense, ids, 1), vocab_size=50,
                                          drop_ids=np.array([7]), top_k=5)
    from_dense = sparsify(dense.copy(), drop_ids=np.array([7]), top_k=5)
    np.testing.assert_array_equal(from_candidates.indptr, from_dense.indptr)
    np.testing.assert_array_equal(from_candidates.indices, from_dense.indices)
    np.testing.assert_array_equal(from_candidates.values, from_dense.values)


def test_take_and_concat_restore_rows():
    batch = sparsify(dense_rows())
    both = SparseBatch.concat([batch, batch.take(np.array([2, 0]))])
    assert len(both) == 5
    np.testing.assert_array_equal(both.to_dense()[3], dense_rows()[2])
    np.testing.assert_array_equal(both.to_dense()[4], dense_rows()[0])


def test_scipy_shares_arrays():
    import scipy.sparse as scipy_sparse
    batch = sparsify(dense_rows())
    matrix = batch.to_scipy()
    assert isinstance(matrix, scipy_sparse.csr_matrix)
    assert np.shares_memory(matrix.data, batch.values)
    np.testing.assert_array_equal(matrix.toarray(), dense_rows())


def test_from_vectors_validates_and_sorts():
    vectors = [SparseVector(np.array([5, 2]), np.array([1.0, 2.0])), SparseVector(np.array([], int), np.array([]))]
    batch = SparseBatch.from_vectors(vectors, vocab_size=10)
    assert batch[0].ids.tolist() == [2, 5] and batch[0].weights.tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="duplicate"):
        SparseBatch.from_vectors([SparseVector(np.array([1, 1]), np.array([1.0, 1.0]))], vocab_size=10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        SparseBatch.from_vectors([SparseVector(np.array([10]), np.array([1.0]))], vocab_size=10)


def test_dot_is_the_splade_score():
    a = SparseVector(np.array([1, 4, 7], np.int32), np.array([1.0, 2.0, 3.0], np.float32))
    b = SparseVector(np.array([4, 7, 9], np.int32), np.array([0.5, 1.0, 9.0], np.float32))
    assert a.dot(b) == pytest.approx(2.0 * 0.5 + 3.0 * 1.0)


def test_max_by_group_and_heaviest():
    batch = sparsify(dense_rows(), vocab=VOCAB)
    merged = batch.max_by_group(np.array([1, 1, 1]), 3)
    assert merged.nnz.tolist() == [0, 6, 0]
    np.testing.assert_array_equal(merged.to_dense()[1], dense_rows().max(axis=0))
    np.testing.assert_array_equal(batch.max_by_group(np.array([0, 1, 0]), 2).to_dense(),
                                  [dense_rows()[[0, 2]].max(axis=0), dense_rows()[1]])
    top = batch.heaviest(2)
    assert [row.ids.tolist() for row in top] == [[1, 3], [], [0, 9]]  # row 2: 4.0, then the lowest id of three 1.0s
    assert top.nnz.tolist() == [2, 0, 2]
