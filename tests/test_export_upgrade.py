"""upgrade: a foreign logits graph becomes a fused, quantised model folder without importing torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hf_cache import populate_hf_cache

from spladerunner.manifest import Manifest  # noqa: E402
from spladerunner.tokenization import encode, load_tokenizer  # noqa: E402
from spladerunner_export.build import ExportOptions  # noqa: E402
from spladerunner_export.graph import GraphRewriteError, fuse_pooling, untie_decoder  # noqa: E402
from spladerunner_export.upgrade import find_logits_graph, upgrade_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["do goldfish grow", "covid-19 transmission rates in schools and the role of ventilation", "x"]
# Runs the CLI in a fresh interpreter that cannot import torch, transformers or optimum (a None entry
# in sys.modules is what Python does for a module that is not there).
NO_TORCH = """
import sys
for name in ("torch", "transformers", "optimum"):
    sys.modules[name] = None
from spladerunner_export.cli import main
sys.exit(main(["upgrade", sys.argv[1], sys.argv[2]]))
"""


def inputs(folder: Path) -> dict[str, np.ndarray]:
    encoded = encode(load_tokenizer(folder / "tokenizer.json"), TEXTS, 64)
    width = max(len(ids) for ids in encoded.ids)
    input_ids = np.zeros((len(TEXTS), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, ids in enumerate(encoded.ids):
        input_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def numpy_splade(logits_graph: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    (logits,) = ort.InferenceSession(str(logits_graph)).run(None, feed)
    return (np.log1p(np.maximum(logits, 0)) * feed["attention_mask"][..., None]).max(1)


def test_upgrade_runs_without_torch_and_matches(tmp_path, foreign_logits_folder):
    """Upgrade a hub id from an offline Hugging Face cache in a fresh interpreter: no torch import."""
    commit = "c" * 40
    populate_hf_cache(tmp_path / "hub", "acme/splade-tiny", foreign_logits_folder, commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "upgraded"
    result = subprocess.run([sys.executable, "-c", NO_TORCH, "acme/splade-tiny", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = Manifest.read(out)
    assert manifest.parity["passed"] and manifest.exporter["spladerunner"]
    int8 = manifest.parity["graphs"]["model"]["int8"]  # the same retrieval gate as convert
    assert int8["tolerant_overlap_at_10"] >= 0.9 and int8["score_pearson"] >= 0.98
    assert (manifest.source["checkpoint"], manifest.source["revision"]) == ("acme/splade-tiny", commit)
    assert manifest.source["graph"] == "model.onnx"
    assert manifest.source["sha256"]["model.onnx"]
    feed = inputs(foreign_logits_folder)
    expected = numpy_splade(foreign_logits_folder / "model.onnx", feed)
    (fused,) = ort.InferenceSession(str(out / "model.onnx")).run(["sparse_weights"], feed)
    assert np.abs(fused - expected).max() <= 1e-4
    np.testing.assert_array_equal(fused > 0, expected > 0)
    (int8,) = ort.InferenceSession(str(out / "model_int8.onnx")).run(["sparse_weights"], feed)
    int8[:, manifest.special_token_ids] = expected[:, manifest.special_token_ids] = 0
    cosine = (int8 * expected).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.999


def _tie_decoder(model: onnx.ModelProto) -> None:
    """Make the decoder read the word embeddings through a Transpose, as a deduplicated export does."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    embeddings = next(n.input[0] for n in model.graph.node if n.op_type == "Gather"
                      and shapes.get(n.input[0], (0,))[0] == 30522)
    decoder = next(n for n in model.graph.node if n.op_type == "MatMul" and shapes.get(n.input[1], (0, 0))[1] == 30522)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == decoder.input[1]))
    transpose = onnx.helper.make_node("Transpose", [embeddings], ["tied_decoder_weight"], perm=[1, 0])
    model.graph.node.insert(0, transpose)
    decoder.input[1] = "tied_decoder_weight"


