"""benchmarks/bench_search.py --smoke: runs in seconds and checks its results against bm25s."""

from __future__ import annotations

import runpy

import pytest
from paths import REPO


def test_smoke_run_agrees_with_bm25s(capsys: pytest.CaptureFixture[str]) -> None:
    import bm25s  # noqa: F401  (required test dependency)
    import scipy  # noqa: F401  (required test dependency)
    bench = runpy.run_path(str(REPO / "benchmarks" / "bench_search.py"))
    assert bench["main"](["--smoke"]) == 0  # raises if a top-k list differs from bm25s's
    out = capsys.readouterr().out
    assert out.count("| yes |") == 8  # 2 corpora x binary/weighted x k=10/100
    for precision in ("float32", "float16", "impact"):
        assert f"| {precision} |" in out
