"""benchmarks/retrieval_scale.py --smoke: every system on real and synthetic splade-tiny vectors, checked against
brute force; and those checks catch a wrong list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from benchmarks.retrieval_scale import load_csr, load_lists, mismatches, recall

# splade-index sits out: numba compiles its kernels again in every fresh process (15-40 s each here); the
# development and full runs measure it.
SYSTEMS = ["spladerunner", "scipy", "seismic"]
ROWS = ["spladerunner SparseIndex float32", "spladerunner SparseIndex float16", "scipy CSR", "Seismic query_cut="]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run (its own vector cache: expands 2 x 100 documents) keeping every system's top-k lists."""
    out = tmp_path_factory.mktemp("scale")
    command = [sys.executable, "-m", "benchmarks.retrieval_scale", "--smoke", "--systems", *SYSTEMS, "--cache-dir",
               str(out / "cache"), "--work", str(out / "work"), "--output", str(out / "RESULTS-retrieval-scale.md")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]  # 1 when an exact system is wrong
    return out


def test_smoke_report_has_every_system_on_every_corpus(smoke: Path) -> None:
    report = (smoke / "RESULTS-retrieval-scale.md").read_text(encoding="utf-8")
    corpora = report.split("\n## ")[1:]
    assert corpora[0].startswith("Synthetic corpus against its templates")
    assert [c.split("\n", 1)[0] for c in corpora[1:3]] == ["dl19-subset (real, splade-tiny)",
                                                          "synthetic (1,000 documents)"]
    for table in corpora[1:3]:
        rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
        for name in ROWS:
            assert any(row.startswith(f"| {name}") for row in rows), name
        for row in rows:
            exact = row.startswith(("| spladerunner SparseIndex float32", "| scipy"))
            assert ("k=10: yes" in row and "k=50: yes" in row) if exact else "(approximate)" in row, row
    assert "How cost grows from 100 to 1,000 documents" in report
    assert "<!-- begin RESULTS-retrieval-scale.md" in (smoke / "RESULTS.md").read_text(encoding="utf-8")


def test_identity_and_recall_checks_catch_a_wrong_list(smoke: Path) -> None:
    work = smoke / "work" / "synthetic"
    docs = load_csr(next((smoke / "cache").glob("synthetic-1000-*")))
    queries = load_csr(next((smoke / "cache").glob("queries-100-*")))
    reference = load_lists(work / "reference.npz")
    found = load_lists(work / "scipy" / "0-k10.npz")
    assert mismatches(reference, found, 10, docs, queries)[0] == 0 and recall(reference[0], found[0], 10) == 1.0
    query = int(np.argmax((found[0] >= 0).sum(axis=1)))
    outsider = int(reference[0][query, 10])  # the 11th document: not in the top 10 unless tied with the 10th
    assert reference[1][query, 10] < reference[1][query, 9] * (1 - 1e-4)
    swapped = found[0].copy(), found[1].copy()
    swapped[0][query, 9] = outsider  # a wrong document with the right score
    assert mismatches(reference, swapped, 10, docs, queries)[0] == 1
    assert recall(reference[0], swapped[0], 10) < 1.0
    rescored = found[0], found[1].copy()
    rescored[1][query, 0] *= 1.001  # the right documents with a wrong score
    assert mismatches(reference, rescored, 10, docs, queries)[0] == 1
