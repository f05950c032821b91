"""benchmarks/bench_search.py --smoke: runs in seconds and checks its results against bm25s."""

from __future__ import annotations

import subprocess
import sys

from paths import REPO


def test_smoke_run_agrees_with_bm25s() -> None:
    import bm25s  # noqa: F401  (required test dependency)
    import scipy  # noqa: F401  (required test dependency)
    # A real process, as users run it (its process-pool workers need an importable module).
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_search", "--smoke"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr  # fails if a top-k list differs from bm25s's
    out = result.stdout
    assert out.count("| yes |") == 8  # 2 corpora x binary/weighted x k=10/100
    for precision in ("float32", "float16", "impact"):
        assert f"| {precision} |" in out
    assert "| 16 queries per call |" in out
