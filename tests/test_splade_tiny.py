"""The real splade-tiny (rasyosef/splade-tiny) exported by our toolkit: the model card's published outputs
(fp32 exactly, int8 within measured bounds), its int8 passing the export gate, and broken graphs edited from
its export failing the gate on retrieval agreement."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from paths import SPLADE_TINY

from spladerunner import Expander
from spladerunner.manifest import GraphEntry, Manifest
from spladerunner.tokenization import load_tokenizer
from spladerunner_export.parity import Thresholds, check_parity, parity_batches, retrieval_batches

# The model card's example (sentence-transformers SparseEncoder.encode: documents, default max length).
CARD_TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
CARD_SIMILARITY = np.array([[39.7253, 7.1662, 0.0], [7.1662, 27.0255, 0.1385], [0.0, 0.1385, 26.3539]])
CARD_TOP_TERMS = [
    [("today", 2.5437), ("lovely", 2.1207), ("weather", 2.0432), ("summers", 2.0364), ("cool", 1.8054),
     ("darling", 1.4539), ("now", 1.3976), ("beautiful", 1.3838), ("nice", 1.2772), ("worthy", 1.2120)],
    [("outside", 2.2668), ("sunny", 2.1886), ("cool", 1.8421), ("so", 1.8327), ("ahead", 1.4391),
     ("darling", 1.3871), ("it", 1.2396), ("across", 0.9793), ("sunshine", 0.9227), ("rocky", 0.8372)],
    [("drove", 2.0860), ("stadium", 2.0446), ("he", 1.7063), ("team", 1.4267), ("move", 1.3472),
     ("jumped", 1.1752), ("driving", 1.1559), ("ride", 1.1327), ("run", 1.0909), ("drive", 1.0640)],
]


def top_terms(vector, k: int = 10) -> list[tuple[str, float]]:
    return sorted(vector.to_dict().items(), key=lambda item: -item[1])[:k]


def test_fp32_reproduces_the_model_card(splade_tiny_export):
    batch = Expander(splade_tiny_export, precision="fp32").expand_batch(CARD_TEXTS)
    dense = batch.to_dense().astype(np.float64)
    np.testing.assert_allclose(dense @ dense.T, CARD_SIMILARITY, rtol=0, atol=1e-4)
    for vector, expected in zip(batch.to_list(), CARD_TOP_TERMS):
        got = top_terms(vector)
        assert [term for term, _ in got] == [term for term, _ in expected]
        np.testing.assert_allclose([w for _, w in got], [w for _, w in expected], rtol=0, atol=1e-4)


def test_int8_comes_close_to_the_model_card(splade_tiny_export):
    """Measured with per-token int8 (int8 word embeddings, weights scaled so that no CPU saturates):
    similarities within 2.3% of each row's self-similarity, the card's top-10 weights within 0.032, all 10
    top-10 terms kept for every text (weights scaled by max |w| alone, on a VNNI CPU: 1.0% and 0.026;
    dynamic per-tensor int8: 4.8%, 0.113 and 9, 10, 10 terms)."""
    assert_close_to_the_card(Expander(splade_tiny_export, precision="int8").expand_batch(CARD_TEXTS))


def assert_close_to_the_card(batch) -> None:
    """The int8 bounds against the model card (also the built-in model's: tests/test_builtin_model.py)."""
    dense = batch.to_dense().astype(np.float64)
    relative = np.abs(dense @ dense.T - CARD_SIMILARITY) / CARD_SIMILARITY.max(1, keepdims=True)
    assert relative.max() <= 0.03
    for vector, expected in zip(batch.to_list(), CARD_TOP_TERMS):
        weights = vector.to_dict()
        assert {term for term, _ in top_terms(vector)} == {term for term, _ in expected}
        assert max(abs(weights.get(term, 0.0) - weight) for term, weight in expected) <= 0.05


def test_int8_passes_the_retrieval_gate(splade_tiny_export):
    report = Manifest.read(splade_tiny_export).parity
    assert report["passed"] and report["reference"] == "torch"
    assert report["retrieval_set"] == {"queries": 30, "documents": 200, "depth": 10}
    fp32, int8 = report["graphs"]["model"]["fp32"], report["graphs"]["model"]["int8"]
    assert fp32["passed"] and fp32["max_abs_diff"] <= 1e-4
    assert fp32["overlap_at_10"] == fp32["tolerant_overlap_at_10"] == 1.0 and fp32["score_pearson"] >= 0.9999
    bounds = Thresholds()
    assert int8["passed"]
    assert int8["tolerant_overlap_at_10"] >= bounds.min_tolerant_overlap_at_10
    assert int8["score_pearson"] >= bounds.min_score_pearson and int8["min_cosine"] >= bounds.int8_min_cosine
    assert report["thresholds"]["min_tolerant_overlap_at_10"] == bounds.min_tolerant_overlap_at_10
    assert Expander(splade_tiny_export).precision == "int8"


def _decoder_weight(model: onnx.ModelProto) -> onnx.TensorProto:
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    decoder = next(n for n in model.graph.node if n.op_type == "MatMul" and shapes.get(n.input[1], (0, 0))[-1] == 30522)
    return next(i for i in model.graph.initializer if i.name == decoder.input[1])


def _edit_decoder(model: onnx.ModelProto, change) -> None:
    weight = _decoder_weight(model)
    weight.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(weight).copy()).astype(np.float32),
                                            weight.name))


