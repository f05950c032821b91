"""CUDA correctness check (GPU machines only; never part of the test suite).

    python -m benchmarks.cuda_check

Exports a tiny test model (fp32 + fp16), then checks that `Expander(providers=["cuda"])` really runs on
CUDA (the session's active providers) and that its vectors match the CPU fp32 ones.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    import onnxruntime

    from spladerunner import Expander
    from spladerunner_export.build import ExportOptions
    from spladerunner_export.convert import export_checkpoint
    from spladerunner_export.factory import make_test_model

    from .texts import TOKENIZER, calibration_texts, documents, queries

    print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
    root = Path(tempfile.mkdtemp(prefix="cuda-check-"))
    checkpoint = make_test_model(root / "checkpoint", tokenizer=TOKENIZER, calibration=calibration_texts())
    export_checkpoint(root / "model", checkpoint, options=ExportOptions(precisions=("fp32", "fp16")))
    texts = queries(16) + documents(16)
    reference = Expander(root / "model", precision="fp32").expand_batch(texts).to_dense()
    failed = False
    for precision, bound in (("fp32", 1e-4), ("fp16", 5e-2)):
        expander = Expander(root / "model", precision=precision, providers=["cuda"])
        active = expander.session("document").providers
        dense = expander.expand_batch(texts).to_dense()
        diff = float(np.abs(dense - reference).max())
        cosine = min(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(dense, reference))
        ok = active[0] == "CUDAExecutionProvider" and diff <= bound
        failed |= not ok
        print(f"{precision} on {active}: max abs diff vs CPU fp32 {diff:.2e} (bound {bound}), "
              f"min cosine {cosine:.6f}: {'ok' if ok else 'FAILED'}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
