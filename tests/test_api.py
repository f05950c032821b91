"""The Python API users of fastembed and sentence-transformers expect: any iterable of str, a lazy stream
(`expand_iter`), `decode`, a similarity matrix and an opt-in progress line; on the real splade-tiny."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from paths import scifact_passages, scifact_queries

from spladerunner import Expander, InputError
from spladerunner.errors import InputTypeError
from spladerunner.sparse import SparseBatch, SparseVector

DOCUMENTS = scifact_passages(0, 6) + ["", "BRCA1 mutations"]
QUERIES = scifact_queries(0, 3)


@pytest.fixture(scope="module")
def expander(splade_tiny_export) -> Expander:
    return Expander(splade_tiny_export, precision="fp32")


@pytest.fixture(scope="module")
def reference(expander) -> SparseBatch:
    return expander.expand_batch(DOCUMENTS)


def same(batch: SparseBatch, reference: SparseBatch) -> None:
    """The same terms with the same weights (fp32 kernels may differ by an ulp between batch shapes)."""
    np.testing.assert_array_equal(batch.indptr, reference.indptr)
    np.testing.assert_array_equal(batch.indices, reference.indices)
    np.testing.assert_allclose(batch.values, reference.values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [tuple, lambda t: (x for x in t), np.array, lambda t: np.array(t, dtype=object),
                                  lambda t: [np.str_(x) for x in t]],
                         ids=["tuple", "generator", "numpy-unicode", "numpy-object", "numpy-str-items"])
def test_any_iterable_of_str_gives_the_list_result(expander, reference, make):
    same(expander.expand_batch(make(DOCUMENTS)), reference)
    vectors = expander.expand(make(DOCUMENTS))
    assert isinstance(vectors, list) and len(vectors) == len(DOCUMENTS)
    same(SparseBatch.from_vectors(vectors, reference.vocab_size), reference)


def test_a_single_str_or_numpy_str_is_one_vector(expander, reference):
    for text in (DOCUMENTS[0], np.str_(DOCUMENTS[0])):
        vector = expander.expand(text)
        assert isinstance(vector, SparseVector)
        np.testing.assert_array_equal(vector.ids, reference[0].ids)


def test_a_generator_is_read_once(expander, reference):
    pulled = []

    def texts():
        for text in DOCUMENTS:
            pulled.append(text)
            yield text

    same(expander.expand_batch(texts()), reference)
    assert pulled == DOCUMENTS


@pytest.mark.parametrize("texts, message", [
    (b"bytes text", "decode bytes first"),
    (["ok", b"raw"], r"texts\[1\] is bytes, expected str: decode bytes first"),
    ((t for t in ["ok", "fine", 3]), r"texts\[2\] is int"),
    (np.array([b"a", b"b"]), r"texts\[0\] is bytes"),
    (np.array([["a"], ["b"]]), "1-D array"),
    ({"a": 1}, "ordered iterable"),
    ({"a", "b"}, "ordered iterable"),
    (7, "iterable of str"),
])
def test_bad_texts_are_named(expander, texts, message):
    with pytest.raises(InputTypeError, match=message):
        expander.expand(texts)


def test_expand_iter_streams_lazily_in_input_order(expander, reference):
    pulled = []

    def texts():
        for i in range(10_000):
            pulled.append(i)
            yield DOCUMENTS[i % len(DOCUMENTS)]

    stream = expander.expand_iter(texts(), batch_size=4)
    first = next(stream)
    assert len(pulled) == 4  # only the first chunk was read
    vectors = [first] + [vector for _, vector in zip(range(1, 13), stream)]
    same(SparseBatch.from_vectors(vectors, reference.vocab_size), reference.take(np.arange(13) % len(DOCUMENTS)))
    assert len(pulled) <= 16


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_expand_iter_equals_expand(expander, batch_size):
    options = {"query": True, "top_k": 7, "threshold": 0.1}
    expected = expander.expand_batch(DOCUMENTS, **options)
    got = SparseBatch.from_vectors(list(expander.expand_iter(iter(DOCUMENTS), batch_size=batch_size, **options)),
                                   expected.vocab_size)
    same(got, expected)


def test_expand_iter_checks_arguments_at_the_call_and_names_positions(expander):
    with pytest.raises(InputError, match="batch_size"):
        expander.expand_iter(DOCUMENTS, batch_size=0)
    with pytest.raises(InputTypeError, match="decode bytes first"):
        expander.expand_iter(b"abc")
    stream = expander.expand_iter(["a", "b", "c", None], batch_size=3)
    assert len(list(zip(range(3), stream))) == 3
    with pytest.raises(InputTypeError, match=r"texts\[3\] is NoneType"):  # its position in the whole stream
        next(stream)


def test_decode_lists_tokens_heaviest_first(expander, reference):
    decoded = reference.decode()
    assert len(decoded) == len(DOCUMENTS) and decoded[6] == []
    for row, vector in zip(decoded, reference):
        assert row == list(vector.to_dict().items())  # to_dict is decode as a dict
        weights = [w for _, w in row]
        assert weights == sorted(weights, reverse=True)
    assert reference.decode(top_k=3)[0] == decoded[0][:3]
    bare = SparseBatch(reference.indptr, reference.indices, reference.values, reference.vocab_size)
    assert expander.decode(bare, top_k=5) == [row[:5] for row in decoded]
    assert expander.decode(bare[0]) == decoded[0]
    with pytest.raises(InputError, match="no vocabulary"):
        bare[0].decode()
    with pytest.raises(InputError, match="top_k"):
        reference.decode(top_k=0)


def test_similarity_matrix_equals_dense_dot_products(expander, reference):
    queries = expander.expand_batch(QUERIES, query=True)
    expected = queries.to_dense().astype(np.float64) @ reference.to_dense().astype(np.float64).T
    scores = expander.similarity(QUERIES, DOCUMENTS)
    assert scores.shape == (len(QUERIES), len(DOCUMENTS)) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)
    assert (scores[:, 6] == 0).all()  # the empty document
    for i, j in [(0, 0), (2, 5), (1, 7)]:
        assert scores[i, j] == pytest.approx(queries[i].dot(reference[j]), rel=1e-12)
    np.testing.assert_allclose(queries.dot(reference, max_bytes=1), expected, rtol=1e-12, atol=1e-12)  # row blocks
    np.testing.assert_array_equal(expander.similarity(queries, reference), scores)
    assert reference.dot(queries).shape == (len(DOCUMENTS), len(QUERIES))
    with pytest.raises(InputError, match="vocabularies differ"):
        queries.dot(SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 10))


def test_progress_is_opt_in(expander, monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    expander.expand(DOCUMENTS)
    list(expander.expand_iter(DOCUMENTS, batch_size=3))
    assert stderr.getvalue() == ""
    expander.expand(DOCUMENTS, progress=True)
    assert stderr.getvalue().endswith("\n")
    assert stderr.getvalue().rstrip("\n").split("\r")[-1].startswith(f"expanded: {len(DOCUMENTS)}/{len(DOCUMENTS)} (")
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    list(expander.expand_iter(iter(DOCUMENTS), batch_size=3, progress=True))
    assert stderr.getvalue().rstrip("\n").split("\r")[-1].startswith(f"expanded: {len(DOCUMENTS)} (")  # no total
