"""Read what the runtime needs from an ONNX file without the `onnx` package: the position-table size.

A max length beyond a graph's position-embedding table fails deep inside onnxruntime at the first long
text; reading the table's row count at load refuses it at construction instead. The ONNX file is walked
as raw protobuf (memory-mapped, tensor data skipped, never copied), a small fraction of a session's start.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# ModelProto.graph, GraphProto.node / .initializer, NodeProto.input / .op_type, TensorProto.dims / .name.
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_INITIALIZER = 7, 1, 5
_NODE_INPUT, _NODE_OP_TYPE = 1, 4
_TENSOR_DIMS, _TENSOR_NAME = 1, 8
# onnxruntime's fused embedding op takes the position table as its fourth input.
_EMBED_OPS = {"EmbedLayerNormalization": 3}


class _ScanError(ValueError):
    pass


def _varint(data, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _ScanError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data, start: int, stop: int):
    """(field number, wire type, value) of one message; length-delimited values are (start, stop) spans."""
    pos = start
    while pos < stop:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise _ScanError(f"unsupported wire type {wire}")
        if pos > stop:
            raise _ScanError("field runs past its message")
        yield number, wire, value


def _text(data, span: tuple[int, int]) -> str:
    return bytes(data[span[0]:span[1]]).decode("utf-8", errors="replace")


def _dims(data, wire: int, value) -> list[int]:
    if wire == 0:
        return [value]
    dims, pos = [], value[0]
    while pos < value[1]:  # packed repeated int64
        dim, pos = _varint(data, pos)
        dims.append(dim)
    return dims


def position_table_size(path: str | Path) -> int | None:
    """Rows of the graph's position-embedding table, or None when it cannot be identified.

    The table is a rank-2 initializer gathered by a `Gather` (or the fused `EmbedLayerNormalization`)
    whose name says "position" (`bert.embeddings.position_embeddings.weight`, `..._quantized` in int8
    graphs): the Hugging Face naming that torch and optimum exports, our fusions and quantisation keep.
    """
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _scan(data)
    except (OSError, ValueError):
        return None


def _scan(data) -> int | None:
    graph = next((value for number, wire, value in _fields(data, 0, len(data))
                  if number == _MODEL_GRAPH and wire == 2), None)
    if graph is None:
        return None
    gathered: set[str] = set()
    shapes: dict[str, list[int]] = {}
    for number, wire, value in _fields(data, *graph):
        if wire != 2:
            continue
        if number == _GRAPH_NODE:
            inputs, op_type = [], ""
            for field, kind, item in _fields(data, *value):
                if field == _NODE_INPUT and kind == 2:
                    inputs.append(_text(data, item))
                elif field == _NODE_OP_TYPE and kind == 2:
                    op_type = _text(data, item)
            if op_type == "Gather" and inputs:
                gathered.add(inputs[0])
            elif op_type in _EMBED_OPS and len(inputs) > _EMBED_OPS[op_type]:
                gathered.add(inputs[_EMBED_OPS[op_type]])
        elif number == _GRAPH_INITIALIZER:
            name, dims = "", []
            for field, kind, item in _fields(data, *value):
                if field == _TENSOR_NAME and kind == 2:
                    name = _text(data, item)
                elif field == _TENSOR_DIMS:
                    dims.extend(_dims(data, kind, item))
            shapes[name] = dims
    sizes = {shapes[name][0] for name in gathered
             if name in shapes and len(shapes[name]) == 2 and "position" in name.lower()}
    return sizes.pop() if len(sizes) == 1 else None
