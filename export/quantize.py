"""Precision variants of a fused SPLADE graph: int8 and fp16.

Both use onnxruntime's own tools only (no torch), so `convert` and `upgrade` share them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

# Dynamic quantisation settings recorded in the manifest; per-tensor int8 weights keep SPLADE
# weights at cosine >= 0.999 and run on every CPU.
INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": False, "reduce_range": False}


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
