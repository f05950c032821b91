"""Precision variants of a fused SPLADE graph: int8 and fp16.

Both use onnx and onnxruntime only (no torch), so `convert` and `upgrade` share them.

int8 is quantised per token, so that a text's weights cannot depend on the texts batched with it.
onnxruntime's `quantize_dynamic` gives each activation tensor ONE scale over the whole
[batch, length, hidden] input (DynamicQuantizeLinear, and the same inside QAttention): a text's
weights then moved with its batch mates (up to 0.2 on splade-tiny). Here every MatMul with a
constant weight becomes

    s = max_k |x[t, k]| / 127                      one scale per token row t (ReduceMax over hidden)
    q = QuantizeLinear(x / s, 1, 128)              uint8, zero point 128 (symmetric), in [1, 255]
    y = MatMulIntegerToFloat(q, W_q, s, w_scale)   int32 product, then * w_scale[n] * s[t]

with W_q int8 per output channel (symmetric; w_scale[n] below). Outputs of Gelu
(>= -0.17) take zero point 16 instead, with s = max(max_k x[t, k], 2.54) / 239: the asymmetric range
costs no extra pass over the FFN's widest activation.

x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply uint8 by int8 with vpmaddubsw, which
adds the products of two neighbouring rows k = 2j, 2j + 1 (onnxruntime packs B in groups of four rows)
into a saturating int16: 255 * 127 * 2 overflows it. So w_scale[n] is the larger of max_k |W[k, n]| / 127
and max_j (|W[2j, n]| + |W[2j + 1, n]|) / 127: each such pair's int8 magnitudes sum to at most 128 after
rounding, and 255 * 128 fits. Scaled by max|W| alone, splade-tiny's int8 had a min cosine of 0.987 against
fp32 on such a CPU and 0.9993 on a VNNI one.

The integer product is then exact on every CPU, each row's scales are its own, and the float epilogue is
elementwise, so a row's output is a function of that row alone: bit-identical whatever else is in the
batch. onnxruntime's CPU kernel applies a non-scalar A scale after the bias (it would scale the bias too), so biases
stay in their own Add. Each fused `Attention` op (whose int8 form, QAttention, quantises per tensor)
becomes three such products (Q, K, V; one quantisation of their input) and a
`MultiHeadAttention` op over them (fp32 softmax and context, bias and raw mask as before).
MatMuls of two activations (unfused attention's QK^T, attention x V) stay fp32.

Vocabulary-sized embedding tables (word embeddings) are quantised weight-only, per row: each Gather
of an fp32 table becomes a Gather of int8 rows and one of their fp32 scales (symmetric, as above), then Cast and
Mul. A token's embedding still depends on its own id alone. A decoder tied to the word embeddings
(equal to the table transposed, as `untie_decoder` leaves it) has the same int8 values and scales
per vocabulary entry, so it reads the table through a Transpose that onnxruntime folds into a
constant at load: the file holds the vocabulary matrix once, in int8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from spladerunner_export.errors import GraphRewriteError

PREFIX = "int8/"
MS_DOMAIN = "com.microsoft"
# Recorded in the manifest's `quantization["int8"]`: how the int8 graph was made.
INT8_SETTINGS = {
    "method": "spladerunner per-token int8",
    "activations": "uint8 per token (scale over the hidden axis): symmetric max|x|/127 with zero point 128; "
                   "Gelu outputs (>= -0.17) max(max x, 2.54)/239 with zero point 16, Relu outputs max x/255 with "
                   "zero point 0",
    "weights": "int8 per output channel: symmetric, scale max(max|w|, max over row pairs 2j, 2j+1 of "
               "|w[2j]| + |w[2j+1]|)/127, so that uint8 x int8 kernels without VNNI never saturate",
    "embeddings": "int8 per row (weight-only), scaled as the weights; a tied decoder shares the table",
    "per_channel": True,
    "batch_invariant": True,
    "kernels": ["QuantizeLinear", "MatMulIntegerToFloat", "MultiHeadAttention", "Gather", "Cast"],
}
# Attention attributes MultiHeadAttention has too; any other (unidirectional, qkv_hidden_sizes, past)
# keeps that Attention op in fp32.
_MHA_ATTRIBUTES = {"num_heads", "mask_filter_value", "scale"}
# Activations bounded below by -bound: min over x of x * Phi(x) is -0.16997 (at x = -0.7518).
BOUNDED_BELOW = {"Gelu": 0.17, "FastGelu": 0.17, "BiasGelu": 0.17, "Relu": 0.0}
# Their zero point when bound > 0: 16 levels below zero (scale at least 0.17/16, reached when a token's
# peak is under 2.54), 239 above.
BOUNDED_ZERO_POINT = 16
# Embedding tables with fewer rows stay fp32: vocabularies are quantised, position and token-type tables are
# not (on splade-tiny, int8 positions too saved 0.2 MB and lowered the gate's min cosine 0.99949 -> 0.99930).
MIN_TABLE_ROWS = 8192
# Ops between the MLM head's transform (dense -> gelu -> layer norm) and the decoder MatMul.
_HEAD_PATH = {"Add", "Gelu", "FastGelu", "BiasGelu", "LayerNormalization", "Where", "Gather", "Mul", "Div", "Erf",
              "Identity", "Cast", "Reshape"}


def quantize_int8(source: Path, target: Path) -> dict:
    """Per-token int8 quantisation of the fp32 graph at `source` into `target`; returns its settings."""
    model = onnx.load(source)
    counts = quantize_per_token(model)
    onnx.save(model, target)
    return {**INT8_SETTINGS, **counts, "onnxruntime": onnxruntime.__version__}


def quantize_per_token(model: onnx.ModelProto, *, keep_head_transform: bool = True) -> dict:
    """Rewrite `model` in place (see the module docstring); returns what was quantised and what kept fp32.

    With `keep_head_transform`, the MLM head's transform dense (hidden x hidden, before gelu, layer
    norm and the decoder) stays fp32: on splade-tiny it causes the largest share of the int8 error
    (top-10 ranking overlap with fp32 0.976 -> 0.98+ when kept) for a fraction of a percent of the
    model's multiply-adds.
    """
    rewriter = _Rewriter(model)
    fp32 = {rewriter.head_transform()} - {None} if keep_head_transform else set()
    nodes: list[onnx.NodeProto] = []
    matmuls = attentions = 0
    for node in model.graph.node:
        if (table := rewriter.table(node)) is not None:
            nodes.extend(rewriter.gather(node, table))
        elif (node.op_type == "MatMul" and node.domain in ("", "ai.onnx") and node.name not in fp32
                and rewriter.weight(node.input[1]) is not None):
            nodes.extend(rewriter.matmul(node.input[0], node.input[1], node.output[0], node.name))
            matmuls += 1
        elif node.op_type == "Attention" and node.domain == MS_DOMAIN and rewriter.attention_supported(node):
            nodes.extend(rewriter.attention(node))
            attentions += 1
        else:
            nodes.append(node)
    if not matmuls + attentions:
        raise GraphRewriteError("no MatMul with a constant weight to quantise")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {"quantized_matmuls": matmuls, "quantized_attention_layers": attentions,
            "quantized_embedding_tables": len(rewriter.tables), "fp32_matmuls": sorted(fp32)}


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column) of a [K, N] weight: (int8 [K, N], float32 scales [N]).
    Rows 2j and 2j + 1 of a column sum to at most 128 in magnitude (no saturation: module docstring)."""
    magnitude = np.abs(weight)
    paired = magnitude if len(magnitude) % 2 == 0 else np.vstack([magnitude, np.zeros_like(magnitude[:1])])
    scale = np.maximum(magnitude.max(axis=0), (paired[0::2] + paired[1::2]).max(axis=0)) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantised = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return quantised, scale


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.producers = {out: node for node in model.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        # activation -> (uint8 tensor, per-token scale, zero point)
        self.tokens: dict[str, tuple[str, str, str]] = {}
        # fp32 table name -> (table, int8 rows, their scales)
        self.tables: dict[str, tuple[np.ndarray, str, str]] = {}
        self.count = 0
        self.constants: dict[str, str] = {}
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{PREFIX}{stem}_{self.count}"

    def _constant(self, key: str, value: np.ndarray) -> str:
        if key not in self.constants:
            self.constants[key] = self._add(value, f"{PREFIX}{key}")
        return self.constants[key]

    def _add(self, value: np.ndarray, name: str) -> str:
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str) -> np.ndarray | None:
        initializer = self.initializers.get(name)
        if initializer is None or len(initializer.dims) != 2 or initializer.data_type != TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(initializer)

    def table(self, node: onnx.NodeProto) -> np.ndarray | None:
        """The fp32 embedding table `node` gathers rows of, when it is worth quantising: a large 2-D
        initializer read only by row Gathers (another reader would keep the fp32 table in the file anyway)."""
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx"):
            return None
        table = self.weight(node.input[0])
        if table is None or table.shape[0] < MIN_TABLE_ROWS:
            return None
        readers = self.consumers[node.input[0]]
        if node.input[0] in self.outputs or not all(
                r.op_type == "Gather" and r.input[0] == node.input[0] and r.input[1] != node.input[0]
                and all(a.name != "axis" or a.i == 0 for a in r.attribute) for r in readers):
            return None
        return table

    def gather(self, node: onnx.NodeProto, table: np.ndarray) -> list[onnx.NodeProto]:
        """Gather(table, ids) -> Gather(int8 rows, ids) * Gather(row scales, ids), both tables made once."""
        name = node.input[0]
        if name not in self.tables:
            rows, scale = quantize_weight(table.T)  # per column of the transpose: per row
            stem = name.replace("/", "_")
            self.tables[name] = (table, self._add(np.ascontiguousarray(rows.T), f"{PREFIX}{stem}_quantized"),
                                 self._add(scale, f"{PREFIX}{stem}_scale"))
        _, rows, scale = self.tables[name]
        ids, output = node.input[1], node.output[0]
        gathered, row_scale, column, real = (self._name(s) for s in ("rows", "row_scale", "row_column", "rows_fp32"))
        return [
            helper.make_node("Gather", [rows, ids], [gathered], name=gathered),
            helper.make_node("Gather", [scale, ids], [row_scale], name=row_scale),
            self._unsqueeze_last(row_scale, column),
            helper.make_node("Cast", [gathered], [real], name=real, to=TensorProto.FLOAT),
            helper.make_node("Mul", [real, column], [output], name=self._name("dequantised_rows")),
        ]

    def tied_table(self, weight: np.ndarray) -> tuple[str, str] | None:
        """(int8 rows, scales) of a quantised embedding table equal to `weight` transposed (a tied decoder)."""
        for table, rows, scale in self.tables.values():
            if table.shape == weight.shape[::-1] and np.array_equal(table.T, weight):
                return rows, scale
        return None

    def head_transform(self) -> str | None:
        """The MatMul before the decoder: walk back from the widest constant MatMul (the decoder, hidden x vocab)
        through the head's elementwise ops and layer norm to the next constant MatMul."""
        widths = {node.name: weight.shape[1] for node in self.model.graph.node
                  if node.op_type == "MatMul" and (weight := self.weight(node.input[1])) is not None}
        if not widths:
            return None
        decoder = next(n for n in self.model.graph.node if n.name == max(widths, key=widths.get))
        name, steps = decoder.input[0], 0
        while (node := self.producers.get(name)) is not None and steps < 16:
            if node.op_type == "MatMul":
                return node.name if node.name in widths else None
            if node.op_type not in _HEAD_PATH:
                return None
            # Where(mask, x, y): follow x; elsewhere the first computed input.
            inputs = node.input[1:2] if node.op_type == "Where" else node.input
            name = next((i for i in inputs if i in self.producers), "")
            steps += 1
        return None

    def quantised_tokens(self, x: str, nodes: list[onnx.NodeProto]) -> tuple[str, str, str]:
        """x [..., K] -> (uint8 [..., K], scale [..., 1], zero point); once per activation.

        Symmetric around zero point 128, except for outputs of Gelu/Relu (bounded below by -bound):
        zero point Z = 16 (0 for Relu) and 255 - Z levels above it, the scale at least bound / Z so that
        -bound stays representable. The zero point is a constant, so MatMulIntegerToFloat subtracts it
        exactly, and no pass over the (widest) activation shifts it first.
        """
        if x in self.tokens:
            return self.tokens[x]
        producer = self.producers.get(x)
        bound = BOUNDED_BELOW.get(producer.op_type) if producer is not None else None
        if bound is None:
            magnitude = self._name("abs")
            nodes.append(helper.make_node("Abs", [x], [magnitude], name=magnitude))
            levels, zero_point, least = 127.0, 128, float(np.finfo(np.float32).tiny)
        else:
            magnitude = x  # its peak, floored at the least peak that keeps -bound representable
            zero_point = BOUNDED_ZERO_POINT if bound else 0
            levels = 255.0 - zero_point
            least = bound * levels / zero_point if bound else float(np.finfo(np.float32).tiny)
        peak, floor, scale, scaled, quantised = (self._name(s) for s in (
            "absmax", "absmax_floor", "scale", "scaled", "quantised"))
        zero_point_name = self._constant(f"zero_point_{zero_point}", np.array(zero_point, np.uint8))
        nodes += [
            self._reduce_max(magnitude, peak),
            # An all-zero row gets scale tiny/levels and quantises to its zero point exactly.
            helper.make_node("Max", [peak, self._constant(f"least_{least:g}", np.array(least, np.float32))],
                             [floor], name=floor),
            # A Div, not a Mul: onnxruntime's MatMulIntegerToFloatFusion looks for Mul parents.
            helper.make_node("Div", [floor, self._constant(f"levels_{levels:g}", np.array(levels, np.float32))],
                             [scale], name=scale),
            helper.make_node("Div", [x, scale], [scaled], name=scaled),
            helper.make_node("QuantizeLinear", [scaled, self._constant("unit_scale", np.array(1.0, np.float32)),
                                                zero_point_name], [quantised], name=quantised),
        ]
        self.tokens[x] = (quantised, scale, zero_point_name)
        return self.tokens[x]

    def _reduce_max(self, x: str, output: str) -> onnx.NodeProto:
        """ReduceMax over the last axis, keeping it, in the form the graph's opset wants."""
        if self.opset >= 18:
            axes = self._constant("last_axis", np.array([-1], np.int64))
            return helper.make_node("ReduceMax", [x, axes], [output], name=output, keepdims=1)
        return helper.make_node("ReduceMax", [x], [output], name=output, axes=[-1], keepdims=1)

    def _unsqueeze_last(self, x: str, output: str) -> onnx.NodeProto:
        """Unsqueeze a new last axis, in the form the graph's opset wants."""
        if self.opset >= 13:
            axes = self._constant("last_axis", np.array([-1], np.int64))
            return helper.make_node("Unsqueeze", [x, axes], [output], name=output)
        return helper.make_node("Unsqueeze", [x], [output], name=output, axes=[-1])

    def matmul(self, x: str, weight_name: str, output: str, name: str) -> list[onnx.NodeProto]:
        """x @ W as a per-token int8 product into `output` (a bias stays in its own Add: module docstring)."""
        weight = self.weight(weight_name)
        assert weight is not None
        nodes: list[onnx.NodeProto] = []
        quantised, scale, zero_point = self.quantised_tokens(x, nodes)
        weight_q, weight_scale = quantize_weight(weight)
        stem = weight_name.replace("/", "_")
        if (tied := self.tied_table(weight)) is not None:
            weight_q_name, weight_scale_name = self._name(f"{stem}_quantized"), tied[1]
            nodes.append(helper.make_node("Transpose", [tied[0]], [weight_q_name], name=weight_q_name, perm=[1, 0]))
        else:
            weight_q_name = self._add(weight_q, f"{PREFIX}{stem}_quantized")
            weight_scale_name = self._add(weight_scale, f"{PREFIX}{stem}_scale")
        nodes.append(helper.make_node(
            "MatMulIntegerToFloat",
            [quantised, weight_q_name, scale, weight_scale_name, zero_point],
            [output], name=f"{PREFIX}{name or stem}", domain=MS_DOMAIN))
        return nodes

    def attention_supported(self, node: onnx.NodeProto) -> bool:
        attributes = {a.name for a in node.attribute}
        inputs = list(node.input) + [""] * 4
        weight = self.weight(inputs[1])
        return (attributes <= _MHA_ATTRIBUTES and weight is not None and weight.shape[1] % 3 == 0
                and inputs[2] in self.initializers and not any(inputs[4:]) and len(node.output) == 1)

    def attention(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Attention(x, W_qkv, b_qkv, mask) -> per-token int8 x @ W_q, x @ W_k, x @ W_v (one quantisation of
        x; three products rather than one and a Split, which would copy them), MultiHeadAttention(q, k, v, b, mask)."""
        x, weight, bias, mask = (list(node.input) + [""] * 4)[:4]
        packed = self.weight(weight)
        width = packed.shape[1] // 3
        nodes: list[onnx.NodeProto] = []
        parts = []
        for index, part in enumerate(("q", "k", "v")):
            name = self._add(packed[:, index * width:(index + 1) * width], self._name(f"{weight}_{part}"))
            self.initializers[name] = self.model.graph.initializer[-1]
            parts.append(self._name(part))
            nodes += self.matmul(x, name, parts[-1], f"{node.name}/{part}")
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("MultiHeadAttention", [*parts, bias] + ([mask] if mask else []),
                                      list(node.output), name=f"{PREFIX}{node.name}", domain=MS_DOMAIN,
                                      **attributes))
        return nodes


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute with fp32/int64 inputs and outputs (for CUDA; CPU support is partial)."""
    return convert_float_to_float16(model, keep_io_types=True)
