"""Parity metrics and batches on hand-made inputs (no torch, no model)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from paths import TOKENIZER_JSON  # noqa: E402

from spladerunner.tokenization import load_tokenizer  # noqa: E402
from spladerunner_export.parity import (  # noqa: E402
    BATCH_SIZES,
    PARITY_TEXTS,
    Agreement,
    Metrics,
    Thresholds,
    compare,
    keep_top_k,
    parity_batches,
    passes,
    retrieval_agreement,
    retrieval_batches,
)
from spladerunner_export.retrieval_set import DOCUMENTS, QUERIES  # noqa: E402


def test_compare_worst_rows():
    reference = np.array([[0, 1, 2.0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    candidate = np.array([[0, 1, 2.1], [0, 0, 0], [3, 0, 0], [0, 0, 0]], dtype=np.float32)
    metrics = compare(reference, candidate)
    assert metrics.max_abs_diff == pytest.approx(3.0)
    assert metrics.min_cosine == 0.0 and metrics.min_jaccard == 0.0 and metrics.min_top50_overlap == 0.0
    same = compare(reference, reference)
    assert (same.max_abs_diff, same.min_cosine, same.min_jaccard, same.min_top50_overlap) == (0, 1, 1, 1)


def test_thresholds_per_precision():
    loose = Metrics(max_abs_diff=2e-4, min_cosine=0.985, min_jaccard=1, min_top50_overlap=1, mean_active=30)
    assert not passes("fp32", loose, Thresholds()) and not passes("fp16", loose, Thresholds())
    assert passes("int8", loose, Thresholds())  # the int8 cosine bound is a loose sanity bound
    assert passes("fp32", loose, Thresholds(fp32_max_abs_diff=1e-3))
    broken = Metrics(max_abs_diff=1, min_cosine=0.9, min_jaccard=0.5, min_top50_overlap=0.5, mean_active=30)
    assert not passes("int8", broken, Thresholds())


def test_retrieval_agreement_decides_for_every_precision():
    exact = Metrics(max_abs_diff=0, min_cosine=1, min_jaccard=1, min_top50_overlap=1, mean_active=30)
    good = Agreement(overlap_at_10=0.9, worst_overlap_at_10=0.7, tolerant_overlap_at_10=0.95, score_spearman=0.97,
                     score_pearson=0.99)
    assert all(passes(precision, exact, Thresholds(), good) for precision in ("fp32", "int8", "fp16"))
    for bad in (Agreement(0.9, 0.7, 0.85, 0.97, 0.99), Agreement(0.9, 0.7, 0.95, 0.97, 0.97)):
        assert not any(passes(precision, exact, Thresholds(), bad) for precision in ("fp32", "int8", "fp16"))


def test_retrieval_agreement_metrics():
    rng = np.random.default_rng(0)
    queries, documents = rng.random((4, 50)), rng.random((30, 50))
    same = retrieval_agreement(queries, documents, queries, documents)
    assert asdict(same) == pytest.approx(asdict(Agreement(1.0, 1.0, 1.0, 1.0, 1.0)))
    # Reversing every ranking: no overlap at 10, correlation -1.
    scores = queries @ documents.T
    flipped = retrieval_agreement(queries, documents, np.eye(4), -scores.T.copy())
    assert flipped.overlap_at_10 == flipped.tolerant_overlap_at_10 == 0.0
    assert flipped.score_spearman == pytest.approx(-1) and flipped.score_pearson == pytest.approx(-1)
    # Spearman with ties equals scipy's.
    from scipy.stats import spearmanr

    noisy = np.round(scores + rng.normal(0, 0.3, scores.shape), 1)
    agreement = retrieval_agreement(queries, documents, np.eye(4), noisy.T.copy())
    expected = np.mean([spearmanr(a, b).statistic for a, b in zip(scores, noisy)])
    assert agreement.score_spearman == pytest.approx(expected)


def test_tolerant_overlap_counts_near_ties():
    """Documents the reference scores within 1% of its 10th score are ties: swapping them is no disagreement."""
    reference = np.array([[10, 9, 8, 7, 6, 5, 4, 3, 2, 1.0, 0.995, 0.5]])
    swapped = reference.copy()
    swapped[0, [9, 10]] = swapped[0, [10, 9]]
    agreement = retrieval_agreement(np.eye(1), reference.T, np.eye(1), swapped.T)
    assert agreement.overlap_at_10 == pytest.approx(0.9) and agreement.tolerant_overlap_at_10 == 1.0
    far = reference.copy()
    far[0, [9, 11]] = far[0, [11, 9]]
    assert retrieval_agreement(np.eye(1), reference.T, np.eye(1), far.T).tolerant_overlap_at_10 == pytest.approx(0.9)
    # A query matching 3 documents is judged at depth 3; one matching none agrees with a graph matching none.
    sparse = np.array([[0, 0, 3.0, 2, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    agreement = retrieval_agreement(np.eye(2), sparse.T.copy(), np.eye(2), sparse.T.copy())
    assert agreement.overlap_at_10 == agreement.tolerant_overlap_at_10 == 1.0


def test_built_in_retrieval_set():
    assert len(QUERIES) == 30 and len(DOCUMENTS) == 200
    assert len(set(QUERIES)) == 30 and len(set(DOCUMENTS)) == 200
    batches = retrieval_batches(load_tokenizer(TOKENIZER_JSON), {"query": 64, "document": 256})
    queries = np.concatenate([batch.rows for batch in batches.queries])
    documents = np.concatenate([batch.rows for batch in batches.documents])
    np.testing.assert_array_equal(queries, np.arange(30))
    np.testing.assert_array_equal(documents, np.arange(200))
    lengths = np.concatenate([batch.attention_mask.sum(1) for batch in batches.documents])
    assert lengths.max() < 64 and any((batch.attention_mask == 0).any() for batch in batches.documents)


def test_keep_top_k():
    weights = np.array([[0.1, 0.5, 0.3, 0.0], [1.0, 0.0, 2.0, 3.0]], dtype=np.float32)
    expected = np.array([[0, 0.5, 0.3, 0], [0, 0, 2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(keep_top_k(weights, 2), expected)


def test_parity_batches_mix_lengths_and_padding():
    batches = parity_batches(load_tokenizer(TOKENIZER_JSON), 256)
    sizes = [len(batch.rows) for batch in batches]
    assert sizes.count(1) == len(PARITY_TEXTS) and max(sizes) == max(BATCH_SIZES)
    lengths = np.concatenate([batch.attention_mask.sum(1) for batch in batches])
    assert lengths.min() <= 4 and lengths.max() == 256  # one word ... truncated at the limit
    assert any((batch.attention_mask == 0).any() for batch in batches)  # some rows are padded