def test_tied_foreign_decoder_is_untied_and_quantised(tmp_path, foreign_logits_folder):
    tied = tmp_path / "tied"
    shutil.copytree(foreign_logits_folder, tied)
    model = onnx.load(tied / "model.onnx")
    _tie_decoder(model)
    onnx.save(model, tied / "model.onnx")
    manifest = upgrade_folder(tied, tmp_path / "out")
    assert manifest.quantization["decoder_untied"] == {"model": True}
    assert manifest.parity["passed"]
    int8 = onnx.load(tmp_path / "out" / "model_int8.onnx")
    # No fp32 weight behind a Transpose: the decoder reads the int8 word-embedding table (a Transpose of an int8
    # initializer, which onnxruntime folds at load).
    fp32 = {i.name for i in int8.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert not [n for n in int8.graph.node if n.op_type == "Transpose" and n.input[0] in fp32]
    assert any(n.op_type == "MatMulIntegerToFloat" and any("decoder" in i for i in n.input) for n in int8.graph.node)
    # Untying is a no-op on an already untied graph.
    assert not untie_decoder(onnx.load(foreign_logits_folder / "model.onnx"))


def test_sentence_transformers_layout_and_errors(tmp_path, foreign_logits_folder):
    st = tmp_path / "st"
    (st / "onnx").mkdir(parents=True)
    shutil.copyfile(foreign_logits_folder / "model.onnx", st / "onnx" / "model.onnx")
    shutil.copyfile(foreign_logits_folder / "tokenizer.json", st / "tokenizer.json")
    assert find_logits_graph(st) == st / "onnx" / "model.onnx"
    with pytest.raises(FileNotFoundError):
        find_logits_graph(tmp_path)
    with pytest.raises(ValueError, match="other than the input"):
        upgrade_folder(st, st)
    with pytest.raises(ValueError, match="give an output folder"):  # the default output is for hub ids
        upgrade_folder(st)
    pooled = onnx.load(foreign_logits_folder / "model.onnx")
    fuse_pooling(pooled)
    with pytest.raises(GraphRewriteError):
        fuse_pooling(pooled)  # already fused: no logits output left


def test_upgrade_with_top_k_and_sum_pooling(tmp_path, foreign_logits_folder):
    manifest = upgrade_folder(foreign_logits_folder, tmp_path / "out",
                              options=ExportOptions(pooling="sum", top_k=16, precisions=("fp32",)))
    assert manifest.pooling == "sum" and manifest.encoders["document"]["fp32"].output == "topk"
    feed = inputs(foreign_logits_folder)
    (logits,) = ort.InferenceSession(str(foreign_logits_folder / "model.onnx")).run(None, feed)
    expected = (np.log1p(np.maximum(logits, 0)) * feed["attention_mask"][..., None]).sum(1)
    expected[:, manifest.special_token_ids] = 0
    ids, weights = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(["top_ids", "top_weights"], feed)
    np.testing.assert_allclose(weights, -np.sort(-expected, axis=1)[:, :16], rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "out" / "spladerunner.json").read_text())["parity"]["passed"]


def _reshape_logits(model: onnx.ModelProto) -> None:
    """Put a (no-op) Reshape between the decoder and the logits output, as some foreign exports do."""
    output = model.graph.output[0]
    producer = next(n for n in model.graph.node if output.name in n.output)
    producer.output[list(producer.output).index(output.name)] = "unreshaped_logits"
    shape = onnx.numpy_helper.from_array(np.array([0, 0, -1], np.int64), "keep_shape")
    model.graph.initializer.append(shape)
    model.graph.node.append(onnx.helper.make_node("Reshape", ["unreshaped_logits", "keep_shape"], [output.name]))


@pytest.mark.parametrize("layout", ["bias add", "reshape"])
def test_max_pooling_is_exact_with_padding(foreign_logits_folder, layout):
    """With a bias add after the decoder, ReduceMax reads the decoder MatMul itself (padding replaced by
    position 0 before it); behind a reshape, the logits are masked instead. Both equal numpy pooling."""
    model = onnx.load(foreign_logits_folder / "model.onnx")
    if layout == "reshape":
        _reshape_logits(model)
    fuse_pooling(model)
    onnx.checker.check_model(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    (reduce,) = [n for n in model.graph.node if n.op_type == "ReduceMax"]
    assert producers[reduce.input[0]].op_type == ("MatMul" if layout == "bias add" else "Where")
    feed = inputs(foreign_logits_folder)
    assert (feed["attention_mask"] == 0).any(), "the batch must contain padding"
    expected = numpy_splade(foreign_logits_folder / "model.onnx", feed)
    (fused,) = ort.InferenceSession(model.SerializeToString()).run(["sparse_weights"], feed)
    assert np.abs(fused - expected).max() <= 1e-5
    np.testing.assert_array_equal(fused > 0, expected > 0)


def test_upgrade_follows_the_gate_rules(tmp_path, foreign_logits_folder, capsys):
    """A variant that fails the gate is recorded as failed, the command exits 1 and names it, and the
    runtime does not choose it by default."""
    from spladerunner import Expander
    from spladerunner_export.cli import main

    out = tmp_path / "out"
    assert main(["upgrade", str(foreign_logits_folder), str(out), "--min-pearson", "0.999999"]) == 1
    printed = capsys.readouterr()
    assert "parity FAILED for int8" in printed.err and "pearson=" in printed.out
    graphs = Manifest.read(out).parity["graphs"]["model"]
    assert graphs["fp32"]["passed"] and not graphs["int8"]["passed"]
    assert Expander(out).precision == "fp32"
