"""Offline export toolkit: masked-LM checkpoints or foreign logits graphs -> spladerunner model folders.

Installed as `spladerunner_export` (the folder `export/`, mapped in pyproject.toml) with the `export`
extra; the runtime package `spladerunner` never imports it.

`convert` (torch + optimum) and `upgrade` (onnx + onnxruntime only) both end in `build`, which fuses
SPLADE pooling into the graph (`graph`), makes int8/fp16 variants (`quantize`), checks parity
(`parity`) and writes the manifest. `factory` makes calibrated random-init test checkpoints.
"""
