"""SparseIndex: exact search against a brute-force dot product, updates, storage precisions, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from paths import TOKENIZER_JSON

from spladerunner import index_folder, scoring
from spladerunner.bm25 import BM25Encoder
from spladerunner.errors import IndexFormatError
from spladerunner.results import SearchResults
from spladerunner.retrieval import SparseIndex
from spladerunner.scoring import top_k
from spladerunner.sparse import SparseBatch

VOCAB = 40


def random_batch(rng: np.random.Generator, rows: int, *, density: float = 0.15, integer: bool = False,
                 empty_rows: int = 0) -> SparseBatch:
    """Random sparse rows; integer weights in 1..3 make exact score ties common."""
    dense = np.where(rng.random((rows, VOCAB)) < density,
                     rng.integers(1, 4, (rows, VOCAB)) if integer else rng.random((rows, VOCAB)) + 0.01, 0.0)
    dense[:empty_rows] = 0.0
    keep = dense > 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    cols = np.nonzero(keep)[1].astype(np.int32)
    return SparseBatch(indptr, cols, dense[keep].astype(np.float32), VOCAB)


def brute_force(queries: SparseBatch, docs: SparseBatch, ids: list[str], k: int) -> tuple[list, list]:
    """Dense float64 dot products; stable sort = ties go to the earlier document; only scores > 0."""
    scores = queries.to_dense().astype(np.float64) @ docs.to_dense().astype(np.float64).T
    out_ids, out_scores = [], []
    for row in scores:
        order = [d for d in np.argsort(-row, kind="stable") if row[d] > 0][:k]
        out_ids.append([ids[d] for d in order])
        out_scores.append(row[order])
    return out_ids, out_scores


def assert_same(results: SearchResults, expected: tuple[list, list]) -> None:
    assert results.ids == expected[0]
    for got, want in zip(results.scores, expected[1]):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 10, 1000])
def test_search_equals_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    docs, queries = random_batch(rng, 300), random_batch(rng, 25, empty_rows=3)
    index = SparseIndex()
    index.add_vectors(docs, [f"d{i}" for i in range(len(docs))])
    assert_same(index.search(queries, k=k), brute_force(queries, docs, index.ids, k))


def test_search_equals_scipy_product() -> None:
    import scipy.sparse as scipy
    rng = np.random.default_rng(7)
    docs, queries = random_batch(rng, 200), random_batch(rng, 30)
    index = SparseIndex()
    index.add_vectors(docs)
    scores = (queries.to_scipy() @ scipy.csr_matrix(docs.to_scipy()).T).toarray()
    results = index.search(queries, 10)
    for row, got_ids, got_scores in zip(scores, results.ids, results.scores):
        want = [d for d in np.argsort(-row, kind="stable") if row[d] > 0][:10]
        assert got_ids == [str(d) for d in want]
        np.testing.assert_allclose(got_scores, row[want], rtol=1e-6)


def test_ties_go_to_the_earlier_document_whatever_the_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    docs, queries = random_batch(rng, 400, integer=True, density=0.1), random_batch(rng, 40, integer=True)
    index = SparseIndex()
    index.add_vectors(docs)
    expected = brute_force(queries, docs, index.ids, 7)
    scores = queries.to_dense().astype(np.float64) @ docs.to_dense().astype(np.float64).T
    assert max(len(set(row[row > 0])) < np.count_nonzero(row) for row in scores)  # ties exist
    assert_same(index.search(queries, k=7), expected)
    monkeypatch.setattr(scoring, "MAX_SCORE_CELLS", 1000)  # 2 queries per chunk
    assert_same(index.search(queries, k=7), expected)


def test_top_k_breaks_ties_by_column_and_skips_zeros() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 1.0]])
    cols, values = top_k(scores, 2)
    assert cols.tolist() == [[1, 2], [-1, -1], [0, 4]]
    assert values.tolist() == [[3.0, 3.0], [0.0, 0.0], [2.0, 1.0]]


def test_empty_queries_and_empty_index() -> None:
    rng = np.random.default_rng(2)
    queries = random_batch(rng, 4, empty_rows=4)
    empty = SparseIndex()
    assert empty.search(queries).ids == [[]] * 4
    index = SparseIndex()
    index.add_vectors(random_batch(rng, 20))
    results = index.search(queries, k=3)
    assert results.ids == [[]] * 4 and all(s.size == 0 for s in results.scores)
    none = SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), VOCAB)
    assert len(index.search(none)) == 0


def test_adds_deletes_and_replacements_match_a_fresh_index() -> None:
    rng = np.random.default_rng(3)
    first, second, replacement = random_batch(rng, 100), random_batch(rng, 80), random_batch(rng, 10)
    index = SparseIndex()
    index.add_vectors(first, [f"a{i}" for i in range(100)])
    queries = random_batch(rng, 20)
    index.search(queries)  # flushes, so the next add merges into existing postings
    index.add_vectors(second, [f"b{i}" for i in range(80)])
    assert index.delete(["a3", "b7", "a50"]) == 3
    with pytest.raises(KeyError):
        index.delete(["a3"])
    assert index.delete(["a3", "zz"], missing_ok=True) == 0
    replaced = [f"a{i}" for i in range(10, 20)]
    index.add_vectors(replacement, replaced, replace=True)
    with pytest.raises(ValueError, match="already indexed"):
        index.add_vectors(replacement, replaced)
    # The equivalent fresh index: survivors in insertion order, replacements at the end.
    live = [i for i in range(180) if i not in (3, 50, 107) and not 10 <= i < 20]
    both = SparseBatch.concat([first, second])
    fresh_docs = SparseBatch.concat([both.take(np.array(live)), replacement])
    fresh_ids = [(f"a{i}" if i < 100 else f"b{i - 100}") for i in live] + replaced
    assert index.ids == fresh_ids and len(index) == 177 and "a3" not in index and "a10" in index
    expected = brute_force(queries, fresh_docs, fresh_ids, 10)
    assert_same(index.search(queries), expected)
    index.compact()
    assert_same(index.search(queries), expected)
    np.testing.assert_array_equal(index.to_batch().to_dense(), fresh_docs.to_dense())
    np.testing.assert_array_equal(index.document_frequency(), np.bincount(fresh_docs.indices, minlength=VOCAB))


@pytest.mark.parametrize("precision", ["float16", "impact"])
def test_reduced_precision_is_exact_search_over_the_stored_weights(precision: str) -> None:
    rng = np.random.default_rng(4)
    docs, queries = random_batch(rng, 300), random_batch(rng, 30)
    index = SparseIndex(precision=precision)
    index.add_vectors(docs)
    stored = index.to_batch()
    error = np.abs(stored.to_dense() - docs.to_dense()).max()
    assert 0 < error <= (0.005 if precision == "impact" else 1e-3)
    assert_same(index.search(queries, k=10), brute_force(queries, stored, index.ids, 10))
    assert index._postings.columns["weights"].dtype == (np.uint16 if precision == "impact" else np.float16)


def test_impact_overflow_and_invalid_inputs() -> None:
    rng = np.random.default_rng(5)
    big = random_batch(rng, 3)
    big = SparseBatch(big.indptr, big.indices, big.values * 1000, VOCAB)
    with pytest.raises(ValueError, match="does not fit"):
        SparseIndex(precision="impact").add_vectors(big)
    with pytest.raises(ValueError, match="precision"):
        SparseIndex(precision="int4")
    index = SparseIndex()
    docs = random_batch(rng, 5)
    with pytest.raises(ValueError, match="> 0"):
        index.add_vectors(SparseBatch(docs.indptr, docs.indices, -docs.values, VOCAB))
    with pytest.raises(ValueError, match="duplicate"):
        index.add_vectors(docs, ["x", "x", "y", "z", "w"])
    index.add_vectors(docs)
    with pytest.raises(ValueError, match="vocab_size"):
        index.search(SparseBatch(docs.indptr, docs.indices, docs.values, VOCAB + 1))
    with pytest.raises(ValueError, match="k must"):
        index.search(docs, k=0)
    with pytest.raises(ValueError, match="no encoder"):
        index.search(["some text"])


def test_save_load_roundtrip_is_memory_mapped_and_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    docs, queries = random_batch(rng, 150), random_batch(rng, 20)
    for precision in ("float32", "float16", "impact"):
        index = SparseIndex(precision=precision, metadata={"note": "ünïcode"})
        index.add_vectors(docs, [f"doc-{i}-é" for i in range(150)])
        index.delete(["doc-4-é"])
        before = index.search(queries)
        path = index.save(tmp_path / precision)
        loaded = SparseIndex.load(path)
        assert isinstance(loaded._postings.offsets, np.memmap) and loaded.metadata == {"note": "ünïcode"}
        assert loaded.ids == index.ids and loaded.precision == precision
        after = loaded.search(queries)
        assert after.ids == before.ids
        for a, b in zip(after.scores, before.scores):
            np.testing.assert_array_equal(a, b)
        loaded.add_vectors(random_batch(rng, 5), [f"new{i}" for i in range(5)])  # mmap is read-only: copies
        loaded.delete(["doc-0-é"])
        loaded.save(path)  # overwrite in place, while its old arrays are still mapped
        assert len(SparseIndex.load(path)) == 153
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def array_file(path: Path, name: str) -> Path:
    """The file holding array `name` of a saved index (files are named per save)."""
    return path / json.loads((path / "index.json").read_text())["arrays"][name]


def test_corrupt_missing_or_foreign_files_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    index = SparseIndex()
    index.add_vectors(random_batch(rng, 50))
    path = index.save(tmp_path / "index")
    weights = array_file(path, "weights")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"weights-[0-9a-f]{12}.npy: checksum mismatch"):
        SparseIndex.load(path)
    assert len(SparseIndex.load(path, verify=False)) == 50  # size matches; the caller opted out
    weights.unlink()
    with pytest.raises(IndexFormatError, match=r"weights-[0-9a-f]{12}.npy: missing"):
        SparseIndex.load(path)
    index.save(path)
    manifest = json.loads((path / "index.json").read_text())
    manifest = {**manifest, "version": 99}
    (path / "index.json").write_text(json.dumps({**manifest, "checksum": index_folder.header_checksum(manifest)}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        SparseIndex.load(path)
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        SparseIndex.load(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "other")


def test_a_crash_mid_save_leaves_the_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    old = SparseIndex()
    old.add_vectors(random_batch(rng, 30))
    path = old.save(tmp_path / "index")
    new = SparseIndex()
    new.add_vectors(random_batch(rng, 60))
    calls = []

    def crash_on_third(file: Path) -> str:
        calls.append(file)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(file)

    real = index_folder._sha256
    monkeypatch.setattr(index_folder, "_sha256", crash_on_third)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    assert len(SparseIndex.load(path)) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


@pytest.fixture(scope="module")
def bm25() -> BM25Encoder:
    return BM25Encoder(TOKENIZER_JSON)


def test_documents_as_texts_or_dicts_through_an_encoder(bm25: BM25Encoder) -> None:
    docs = [{"id": "x1", "title": "Cats", "text": "Cats purr and sleep all day."},
            {"id": 7, "title": "", "text": "Dogs bark at the mail carrier."},
            {"id": "x3", "text": "Parrots can mimic human speech."}]
    bm25.fit([d.get("title", "") + " " + d["text"] for d in docs])
    index = SparseIndex(bm25)
    index.add(docs)
    assert index.ids == ["x1", "7", "x3"]
    assert index.search("why do dogs bark", k=2).ids == [["7"]]
    assert index.search(["purring cats", "parrots"]).ids[1] == ["x3"]
    index.add(["A plain text about cats."])
    assert index.ids[-1] == "3"
    index.add([{"id": "x1", "title": "Birds", "text": "Birds sing."}], replace=True)
    assert index.search("cats").ids == [["3"]]
    with pytest.raises(ValueError, match="no id field"):
        index.add([{"text": "no id"}])
    with pytest.raises(ValueError, match="none of the fields"):
        index.add([{"id": "q", "body": "wrong field"}])
    with pytest.raises(TypeError):
        index.add([3])
