"""Precision variants of a fused SPLADE graph: ORT transformer fusions, int8 and fp16.

All three use onnxruntime's own tools only (no torch), so `convert` and `upgrade` share them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.optimizer import optimize_model

# Dynamic quantisation settings recorded in the manifest; per-tensor int8 weights keep SPLADE
# weights at cosine >= 0.999 and run on every CPU.
INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": False, "reduce_range": False}


def optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fuse attention, layer norms and GELU with ORT's BERT optimizer (python fusions, no ORT level).

    Heads and hidden size are detected from the graph; the fused ops are ORT contrib ops, which is
    all the runtime ever runs.
    """
    optimized = optimize_model(model, model_type="bert", opt_level=0)
    optimized.topological_sort()
    fused = optimized.model
    if not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused


def quantize_int8(source: Path, target: Path) -> dict:
    """Dynamic int8 quantisation of the fp32 graph at `source` into `target`; returns its settings."""
    quantize_dynamic(source, target, weight_type=QuantType.QInt8,
                     per_channel=INT8_SETTINGS["per_channel"], reduce_range=INT8_SETTINGS["reduce_range"],
                     # ONNX shape inference cannot type the outputs of ORT's fused contrib ops.
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "onnxruntime.quantization.quantize_dynamic", **INT8_SETTINGS,
            "onnxruntime": onnxruntime.__version__}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute with fp32/int64 inputs and outputs (for CUDA; CPU support is partial)."""
    return convert_float_to_float16(model, keep_io_types=True)
