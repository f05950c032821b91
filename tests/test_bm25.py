"""BM25 over WordPiece tokens: the formula, SciFact effectiveness, and bm25s agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from paths import SCIFACT, TOKENIZER_JSON

from spladerunner.bm25 import BM25Encoder
from spladerunner.documents import document_texts
from spladerunner.evaluation import evaluate, load_beir
from spladerunner.retrieval import SparseIndex
from spladerunner.tokenization import token_counts


@pytest.fixture(scope="module")
def encoder() -> BM25Encoder:
    return BM25Encoder(TOKENIZER_JSON)


def test_weights_follow_the_formula(encoder: BM25Encoder) -> None:
    corpus = ["cats cats dogs", "dogs birds", "fish"]
    encoder = BM25Encoder(TOKENIZER_JSON, k1=1.2, b=0.75).fit(corpus)
    docs = encoder.expand_batch(corpus)
    cats = encoder.tokenizer.token_to_id("cats")
    row = docs[0].to_id_dict()
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    avgdl = 6 / 3
    assert row[cats] == pytest.approx(idf * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 3 / avgdl)), rel=1e-6)
    assert encoder.parameters() == {"k1": 1.2, "b": 0.75, "n_docs": 3, "avgdl": 2.0}


def test_queries_are_binary_and_special_tokens_are_not_terms(encoder: BM25Encoder) -> None:
    query = encoder.expand_batch(["[CLS] the the cat [SEP] [MASK] Ωmega"], query=True)[0]
    specials = {encoder.tokenizer.token_to_id(t) for t in ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]"]}
    assert not specials & set(query.ids.tolist())
    assert np.all(query.weights == 1.0) and len(query) == len(set(query.ids.tolist()))
    assert query.ids.tolist() == sorted(query.ids.tolist())
    assert "cat" in query.to_dict()


def test_documents_need_fit_and_empty_texts_work(encoder: BM25Encoder) -> None:
    with pytest.raises(ValueError, match="fit"):
        BM25Encoder(TOKENIZER_JSON).expand_batch(["text"])
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Encoder(TOKENIZER_JSON).fit([])
    batch = BM25Encoder(TOKENIZER_JSON).fit(["a b", "c"]).expand_batch(["", "a", ""])
    assert batch.nnz.tolist() == [0, 1, 0]
    fitted = BM25Encoder(TOKENIZER_JSON)
    together = fitted.fit_expand(["a b", "c", ""])
    np.testing.assert_array_equal(together.values, fitted.expand_batch(["a b", "c", ""]).values)
    assert len(token_counts(encoder.tokenizer, [], encoder.drop_ids, encoder.vocab)) == 0


@pytest.fixture(scope="module")
def scifact(encoder: BM25Encoder):
    data = load_beir(SCIFACT)
    texts = document_texts(data.corpus, key="_id")[1]
    index = SparseIndex(encoder)
    index.add_vectors(encoder.fit_expand(texts), [d["_id"] for d in data.corpus])
    query_ids, query_texts = data.judged_queries()
    return data, texts, index, query_ids, query_texts


def test_scifact_ndcg_is_in_the_published_bm25_range(scifact) -> None:
    data, _, index, query_ids, query_texts = scifact
    metrics = evaluate(index.search(query_texts, k=100).to_run(query_ids), data.qrels)
    # Anserini BM25 on SciFact: 0.665 (flat) to 0.672 (multifield). WordPiece tokens get 0.6715.
    assert 0.665 <= metrics["ndcg@10"] <= 0.672
    assert metrics["recall@100"] > 0.9


def test_same_top10_as_bm25s_on_the_same_tokens(scifact, encoder: BM25Encoder) -> None:
    import bm25s
    data, texts, index, _, query_texts = scifact

    def tokens(batch_texts: list[str]) -> list[list[str]]:
        counts = token_counts(encoder.tokenizer, batch_texts, encoder.drop_ids, encoder.vocab)
        return [[encoder.vocab[i] for i, n in zip(v.ids.tolist(), v.weights.astype(int).tolist())
                 for _ in range(n)] for v in counts]

    reference = bm25s.BM25(k1=encoder.k1, b=encoder.b, method="lucene", backend="numpy")
    reference.index(tokens(texts), show_progress=False)
    query_tokens = [sorted(set(q)) for q in tokens(query_texts)]
    their_rows, their_scores = reference.retrieve(query_tokens, k=10, show_progress=False,
                                                  backend_selection="numpy")
    ours = index.search(query_texts, k=10)
    position = {doc_id: i for i, doc_id in enumerate(index.ids)}
    identical = 0
    for q in range(len(query_texts)):
        hits = len(ours.ids[q])
        assert np.all(their_scores[q][hits:] == 0)  # bm25s pads with non-matching documents
        # Lucene dropped BM25's constant (k1 + 1) factor; bm25s follows it.
        theirs = their_scores[q][:hits] * (encoder.k1 + 1)
        np.testing.assert_allclose(ours.scores[q], theirs, rtol=1e-5)
        # bm25s orders ties arbitrarily (and sums in float32): a document clearly above the 10th score must
        # be in both lists.
        cut = theirs[-1] * (1 + 2e-5) if hits else 0
        mine, their_docs = [position[d] for d in ours.ids[q]], their_rows[q][:hits].tolist()
        assert {d for d, s in zip(mine, ours.scores[q]) if s > cut} <= set(their_docs)
        assert {d for d, s in zip(their_docs, theirs) if s > cut} <= set(mine)
        identical += mine == their_docs
    assert identical >= 295, f"only {identical} of 300 top-10 lists identical"
