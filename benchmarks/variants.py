"""A prototype graph change measured as a lever: make the [batch, length, vocab] logits once, reduce at once.

`spladerunner-export` fuses max pooling as Add(bias) -> Where(mask) -> ReduceMax over the logits, so
the biggest tensor of the graph is written three times (fp32) and held twice. Exact rewrite:

- padding: before the MLM decoder, replace each padded position's hidden state by the row's first
  ([CLS]) hidden state: padded positions then repeat a real position's logits and cannot change a max;
- bias: max_i(z_i + b) = max_i(z_i) + b, so the bias is added after ReduceMax, on [batch, vocab].

The decoder MatMul then feeds ReduceMax directly. This module only measures the idea; the change
belongs in `export/graph.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

PREFIX = "bench_lean/"


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def lean_max_pooling(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a fused max-pooling SPLADE graph in place (see the module docstring)."""
    nodes = list(model.graph.node)
    producers = _producers(model)
    initializers = {i.name for i in model.graph.initializer}
    reduce = next(n for n in nodes if n.op_type == "ReduceMax")
    where = producers[reduce.input[0]]
    if where.op_type != "Where":
        raise ValueError(f"expected Where before ReduceMax, found {where.op_type}")
    mask, logits = where.input[0], where.input[1]
    bias_add = producers[logits]
    if bias_add.op_type != "Add":
        raise ValueError(f"expected the decoder bias Add before the mask, found {bias_add.op_type}")
    bias = next(i for i in bias_add.input if i in initializers)
    decoded = next(i for i in bias_add.input if i != bias)
    decoder = producers[decoded]
    hidden = decoder.input[0]
    axes_as_input = any(o.version >= 13 for o in model.opset_import if o.domain in ("", "ai.onnx"))

    def const(name: str, value: np.ndarray) -> str:
        model.graph.initializer.append(numpy_helper.from_array(value, PREFIX + name))
        return PREFIX + name

    first = helper.make_node("Gather", [hidden, const("zero", np.array([0], np.int64))], [PREFIX + "first"],
                             name=PREFIX + "first", axis=1)
    padded_as_first = helper.make_node("Where", [mask, hidden, PREFIX + "first"], [PREFIX + "hidden"],
                                       name=PREFIX + "hidden")
    add_bias = helper.make_node("Add", [PREFIX + "max", bias], [PREFIX + "max_plus_bias"], name=PREFIX + "bias")
    if axes_as_input:
        new_reduce = helper.make_node("ReduceMax", [decoded, const("axis", np.array([1], np.int64))],
                                      [PREFIX + "max"], name=PREFIX + "max", keepdims=0)
    else:
        new_reduce = helper.make_node("ReduceMax", [decoded], [PREFIX + "max"], name=PREFIX + "max", axes=[1],
                                      keepdims=0)
    decoder.input[0] = PREFIX + "hidden"
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == reduce.output[0]:
                node.input[i] = PREFIX + "max_plus_bias"
    # Rebuild the node list in a valid order: the mask's producers come before the decoder.
    kept = [n for n in nodes if n not in (where, bias_add, reduce)]
    mask_chain = _ancestors(mask, producers, stop=set(initializers) | {i.name for i in model.graph.input})
    body = [n for n in kept if n not in mask_chain]
    at = body.index(decoder)
    ordered = body[:at] + [n for n in kept if n in mask_chain] + [first, padded_as_first] + body[at:at + 1]
    ordered += [new_reduce, add_bias] + body[at + 1:]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    used = {name for node in ordered for name in node.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for initializer in unused:
        model.graph.initializer.remove(initializer)
    return model


def _ancestors(name: str, producers: dict[str, onnx.NodeProto], stop: set[str]) -> list[onnx.NodeProto]:
    found: list[onnx.NodeProto] = []
    pending = [name]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node in found:
            continue
        found.append(node)
        pending += [i for i in node.input if i not in stop]
    return found


def write_lean_export(source: Path, target: Path) -> Path:
    """Copy an export folder with its fp32 graph rewritten and int8 re-quantised from it (same settings)."""
    from export.quantize import quantize_int8

    manifest = json.loads((source / "spladerunner.json").read_text(encoding="utf-8"))
    graphs = {mode: entries for mode, entries in manifest["encoders"].items()}
    fp32 = graphs["document"]["fp32"]["path"]
    int8 = graphs["document"]["int8"]["path"]
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.suffix != ".onnx" and not item.name.endswith(".onnx.data"):
            shutil.copy2(item, target / item.name)
    onnx.save(lean_max_pooling(onnx.load(source / fp32)), target / fp32)
    quantize_int8(target / fp32, target / int8)
    for entries in graphs.values():
        for entry in entries.values():
            entry.pop("sha256", None)
    (target / "spladerunner.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target
