"""The GPU benchmark script keeps working: its CPU dry run writes a row for every system."""

import subprocess
import sys

from paths import REPO


def test_gpu_script_dry_run_on_cpu(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--size", "tiny", "--providers", "cpu",
                             "--documents", "6", "--queries", "3", "--rounds", "1", "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "RESULTS-gpu.md").read_text()
    for system in ("spladerunner fp16", "spladerunner fp32", "onnxruntime fp16", "fastembed", "sentence-transformers"):
        assert f"| {system} |" in report
    assert "vs fastembed" in report and (tmp_path / "results-gpu.json").is_file()


def test_cuda_check_batch_invariance_runs_on_cpu(tiny_bert_export):
    """The CUDA check's batch-invariance measure, run on the CPU provider where it must hold: the script a GPU
    machine runs measures what the CPU tests promise."""
    from benchmarks.cuda_check import BATCH_INVARIANCE, batch_variation
    from benchmarks.texts import documents, queries

    texts = queries(4) + documents(6) + [""]
    for precision in ("fp32", "fp16"):
        assert batch_variation(tiny_bert_export, precision, ["cpu"], texts) <= BATCH_INVARIANCE
