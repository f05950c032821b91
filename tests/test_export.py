"""convert: exported graphs against an independent torch reference, manifest contents, top-k, sum
pooling, efficient-SPLADE folders, and the parity gate (function and exit code)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers
from paths import TOKENIZER_JSON

from spladerunner.manifest import GraphEntry, Manifest  # noqa: E402
from spladerunner.tokenization import load_tokenizer, special_token_ids  # noqa: E402
from spladerunner_export.build import ExportOptions  # noqa: E402
from spladerunner_export.cli import main  # noqa: E402
from spladerunner_export.parity import Thresholds, check_parity, parity_batches  # noqa: E402

TEXTS = [
    "do goldfish grow",
    "what is the capital of france",
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect "
    "cortical development and result in functional disabilities.",
    "vitamin d",
    "The Manhattan Project produced the first nuclear weapons during World War II.",
]
SPECIALS = [0, 100, 101, 102, 103]


def encode(checkpoint: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Padded inputs from the checkpoint's own transformers tokenizer (independent of the runtime's)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np"))


def torch_splade(checkpoint: Path, inputs: dict[str, np.ndarray], pooling: str = "max") -> np.ndarray:
    """SPLADE weights by the formula on the transformers model: pool_i mask_i * log1p(relu(z_i))."""
    model = transformers.AutoModelForMaskedLM.from_pretrained(checkpoint).eval()
    mask = torch.from_numpy(inputs["attention_mask"])
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(inputs["input_ids"]), attention_mask=mask).logits
    weights = torch.log1p(torch.relu(logits)) * mask[..., None]
    return (weights.amax(1) if pooling == "max" else weights.sum(1)).numpy()


def run(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v.astype(np.int64) for k, v in inputs.items() if k in names})


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize(("checkpoint", "folder"), [("tiny_bert", "tiny_bert_export"),
                                                    ("tiny_distilbert", "tiny_distilbert_export")])
def test_fp32_and_int8_match_torch(request, checkpoint, folder):
    checkpoint, folder = request.getfixturevalue(checkpoint), request.getfixturevalue(folder)
    inputs = encode(checkpoint, TEXTS)
    expected = torch_splade(checkpoint, inputs)
    (fp32,) = run(folder / "model.onnx", inputs)
    (int8,) = run(folder / "model_int8.onnx", inputs)
    assert fp32.shape == (len(TEXTS), 30522) and fp32.dtype == np.float32
    assert np.abs(fp32 - expected).max() <= 1e-4
    np.testing.assert_array_equal(fp32 > 0, expected > 0)
    expected[:, SPECIALS] = int8[:, SPECIALS] = 0
    assert cosine(int8, expected).min() >= 0.999
    # Realistic sparsity survives export: tens of terms per text, not thousands.
    assert (fp32 > 0).sum(1).min() >= 5 and (fp32 > 0).sum(1).max() <= 400
    report = Manifest.read(folder).parity
    assert report["passed"] and report["reference"] == "torch"
    assert report["graphs"]["model"]["fp32"]["max_abs_diff"] <= 1e-4
    assert report["graphs"]["model"]["fp32"]["min_jaccard"] == 1.0


def test_graph_inputs_follow_the_architecture(tiny_bert_export, tiny_distilbert_export):
    bert = onnx.load(tiny_bert_export / "model.onnx", load_external_data=False)
    distil = onnx.load(tiny_distilbert_export / "model.onnx", load_external_data=False)
    assert [i.name for i in bert.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [i.name for i in distil.graph.input] == ["input_ids", "attention_mask"]
    for model in (bert, distil):
        for graph_input in model.graph.input:
            assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
            assert all(d.dim_param for d in graph_input.type.tensor_type.shape.dim)  # dynamic batch, length
        (output,) = model.graph.output
        assert output.name == "sparse_weights"
        assert [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim][1] == 30522


def test_manifest_contents(tiny_bert, tiny_bert_export):
    manifest = Manifest.read(tiny_bert_export)
    tokenizer = load_tokenizer(tiny_bert_export / "tokenizer.json")
    assert manifest.kind == "splade" and manifest.pooling == "max" and manifest.activation == "log1p_relu"
    assert manifest.vocab_size == 30522 == tokenizer.get_vocab_size()
    assert manifest.special_token_ids == special_token_ids(tokenizer)
    assert manifest.max_length == {"query": 64, "document": 256}
    assert manifest.encoders["query"] == manifest.encoders["document"]
    assert manifest.precisions("query") == ["fp32", "int8", "fp16"]
    for entry in manifest.encoders["query"].values():
        assert entry.output == "pooled" and entry.top_k is None
        assert entry.sha256 == hashlib.sha256((tiny_bert_export / entry.path).read_bytes()).hexdigest()
    assert manifest.source["checkpoint"] == str(tiny_bert)
    assert manifest.source["sha256"]["model.safetensors"] == hashlib.sha256(
        (tiny_bert / "model.safetensors").read_bytes()).hexdigest()
    assert manifest.exporter["torch"] == torch.__version__ and manifest.exporter["onnxruntime"] == ort.__version__
    assert manifest.quantization["int8"]["method"] == "spladerunner per-token int8"
    assert manifest.quantization["int8"]["per_channel"] and manifest.quantization["int8"]["batch_invariant"]
    assert (tiny_bert_export / "tokenizer.json").read_bytes() == (tiny_bert / "tokenizer.json").read_bytes()


def test_int8_decoder_is_quantised(tiny_bert_export):
    """The vocabulary projection (the largest MatMul) must run in int8, not stay fp32."""
    model = onnx.load(tiny_bert_export / "model_int8.onnx")
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    decoder_inputs = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"
                      and any(30522 in shapes.get(name, ()) for name in n.input)]
    assert decoder_inputs, "no int8 MatMul over the vocabulary"
    assert not [n for n in model.graph.node if n.op_type == "MatMul"
                and any(30522 in shapes.get(name, ()) for name in n.input)]


def test_fp16_graph_keeps_fp32_io(tiny_bert, tiny_bert_export):
    inputs = encode(tiny_bert, TEXTS)
    (fp16,) = run(tiny_bert_export / "model_fp16.onnx", inputs)
    expected = torch_splade(tiny_bert, inputs)
    assert fp16.dtype == np.float32
    assert cosine(fp16, expected).min() >= 0.99
    assert Manifest.read(tiny_bert_export).parity["graphs"]["model"]["fp16"]["ran"]


def test_topk_graph_is_topk_of_pooled(tiny_bert, tiny_bert_export, tiny_bert_topk_export):
    inputs = encode(tiny_bert, TEXTS)
    (pooled,) = run(tiny_bert_export / "model.onnx", inputs)
    top_ids, top_weights = run(tiny_bert_topk_export / "model.onnx", inputs)
    assert top_ids.shape == top_weights.shape == (len(TEXTS), 64) and top_ids.dtype == np.int64
    assert (np.diff(top_weights, axis=1) <= 0).all(), "top_weights must be sorted, heaviest first"
    pooled[:, SPECIALS] = 0
    np.testing.assert_allclose(top_weights, -np.sort(-pooled, axis=1)[:, :64], atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(pooled, top_ids, axis=1), top_weights, atol=1e-6)
    assert not np.isin(top_ids[top_weights > 0], SPECIALS).any()
    manifest = Manifest.read(tiny_bert_topk_export)
    assert manifest.encoders["query"]["int8"] == GraphEntry(
        "model_int8.onnx", "topk", 64, manifest.encoders["query"]["int8"].sha256)
    assert manifest.parity["passed"]


def test_sum_pooling_matches_formula(tmp_path, tiny_bert):
    from spladerunner_export.convert import export_checkpoint

    manifest = export_checkpoint(tmp_path, tiny_bert, options=ExportOptions(pooling="sum", precisions=("fp32",)))
    inputs = encode(tiny_bert, TEXTS)
    (weights,) = run(tmp_path / "model.onnx", inputs)
    expected = torch_splade(tiny_bert, inputs, pooling="sum")
    assert np.abs(weights - expected).max() <= 1e-4 * max(1.0, float(expected.max()))
    np.testing.assert_array_equal(weights > 0, expected > 0)
    assert not np.allclose(weights, torch_splade(tiny_bert, inputs, pooling="max"))
    assert manifest.pooling == "sum" and manifest.parity["passed"]


@pytest.mark.parametrize("checkpoint", ["tiny_bert", "tiny_distilbert"])
def test_attention_is_fused_by_default_and_exact(tmp_path, checkpoint, request):
    from spladerunner_export.convert import export_checkpoint

    path = request.getfixturevalue(checkpoint)
    manifest = export_checkpoint(tmp_path, path, options=ExportOptions(precisions=("fp32", "int8")))
    layers = transformers.AutoConfig.from_pretrained(path).num_hidden_layers
    assert manifest.quantization["attention_layers_fused"] == {"model": layers}
    fp32_ops = [node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node]
    int8_ops = [node.op_type for node in onnx.load(tmp_path / "model_int8.onnx").graph.node]
    # int8: per-token Q/K/V products feeding one MultiHeadAttention per layer (QAttention quantises per tensor).
    assert fp32_ops.count("Attention") == layers and int8_ops.count("MultiHeadAttention") == layers
    assert "QAttention" not in int8_ops
    assert "SkipLayerNormalization" not in fp32_ops and "BiasGelu" not in fp32_ops
    assert manifest.parity["passed"]
    # Mixed lengths: the fused attention must keep padding out through the raw mask.
    inputs = encode(path, TEXTS)
    (weights,) = run(tmp_path / "model.onnx", inputs)
    assert np.abs(weights - torch_splade(path, inputs)).max() <= 1e-4


@pytest.mark.parametrize("with_bias", [True, False])
def test_split_skip_layer_norm_computes_the_same(with_bias):
    from onnx import TensorProto, helper, numpy_helper

    from spladerunner_export.graph import _split_skip_layer_norms

    rng = np.random.default_rng(0)
    hidden = 16
    weights = {"gamma": rng.normal(1, 0.1, hidden), "beta": rng.normal(0, 0.1, hidden),
               "bias": rng.normal(0, 1, hidden)}
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    node = helper.make_node("SkipLayerNormalization", inputs, ["y", "", "", "total"], domain="com.microsoft",
                            epsilon=1e-5)
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, hidden]) for n in ("x", "skip", "y", "total")]
    graph = helper.make_graph([node], "skip", value[:2], value[2:],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()
                               if k in inputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    feed = {"x": rng.normal(0, 2, (2, 3, hidden)).astype(np.float32),
            "skip": rng.normal(0, 2, (2, 3, hidden)).astype(np.float32)}

    def outputs(m: onnx.ModelProto) -> list[np.ndarray]:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)

    expected = outputs(model)
    _split_skip_layer_norms(model)
    assert [n.op_type for n in model.graph.node] == ["Add"] * (2 if with_bias else 1) + ["LayerNormalization"]
    for got, want in zip(outputs(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unfused_attention_option(tmp_path, tiny_bert):
    from spladerunner_export.convert import export_checkpoint

    manifest = export_checkpoint(tmp_path, tiny_bert,
                                 options=ExportOptions(precisions=("fp32",), fuse_attention=False))
    ops = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert "Attention" not in ops and "Softmax" in ops
    assert manifest.quantization["attention_layers_fused"] == {"model": 0} and manifest.parity["passed"]


def test_fp16_graph_keeps_unfused_attention(tiny_bert_export):
    ops = {node.op_type for node in onnx.load(tiny_bert_export / "model_fp16.onnx").graph.node}
    assert "Attention" not in ops and "Softmax" in ops


def test_efficient_splade_folder(tiny_bert, tiny_bert_seed1, dual_export):
    manifest = Manifest.read(dual_export)
    assert manifest.encoders["query"]["fp32"].path == "query/model.onnx"
    assert manifest.encoders["document"]["fp32"].path == "document/model.onnx"
    assert manifest.encoders["document"]["int8"].path == "document/model_int8.onnx"
    assert manifest.source["query"]["checkpoint"] == str(tiny_bert)
    assert manifest.source["document"]["checkpoint"] == str(tiny_bert_seed1)
    assert set(manifest.parity["graphs"]) == {"query", "document"} and manifest.parity["passed"]
    inputs = encode(tiny_bert, TEXTS)
    (query,) = run(dual_export / "query" / "model.onnx", inputs)
    (document,) = run(dual_export / "document" / "model.onnx", inputs)
    assert np.abs(query - torch_splade(tiny_bert, inputs)).max() <= 1e-4
    assert np.abs(document - torch_splade(tiny_bert_seed1, inputs)).max() <= 1e-4


def test_parity_check_catches_a_corrupted_graph(tmp_path, tiny_bert, tiny_bert_export):
    from spladerunner_export.convert import TorchReference, load_masked_lm

    model = onnx.load(tiny_bert_export / "model.onnx")
    (bias,) = [i for i in model.graph.initializer if tuple(i.dims) == (30522,) and "bias" in i.name]
    values = onnx.numpy_helper.to_array(bias) + 0.01  # a small shift of every logit
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, tmp_path / "corrupted.onnx")
    tokenizer = load_tokenizer(tiny_bert_export / "tokenizer.json")
    graphs = {"fp32": (tmp_path / "corrupted.onnx", GraphEntry("corrupted.onnx")),
              "int8": (tiny_bert_export / "model_int8.onnx", GraphEntry("model_int8.onnx"))}
    report = check_parity(TorchReference(load_masked_lm(tiny_bert), "max"), graphs,
                          parity_batches(tokenizer, 256), vocab_size=30522, special_ids=SPECIALS,
                          thresholds=Thresholds())
    assert not report["fp32"]["passed"] and report["fp32"]["max_abs_diff"] > 1e-3
    assert report["int8"]["passed"]


def test_cli_exit_codes(tmp_path, tiny_distilbert, capsys):
    args = [str(tiny_distilbert), str(tmp_path / "ok"), "--precisions", "fp32"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "overlap@10=1.000" in printed.out and "pearson=1.0000" in printed.out and "parity passed" in printed.err
    assert main(["convert", str(tiny_distilbert), str(tmp_path / "strict"), "--precisions", "fp32,int8",
                 "--min-int8-cosine", "1.0"]) == 1
    assert "parity FAILED" in capsys.readouterr().err
    report = json.loads((tmp_path / "strict" / "spladerunner.json").read_text())["parity"]
    assert report["graphs"]["model"]["fp32"]["passed"] and not report["graphs"]["model"]["int8"]["passed"]
    with pytest.raises(SystemExit):
        main(["convert", "--query-checkpoint", str(tiny_distilbert), str(tmp_path / "half")])
    assert main(["test-model", str(tmp_path / "made"), "--tokenizer", str(TOKENIZER_JSON), "--arch", "distilbert",
                 "--seed", "3"]) == 0
    assert json.loads((tmp_path / "made" / "calibration.json").read_text())["seed"] == 3


def test_ship_keeps_only_the_named_precisions(tmp_path, tiny_bert):
    """`ship`: the other precisions are built and judged, then removed from the folder and its encoders."""
    from spladerunner import Expander
    from spladerunner_export.convert import export_checkpoint
    from spladerunner_export.errors import ExportError

    manifest = export_checkpoint(tmp_path, tiny_bert, options=ExportOptions(ship=("int8",)))
    assert all(list(variants) == ["int8"] for variants in manifest.encoders.values())
    assert not (tmp_path / "model.onnx").exists() and (tmp_path / "model_int8.onnx").is_file()
    assert set(manifest.parity["graphs"]["model"]) == {"fp32", "int8"}  # fp32 was still judged
    assert Expander(tmp_path).precision == "int8"
    for wrong in ((), ("fp16",)):
        with pytest.raises(ExportError, match="ship must name"):
            ExportOptions(ship=wrong)
