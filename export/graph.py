"""ONNX surgery on masked-LM logits graphs: untie the decoder, fuse SPLADE pooling (and top-k) in,
fuse self-attention.

Every function takes any graph that outputs MLM logits [batch, length, vocab] and has an
`attention_mask` input: our own optimum exports and foreign ones (fastembed/Qdrant `model.onnx`,
optimum folders, sentence-transformers `onnx/`) alike, so one code path serves `convert` and
`upgrade`. Only onnx, numpy and onnxruntime's graph tools are used: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

from spladerunner.manifest import POOLED_OUTPUT, TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT
from spladerunner_export.errors import ExportError, GraphRewriteError

MASK_INPUT = "attention_mask"
PREFIX = "splade/"
# Ops whose `axes` moved from an attribute to an input, and the opset where that happened.
AXES_INPUT_SINCE = {"Unsqueeze": 13, "ReduceSum": 13, "ReduceMax": 18}
# Ops between the decoder MatMul and the logits output (bias add, casts, reshapes of foreign exports).
PASS_THROUGH = {"Add", "Identity", "Cast", "Reshape"}


def logits_output(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The graph's logits output: named `logits`, else its only rank-3 float output."""
    outputs = [o for o in model.graph.output if o.name == "logits"] or [
        o for o in model.graph.output
        if o.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
        and len(o.type.tensor_type.shape.dim) == 3]
    if len(outputs) != 1:
        names = [o.name for o in model.graph.output]
        raise GraphRewriteError(f"cannot tell which output holds the MLM logits [batch, length, vocab] among {names}")
    return outputs[0]


def vocab_size(model: onnx.ModelProto) -> int:
    """The vocabulary size: the static last dimension of the logits output."""
    output = logits_output(model)
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[2].HasField("dim_value"):
        raise GraphRewriteError(f"logits output {output.name!r} has no static vocabulary dimension")
    return dims[2].dim_value


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def untie_decoder(model: onnx.ModelProto) -> bool:
    """Give the decoder MatMul its own [hidden, vocab] initializer; True when the graph changed.

    A decoder tied to the word embeddings reads them through a Transpose or shares the Gather's
    initializer; dynamic quantisation then leaves the decoder in fp32 behind DequantizeLinear and
    int8 runs slower than fp32 on short queries.
    """
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    decoder, _ = _decoder_path(model, producers)
    weight = decoder.input[1]
    transpose = producers.get(weight)
    if transpose is not None and transpose.op_type == "Transpose" and transpose.input[0] in initializers:
        matrix = numpy_helper.to_array(initializers[transpose.input[0]]).T
    elif weight in initializers and consumers[weight] > 1:
        matrix = numpy_helper.to_array(initializers[weight])
    else:
        return False
    name = f"{PREFIX}decoder.weight"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(matrix), name))
    decoder.input[1] = name
    if transpose is not None and consumers[weight] == 1:
        model.graph.node.remove(transpose)
    return True


def _decoder_path(model: onnx.ModelProto,
                  producers: dict[str, onnx.NodeProto]) -> tuple[onnx.NodeProto, list[onnx.NodeProto]]:
    """Walk back from the logits output through bias adds and casts to the decoder MatMul.

    Returns the MatMul and the nodes between it and the logits output, in graph order.
    """
    name = logits_output(model).name
    path: list[onnx.NodeProto] = []
    while (node := producers.get(name)) is not None:
        if node.op_type == "MatMul":
            return node, path[::-1]
        if node.op_type not in PASS_THROUGH:
            break
        path.append(node)
        # Follow the operand that is computed, not the constant (bias, shape).
        name = next((i for i in node.input if i in producers), "")
    raise GraphRewriteError("no decoder MatMul found behind the logits output")


