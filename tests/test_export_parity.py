"""Parity metrics and batches on hand-made inputs (no torch, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from paths import TOKENIZER_JSON  # noqa: E402

from spladerunner.tokenization import load_tokenizer  # noqa: E402
from spladerunner_export.parity import (  # noqa: E402
    BATCH_SIZES,
    PARITY_TEXTS,
    Metrics,
    Thresholds,
    compare,
    keep_top_k,
    parity_batches,
    passes,
)


def test_compare_worst_rows():
    reference = np.array([[0, 1, 2.0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    candidate = np.array([[0, 1, 2.1], [0, 0, 0], [3, 0, 0], [0, 0, 0]], dtype=np.float32)
    metrics = compare(reference, candidate)
    assert metrics.max_abs_diff == pytest.approx(3.0)
    assert metrics.min_cosine == 0.0 and metrics.min_jaccard == 0.0 and metrics.min_top50_overlap == 0.0
    same = compare(reference, reference)
    assert (same.max_abs_diff, same.min_cosine, same.min_jaccard, same.min_top50_overlap) == (0, 1, 1, 1)


def test_thresholds_per_precision():
    loose = Metrics(max_abs_diff=2e-4, min_cosine=0.995, min_jaccard=1, min_top50_overlap=1, mean_active=30)
    assert not passes("fp32", loose, Thresholds()) and not passes("int8", loose, Thresholds())
    assert passes("fp16", loose, Thresholds())
    assert passes("fp32", loose, Thresholds(fp32_max_abs_diff=1e-3))


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
