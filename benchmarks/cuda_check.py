"""CUDA correctness check (GPU machines only; never part of the test suite).

    python -m benchmarks.cuda_check

Exports a tiny test model (fp32 + fp16), then checks, for each precision, that `Expander(providers=["cuda"])`
really runs on CUDA (the session's active providers), that its vectors match the CPU fp32 ones, and that
they are batch invariant there: each text alone equals the same text in mixed batches of other sizes and
orders (CUDA kernels may choose another reduction per shape, which onnxruntime's CPU provider never does).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

# The promise of the README and the CPU tests (tests/test_export_int8.py): within 1e-5 however texts are batched.
BATCH_INVARIANCE = 1e-5
# Batcher settings that put each text beside different neighbours, padded to different widths.
BATCHINGS = ({"max_tokens": 300, "max_batch_size": 3}, {"max_tokens": 4096, "max_batch_size": 16})


def batch_variation(folder: Path, precision: str, providers: list[str], texts: list[str]) -> float:
    """Largest absolute difference between each text expanded alone and in the batches of `BATCHINGS`,
    in the given and the reversed order, documents and queries."""
    from spladerunner import Expander

    worst = 0.0
    for query in (False, True):
        single = Expander(folder, precision=precision, providers=providers, max_batch_size=1)
        alone = np.concatenate([single.expand_batch([text], query=query).to_dense() for text in texts])
        for settings in BATCHINGS:
            expander = Expander(folder, precision=precision, providers=providers, **settings)
            for order in (texts, texts[::-1]):
                together = expander.expand_batch(order, query=query).to_dense()
                together = together if order is texts else together[::-1]
                worst = max(worst, float(np.abs(together - alone).max()))
    return worst


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
        variation = batch_variation(root / "model", precision, ["cuda"], texts)
        ok = active[0] == "CUDAExecutionProvider" and diff <= bound and variation <= BATCH_INVARIANCE
        failed |= not ok
        print(f"{precision} on {active}: max abs diff vs CPU fp32 {diff:.2e} (bound {bound}), "
              f"min cosine {cosine:.6f}, alone vs batched {variation:.2e} (bound {BATCH_INVARIANCE}): "
              f"{'ok' if ok else 'FAILED'}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