def fuse_pooling(model: onnx.ModelProto, *, pooling: str = "max", top_k: int | None = None,
                 special_ids: Sequence[int] = ()) -> onnx.ModelProto:
    """Replace the logits output by SPLADE-pooled weights, in place.

    max: log1p(relu(max over real positions of z_i)), activated on [batch, vocab] only (see
    `_max_over_positions` for how padding is kept out). sum (SPLADE v1): sum_i mask_i * log1p(relu(z_i)).
    With `top_k`, special tokens are zeroed and TopK emits `top_ids`/`top_weights` instead.
    """
    if MASK_INPUT not in {i.name for i in model.graph.input}:
        raise GraphRewriteError(f"graph has no {MASK_INPUT!r} input")
    logits = logits_output(model)
    vocab = vocab_size(model)
    float_type = logits.type.tensor_type.elem_type
    batch_dim = logits.type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_param or "batch_size"
    graph = _Builder(model, np.float16 if float_type == TensorProto.FLOAT16 else np.float32)

    mask = graph.op("Cast", [MASK_INPUT], to=TensorProto.BOOL)
    mask = graph.axes_op("Unsqueeze", mask, axis=2)
    if pooling == "max":
        pooled = graph.log1p(graph.op("Relu", [_max_over_positions(graph, mask, logits.name)]))
    elif pooling == "sum":
        weights = graph.log1p(graph.op("Relu", [logits.name]))
        masked = graph.op("Where", [mask, weights, graph.const(0.0)])
        pooled = graph.axes_op("ReduceSum", masked, axis=1, keepdims=0)
    else:
        raise ExportError(f"pooling must be 'max' or 'sum', got {pooling!r}")

    del model.graph.output[:]
    if top_k is None:
        graph.output(pooled, POOLED_OUTPUT, float_type, [batch, vocab])
        return model
    if not 0 < top_k <= vocab:
        raise ExportError(f"top_k must lie in [1, {vocab}], got {top_k}")
    keep = np.ones(vocab, dtype=graph.float)
    keep[list(special_ids)] = 0
    kept = graph.op("Mul", [pooled, graph.const(keep)])
    weights, ids = graph.op("TopK", [kept, graph.const(np.array([top_k], np.int64))], outputs=2,
                            axis=-1, largest=1, sorted=1)
    graph.output(ids, TOPK_IDS_OUTPUT, TensorProto.INT64, [batch, top_k])
    graph.output(weights, TOPK_WEIGHTS_OUTPUT, float_type, [batch, top_k])
    return model


