"""Engine formats: Qdrant (for real, local mode), OpenSearch/Elasticsearch objects, Anserini files, scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paths import SCIFACT, SPLADE_QUERIES, TOKENIZER_JSON

from spladerunner.adapters import (
    anserini_documents,
    anserini_queries,
    escape_token,
    from_qdrant,
    from_scipy,
    from_token_weights,
    read_anserini_documents,
    read_anserini_queries,
    read_impact_queries,
    to_qdrant,
    to_token_weights,
    unescape_token,
)
from spladerunner.bm25 import BM25Encoder
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch
from spladerunner.tokenization import load_tokenizer, vocabulary

SCIFACT_CORPUS = SCIFACT / "corpus.jsonl"


@pytest.fixture(scope="module")
def vocab() -> list[str]:
    return vocabulary(load_tokenizer(TOKENIZER_JSON))


@pytest.fixture(scope="module")
def dl19(vocab: list[str]) -> tuple[list[str], list[str], SparseBatch]:
    return read_impact_queries(SPLADE_QUERIES / "dl19.splade-pp-ed.jsonl", vocab)


def assert_batches_equal(a: SparseBatch, b: SparseBatch) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_escaping_is_reversible_and_yields_valid_field_names(vocab: list[str]) -> None:
    tokens = [t for t in vocab if t]
    names = [escape_token(t) for t in tokens]
    assert not any("." in n or not n for n in names)
    assert len(set(names)) == len(tokens)
    assert [unescape_token(n) for n in names] == tokens
    assert escape_token("u.s.") == "u%2Es%2E" and escape_token("%") == "%25" and escape_token("##ing") == "##ing"
    assert unescape_token(escape_token("%2E.")) == "%2E."
    with pytest.raises(ValueError):
        escape_token("")


def test_token_weight_objects_roundtrip(dl19, vocab: list[str]) -> None:
    _, _, queries = dl19
    objects = to_token_weights(queries)
    assert all(all(isinstance(k, str) and "." not in k and v > 0 for k, v in o.items()) for o in objects)
    assert_batches_equal(from_token_weights(objects, vocab), queries)
    dotted = SparseBatch(np.array([0, 2]), np.array([1012, 2149], np.int32), np.array([0.5, 1e-40], np.float32),
                         len(vocab), vocab)  # "." and a subnormal weight
    assert to_token_weights(dotted) == [{"%2E": 0.5}]
    assert to_token_weights(dotted, escape=False) == [{".": 0.5}]
    json.dumps(objects)  # plain JSON types for the engines' clients


@pytest.mark.parametrize("name, limit", [("dl19.splade-pp-ed.jsonl", None),
                                         ("msmarco-dev-subset.splade-pp-ed.jsonl", 300)])
def test_anserini_query_tsv_roundtrips_the_shared_query_files(name: str, limit: int | None,
                                                              vocab: list[str]) -> None:
    qids, _, queries = read_impact_queries(SPLADE_QUERIES / name, vocab)
    if limit:
        qids, queries = qids[:limit], queries.take(np.arange(limit))
    lines = list(anserini_queries(qids, queries, vocab, scale=1))  # impacts are already integers
    first = lines[0].split("\t")
    assert first[0] == qids[0]
    source = json.loads((SPLADE_QUERIES / name).read_text().splitlines()[0])["impacts"]
    assert {t: first[1].split().count(t) for t in source} == source
    ids, parsed = read_anserini_queries(lines, vocab, scale=1)
    assert ids == qids
    assert_batches_equal(parsed, queries)


def test_anserini_json_vector_collection(vocab: list[str], dl19) -> None:
    qids, texts, queries = dl19
    scaled = SparseBatch(queries.indptr, queries.indices, queries.values / 1000, queries.vocab_size, vocab)
    lines = list(anserini_documents(qids, scaled, contents=texts))
    record = json.loads(lines[0])
    assert set(record) == {"id", "contents", "vector"} and record["contents"] == texts[0]
    assert all(isinstance(v, int) and v > 0 for v in record["vector"].values())
    ids, parsed = read_anserini_documents(lines, vocab)
    assert ids == qids
    quantised = np.rint(scaled.values.astype(np.float64) * 100) / 100
    np.testing.assert_allclose(parsed.values, quantised[quantised > 0], rtol=1e-6)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        read_anserini_documents(['{"id": "x", "vector": {"not-a-token": 3}}'], vocab)
    with pytest.raises(ValueError, match="one entry per vector"):
        list(anserini_documents(qids[:-1], scaled))


def test_scipy_roundtrip(dl19) -> None:
    import scipy.sparse as sparse
    _, _, queries = dl19
    matrix = queries.to_scipy()
    assert_batches_equal(from_scipy(matrix), queries)
    assert_batches_equal(from_scipy(matrix.tocsc()), queries)
    negative = matrix.copy()
    negative.data[0] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        from_scipy(negative)
    duplicates = sparse.coo_matrix(([1.0, 2.0, 0.0], ([0, 0, 1], [5, 5, 7])), shape=(2, 10))
    summed = from_scipy(duplicates)
    assert summed[0].to_id_dict() == {5: 3.0} and len(summed[1]) == 0


def test_qdrant_local_mode_gives_our_top_k(dl19, vocab: list[str]) -> None:
    from qdrant_client import QdrantClient, models

    _, _, queries = dl19
    corpus = [json.loads(line) for line in SCIFACT_CORPUS.read_text().splitlines()[:400]]
    encoder = BM25Encoder(TOKENIZER_JSON)
    docs = encoder.fit_expand([d["title"] + " " + d["text"] for d in corpus])
    index = SparseIndex()
    index.add_vectors(docs, [d["_id"] for d in corpus])
    ours = index.search(queries, k=10)

    points = to_qdrant(docs)
    assert_batches_equal(from_qdrant(points, len(vocab)), docs)
    client = QdrantClient(":memory:")
    client.create_collection("docs", vectors_config={},
                             sparse_vectors_config={"splade": models.SparseVectorParams()})
    client.upsert("docs", [models.PointStruct(id=i, vector={"splade": v}, payload={"doc": d["_id"]})
                           for i, (v, d) in enumerate(zip(points, corpus))])
    for q, vector in enumerate(to_qdrant(queries)):
        hits = client.query_points("docs", query=vector, using="splade", limit=10, with_payload=True).points
        hits = [h for h in hits if h.score > 0]
        np.testing.assert_allclose([h.score for h in hits], ours.scores[q], rtol=1e-5)
        assert [h.payload["doc"] for h in hits] == ours.ids[q]


@pytest.mark.parametrize("name", ["dl19.splade-pp-ed.jsonl", "msmarco-dev-subset.splade-pp-ed.jsonl"])
def test_whole_shared_query_files_roundtrip_as_vector_collections(name: str, vocab: list[str]) -> None:
    qids, texts, queries = read_impact_queries(SPLADE_QUERIES / name, vocab)
    lines = list(anserini_documents(qids, queries, vocab, scale=1, contents=texts))
    originals = [json.loads(line) for line in (SPLADE_QUERIES / name).read_text().splitlines()]
    assert [json.loads(line)["vector"] for line in lines] == [r["impacts"] for r in originals]
    ids, parsed = read_anserini_documents(lines, vocab, scale=1)
    assert ids == qids and len(ids) == len(originals)
    assert_batches_equal(parsed, queries)