def sum_pooling(model: onnx.ModelProto) -> None:
    (pool,) = [n for n in model.graph.node if n.op_type == "ReduceMax"]
    pool.op_type = "ReduceSum"


def zeroed_decoder_rows(model: onnx.ModelProto) -> None:
    def change(weight: np.ndarray) -> np.ndarray:
        weight[::16] = 0.0  # 8 of the 128 hidden dimensions no longer reach the vocabulary
        return weight
    _edit_decoder(model, change)


def noisy_decoder(model: onnx.ModelProto) -> None:
    rng = np.random.default_rng(0)
    _edit_decoder(model, lambda weight: weight + rng.normal(0, 0.3 * weight.std(), weight.shape))


class CachedReference:
    """The torch reference, each batch computed once for all the broken graphs."""

    def __init__(self, reference) -> None:
        self.reference, self.cache = reference, {}

    def __call__(self, batch):
        key = (batch.input_ids.shape, batch.input_ids.tobytes())
        if key not in self.cache:
            self.cache[key] = self.reference(batch)
        return self.cache[key].copy()


@pytest.fixture(scope="module")
def gate_inputs(splade_tiny_export):
    from spladerunner_export.convert import TorchReference, load_masked_lm

    manifest = Manifest.read(splade_tiny_export)
    tokenizer = load_tokenizer(splade_tiny_export / "tokenizer.json")
    return (CachedReference(TorchReference(load_masked_lm(SPLADE_TINY), "max")),
            parity_batches(tokenizer, manifest.max_length["document"]),
            retrieval_batches(tokenizer, manifest.max_length), manifest.special_token_ids)


@pytest.mark.parametrize("breakage", [sum_pooling, zeroed_decoder_rows, noisy_decoder])
def test_broken_graphs_fail_the_gate_on_retrieval(splade_tiny_export, tmp_path, gate_inputs, breakage):
    """Each broken graph, judged as int8 (the loosest bounds), fails on retrieval agreement itself."""
    reference, batches, retrieval, specials = gate_inputs
    model = onnx.load(splade_tiny_export / "model.onnx")
    breakage(model)
    onnx.save(model, tmp_path / "broken.onnx")
    report = check_parity(reference, {"int8": (tmp_path / "broken.onnx", GraphEntry("broken.onnx"))}, batches,
                          vocab_size=30522, special_ids=specials, thresholds=Thresholds(), retrieval=retrieval)
    result, bounds = report["int8"], Thresholds()
    assert result["ran"] and not result["passed"]
    assert (result["tolerant_overlap_at_10"] < bounds.min_tolerant_overlap_at_10
            or result["score_pearson"] < bounds.min_score_pearson), result