def fuse_attention(model: onnx.ModelProto) -> int:
    """Fuse each layer's self-attention into one onnxruntime `Attention` op, in place; returns how many.

    Unfused, a BERT layer's attention is some 40 small ops (shape arithmetic, reshapes, transposes,
    mask add); at query lengths their dispatch costs more than their arithmetic, and one op per layer
    makes int8 queries faster (the graph lever of benchmarks/RESULTS.md measures both). onnxruntime's
    BERT optimizer finds attention by anchoring on SkipLayerNormalization, so it fuses those too;
    they are split back into Add + LayerNormalization here, because onnxruntime's CPU
    SkipLayerNormalization kernel is a scalar loop, slower than Add + LayerNormalization. The raw 2-D
    mask is kept, so the fused graph takes any padding side.
    """
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    # Each of these would leave a kernel that is slower on CPU than the ops it replaces (measured),
    # or quantise the embedding tables.
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    options.enable_embed_layer_norm = False
    optimized = optimize_model(model, model_type="bert", opt_level=0, optimization_options=options)
    _split_skip_layer_norms(optimized.model)
    optimized.topological_sort()
    if optimized.model is not model:
        model.CopyFrom(optimized.model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sum(node.op_type == "Attention" for node in model.graph.node)


def _split_skip_layer_norms(model: onnx.ModelProto) -> None:
    """SkipLayerNormalization(x, skip, gamma, beta[, bias]) -> Add(s) + LayerNormalization, in place."""
    nodes = []
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma, *rest = node.input
        beta, bias = (list(rest) + ["", ""])[:2]
        outputs = list(node.output) + [""] * (4 - len(node.output))
        if outputs[1] or outputs[2]:
            raise GraphRewriteError(f"{node.name}: SkipLayerNormalization mean/inv_std outputs are used; cannot split")
        total = outputs[3] or f"{PREFIX}{node.name}/sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, skip], [f"{total}/skip"], name=f"{node.name}/add_skip"))
            nodes.append(helper.make_node("Add", [f"{total}/skip", bias], [total], name=f"{node.name}/add_bias"))
        else:
            nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{node.name}/add_skip"))
        norm_inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(helper.make_node("LayerNormalization", norm_inputs, [outputs[0]], name=f"{node.name}/norm",
                                      axis=-1, epsilon=epsilon))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _max_over_positions(graph: _Builder, mask: str, logits: str) -> str:
    """max over real positions of the logits, [batch, vocab] (padding counts as 0 where it cannot be avoided).

    The [batch, length, vocab] logits dominate time and memory, so they are written once: padded
    positions get position 0's hidden state before the decoder (the runtime pads on the right, so
    position 0 is [CLS]) and repeat a real row, which cannot change a max; ReduceMax then reads the
    decoder MatMul directly and the bias add (or cast) between it and the logits runs on [batch, vocab],
    since max_i(z_i + b) = max_i(z_i) + b. Exact, and it halves peak memory (benchmarks/RESULTS.md).
    Graphs with a reshape on that path mask the logits
    (padding -> 0, exact because relu follows) and reduce those instead.
    """
    model = graph.model
    producers = {out: node for node in model.graph.node for out in node.output}
    decoder, path = _decoder_path(model, producers)
    if not all(_commutes_with_max(node, model) for node in path):
        masked = graph.op("Where", [mask, logits, graph.const(0.0)])
        return graph.axes_op("ReduceMax", masked, axis=1, keepdims=0)
    hidden = decoder.input[0]
    first = graph.op("Gather", [hidden, graph.const(np.array([0], np.int64))], axis=1)
    decoder.input[0] = graph.op("Where", [mask, hidden, first])
    pooled = graph.axes_op("ReduceMax", decoder.output[0], axis=1, keepdims=0)
    # The path now maps [batch, vocab] to [batch, vocab]: the logits name carries the pooled value.
    if path:
        path[0].input[:] = [pooled if name == decoder.output[0] else name for name in path[0].input]
        now_pooled = {name for node in path for name in node.output}
        stale = [info for info in model.graph.value_info if info.name in now_pooled]
        for info in stale:
            model.graph.value_info.remove(info)
    # The new nodes were appended after their consumers; ONNX wants producers first.
    OnnxModel.graph_topological_sort(model.graph)
    return logits if path else pooled


def _commutes_with_max(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """Identity, a float cast, or an add of a constant that is the same at every position."""
    if node.op_type == "Identity":
        return True
    if node.op_type == "Cast":
        return any(a.name == "to" and a.i in (TensorProto.FLOAT, TensorProto.FLOAT16) for a in node.attribute)
    if node.op_type == "Add":
        constants = {i.name: len(i.dims) for i in model.graph.initializer}
        return any(constants.get(name, 2) <= 1 for name in node.input)
    return False


class _Builder:
    """Appends uniquely named nodes and constants under the `splade/` prefix to a graph."""

    def __init__(self, model: onnx.ModelProto, float_dtype: type[np.floating]) -> None:
        self.model = model
        self.float = float_dtype
        self.opset = opset(model)
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{PREFIX}{stem}_{self.count}"

    def const(self, value: float | np.ndarray) -> str:
        array = np.asarray(value, dtype=self.float) if isinstance(value, float) else value
        name = self._name("const")
        self.model.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attributes):
        names = [self._name(op_type) for _ in range(outputs)]
        self.model.graph.node.append(helper.make_node(op_type, inputs, names, name=names[0], **attributes))
        return names[0] if outputs == 1 else names

    def axes_op(self, op_type: str, x: str, axis: int, **attributes) -> str:
        """Unsqueeze/ReduceMax/ReduceSum on one axis, in the form the graph's opset wants."""
        if self.opset >= AXES_INPUT_SINCE[op_type]:
            return self.op(op_type, [x, self.const(np.array([axis], np.int64))], **attributes)
        return self.op(op_type, [x], axes=[axis], **attributes)

    def log1p(self, x: str) -> str:
        """log(1 + x), accurate for tiny x: ONNX has no Log1p, and a plain Log(1 + x) rounds
        x < 6e-8 to 0, which would drop active terms. Kahan: x * log(u) / (u - 1), u = 1 + x."""
        one = self.const(1.0)
        u = self.op("Add", [x, one])
        d = self.op("Sub", [u, one])
        ratio = self.op("Div", [self.op("Mul", [x, self.op("Log", [u])]), d])
        return self.op("Where", [self.op("Equal", [d, self.const(0.0)]), x, ratio])

    def output(self, name: str, as_name: str, elem_type: int, shape: list[str | int]) -> None:
        """Expose `name` as graph output `as_name` (renaming its producer's output)."""
        for node in self.model.graph.node:
            for i, out in enumerate(node.output):
                if out == name:
                    node.output[i] = as_name
        self.model.graph.output.append(helper.make_tensor_value_info(as_name, elem_type, shape))
