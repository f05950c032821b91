"""SparsEmbedIndex against a brute-force scorer written from the formula, on random vectors (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spladerunner import scoring, sparsembed_index
from spladerunner.errors import IndexFormatError
from spladerunner.sparse import SparseBatch, SparseVector
from spladerunner.sparsembed import SparsEmbedBatch
from spladerunner.sparsembed_index import SparsEmbedIndex

VOCAB, DIM = 40, 6


def random_batch(rng: np.random.Generator, n: int, max_terms: int = 8) -> SparsEmbedBatch:
    """n vectors with 0..max_terms distinct terms, positive weights and relu-like (some zero) embeddings."""
    vectors = []
    for _ in range(n):
        ids = rng.choice(VOCAB, size=rng.integers(0, max_terms + 1), replace=False)
        vectors.append(SparseVector(ids, rng.uniform(0.1, 3.0, len(ids)).astype(np.float32)))
    terms = SparseBatch.from_vectors(vectors, VOCAB)
    embeddings = np.maximum(rng.normal(size=(len(terms.indices), DIM)), 0).astype(np.float32)
    return SparsEmbedBatch(terms, embeddings)


def brute_force(queries: SparsEmbedBatch, documents: SparsEmbedBatch) -> np.ndarray:
    """scores[q, d] = sum over shared terms t of <e_q,t, e_d,t>, by dictionaries."""
    def rows(batch):
        return [dict(zip(v.terms.ids.tolist(), v.embeddings.astype(np.float64))) for v in batch]

    docs = rows(documents)
    return np.array([[sum(float(e @ d[t]) for t, e in q.items() if t in d) for d in docs] for q in rows(queries)])


def ranking(row: np.ndarray, k: int) -> list[int]:
    """Positive scores, best first, ties to the lower document number."""
    return [d for d in np.argsort(-row, kind="stable") if row[d] > 0][:k]


def check(results, expected: np.ndarray, ids: list[str], k: int) -> None:
    assert len(results) == len(expected)
    for q, row in enumerate(expected):
        want = ranking(row, k)
        assert results.ids[q] == [ids[d] for d in want]
        np.testing.assert_allclose(results.scores[q], row[want], rtol=1e-6)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    documents = SparsEmbedBatch.concat([random_batch(rng, 30), random_batch(rng, 25)])
    return documents, random_batch(rng, 12)


def test_exact_search_equals_brute_force(data, monkeypatch):
    documents, queries = data
    # Tiny chunks and blocks: several query chunks and embedding blocks per search.
    monkeypatch.setattr(scoring, "MAX_SCORE_CELLS", 200)  # query chunks are cut in scoring
    monkeypatch.setattr(sparsembed_index, "BLOCK", 7)
    index = SparsEmbedIndex()
    index.add_vectors(documents.take(np.arange(30)))
    index.add_vectors(documents.take(np.arange(30, 55)))  # merged into the first batch's postings
    ids = [str(i) for i in range(55)]
    assert index.ids == ids and len(index) == 55
    check(index.search(queries, k=5), brute_force(queries, documents), ids, 5)
    check(index.search(queries, k=55), brute_force(queries, documents), ids, 55)


def test_ties_go_to_the_earlier_document_and_empty_queries_have_no_hits(data):
    documents, queries = data
    twice = documents.take(np.array([3, 3, 8, 3]))
    index = SparsEmbedIndex()
    index.add_vectors(twice, ["a", "b", "c", "d"])
    empty = SparsEmbedBatch(SparseBatch(np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                                        VOCAB), np.zeros((0, DIM), np.float32))
    assert index.search(empty, k=3).ids == [[], []]
    results = index.search(documents.take(np.array([3])), k=4)
    expected = brute_force(documents.take(np.array([3])), twice)[0]
    assert expected[0] == expected[1] == expected[3] > 0
    check(results, expected[None], ["a", "b", "c", "d"], 4)
    assert results.ids[0][:3] == ["a", "b", "d"]
    assert SparsEmbedIndex(vocab_size=VOCAB, dim=DIM).search(queries, k=2).ids == [[]] * len(queries)


def test_candidates_rescore_the_sparse_top_n(data):
    documents, queries = data
    index = SparsEmbedIndex()
    index.add_vectors(documents)
    ids = index.ids
    exact = brute_force(queries, documents)
    check(index.search(queries, k=5, candidates=len(ids)), exact, ids, 5)
    # With N candidates only the documents of the N highest sparse dot products can be hits.
    sparse = queries.terms.to_dense().astype(np.float64) @ documents.terms.to_dense().T
    restricted = np.zeros_like(exact)
    for q in range(len(queries)):
        keep = ranking(sparse[q], 4)
        restricted[q, keep] = exact[q, keep]
    check(index.search(queries, k=3, candidates=4), restricted, ids, 3)
    with pytest.raises(ValueError, match="candidates"):
        index.search(queries, k=5, candidates=2)


def test_save_load_round_trip(tmp_path, data):
    documents, queries = data
    index = SparsEmbedIndex(metadata={"model": "tiny"})
    index.add_vectors(documents, [f"doc-{i}" for i in range(len(documents))])
    expected = index.search(queries, k=6)
    path = index.save(tmp_path / "index")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    loaded = SparsEmbedIndex.load(path)
    embeddings = loaded._postings.columns["embeddings"]
    assert isinstance(embeddings.base, np.memmap) or isinstance(embeddings, np.memmap)
    assert loaded.metadata == {"model": "tiny"} and loaded.ids == index.ids
    again = loaded.search(queries, k=6)
    assert again.ids == expected.ids
    for a, b in zip(again.scores, expected.scores):
        np.testing.assert_array_equal(a, b)
    # A loaded index takes more documents, and saving over the old folder replaces it.
    more = random_batch(np.random.default_rng(3), 5)
    loaded.add_vectors(more, [f"new-{i}" for i in range(5)])
    loaded.save(path)
    check(SparsEmbedIndex.load(path, mmap=False).search(queries, k=6),
          brute_force(queries, SparsEmbedBatch.concat([documents, more])), loaded.ids, 6)


def test_corrupt_or_foreign_folders_are_refused(tmp_path, data):
    documents, _ = data
    index = SparsEmbedIndex()
    index.add_vectors(documents)
    path = index.save(tmp_path / "index")
    embeddings = path / json.loads((path / "index.json").read_text())["arrays"]["embeddings"]
    raw = bytearray(embeddings.read_bytes())
    raw[-1] ^= 0xFF
    embeddings.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"embeddings-[0-9a-f]{12}.npy: checksum mismatch"):
        SparsEmbedIndex.load(path)
    manifest = json.loads((path / "index.json").read_text())
    (path / "index.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        SparsEmbedIndex.load(path)
    (path / "index.json").write_text(json.dumps({**manifest, "format": "spladerunner-index"}))
    with pytest.raises(IndexFormatError, match="not a spladerunner-sparsembed-index"):
        SparsEmbedIndex.load(path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "notes")


def test_mismatched_vectors_are_refused(data):
    documents, queries = data
    index = SparsEmbedIndex()
    index.add_vectors(documents)
    with pytest.raises(ValueError, match="already indexed"):
        index.add_vectors(documents.take(np.array([0])), ["0"])
    narrow = SparsEmbedBatch(queries.terms, queries.embeddings[:, :3])
    with pytest.raises(ValueError, match="dim 3"):
        index.search(narrow)
