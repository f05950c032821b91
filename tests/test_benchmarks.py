"""The benchmark harness keeps working: `python -m benchmarks.run --smoke` writes every table, metric and system."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.plan import GRAPH_LEVER
from benchmarks.systems import INSTALL_HINT

REPO = Path(__file__).resolve().parents[1]
PEERS = ("fastembed", "sentence_transformers", "psutil", "matplotlib")
SYSTEMS = ["spladerunner int8", "spladerunner fp32", "onnxruntime int8", "onnxruntime fp32", "fastembed",
           "sentence-transformers"]
# Section -> the first-column entries its table must have.
TABLES = {
    "Document throughput": SYSTEMS,
    "Query latency (batch 1)": SYSTEMS,
    "Peak memory": SYSTEMS,
    "Cold start and import": ["spladerunner int8", "fastembed", "sentence-transformers",
                              "`from fastembed import SparseTextEmbedding`",
                              "`from sentence_transformers import SparseEncoder`",
                              "`from spladerunner import Expander`", "`import onnxruntime`",
                              "`import spladerunner`"],
    "Output agreement (same weights, same texts)": [s for s in SYSTEMS if s != "spladerunner fp32"],
    "Throughput against padded length and batch size": ["spladerunner int8", "spladerunner fp32", "fastembed",
                                                         "sentence-transformers"],
}
TARGETS = ["int8 document throughput vs fastembed", "int8 document throughput vs sentence-transformers",
           "fp32 document throughput vs fastembed", "peak RSS expanding", "query latency p50 (batch 1) vs fastembed",
           "query latency p50 vs bare onnxruntime, int8", "cold start", "`import spladerunner`",
           "end-to-end vs bare onnxruntime throughput, int8"]
LEVERS = ["max_tokens", "threads", "session options", GRAPH_LEVER]


def sections(markdown: str) -> dict[str, str]:
    parts = markdown.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row in `text` (header and separator rows skipped)."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows if not set("".join(row)) <= set("-") and row[0] not in ("system", "target",
                                                                                        "statement", "stack",
                                                                                        "variant")]


@pytest.fixture(scope="module", params=["test-model", "splade-tiny"])
def smoke(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run on the factory's test model, and one on the real splade-tiny (`--model splade-tiny`)."""
    missing = [module for module in PEERS if importlib.util.find_spec(module) is None]
    if missing:
        pytest.fail(f"the benchmark smoke test needs {', '.join(missing)}: {INSTALL_HINT}")
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--model", request.param,
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


def test_smoke_writes_results_plot_and_raw_data(smoke: Path) -> None:
    assert (smoke / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((smoke / "results.json").read_text())
    assert raw["results"] and raw["agreement"] and raw["context"]["machine"]
    assert "SMOKE RUN" in (smoke / "RESULTS.md").read_text()


def test_every_table_has_every_system_and_no_missing_figure(smoke: Path) -> None:
    found = sections((smoke / "RESULTS.md").read_text())
    for title, expected in TABLES.items():
        rows = table_rows(found[title])
        assert {row[0] for row in rows} >= set(expected), title
        assert not any("n/a" in row for row in rows), (title, [r for r in rows if "n/a" in r])


def test_every_target_is_measured_and_judged(smoke: Path) -> None:
    rows = table_rows(sections((smoke / "RESULTS.md").read_text())["Targets"])
    for claim in TARGETS:
        matching = [row for row in rows if row[0].startswith(claim)]
        assert matching, claim
        assert all(row[3] in ("PASS", "MISS") for row in matching), matching


def test_levers_installed_size_and_gpu_note(smoke: Path) -> None:
    found = sections((smoke / "RESULTS.md").read_text())
    levers = found["Levers: what moves our speed and memory"]
    for lever in LEVERS:
        assert f"**{lever}**" in levers
    assert not any("n/a" in row for row in table_rows(levers))
    assert len(table_rows(found["Installed size of the dependency closure"])) == 3
    assert "No GPU figure of this model exists yet" in found["GPU"]  # the smoke folder holds no GPU report
    for metric in ("docs/s", "p50 ms", "p95 ms", "peak RSS", "cold", "import s", "MB on disk", "max abs diff"):
        assert metric in (smoke / "RESULTS.md").read_text(), metric


def test_report_rewrites_from_raw_results(smoke: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--from-json", str(smoke / "results.json"),
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "RESULTS.md").read_text() == (smoke / "RESULTS.md").read_text()


def test_quality_smoke_run_matches_sentence_transformers_at_fp32() -> None:
    """benchmarks/quality.py --smoke on the real splade-tiny: our fp32 retrieval equals sentence-transformers'
    on the same weights (same max lengths, same exact index)."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.quality", "--smoke"], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ") and ":" in line}
    for corpus in ("SciFact", "DL19 subset"):
        ours, theirs = rows[f"{corpus}: spladerunner fp32"], rows[f"{corpus}: sentence-transformers (torch fp32)"]
        assert ours[:3] == theirs[:3] and float(ours[0]) > 0.5  # nDCG@10, MRR@10, recall@100
        assert abs(float(rows[f"{corpus}: built-in splade-tiny (spladerunner int8)"][0]) - float(ours[0])) < 0.05


def test_publish_mirrors_each_companion_report_into_results_md(tmp_path: Path) -> None:
    from benchmarks.report import publish

    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nmain body\n", encoding="utf-8")
    publish("# Search (first run)\n\n## Table\n\n| a |\n", tmp_path / "RESULTS-search.md")
    publish("# Serverless\n\nfigures\n", tmp_path / "RESULTS-serverless.md")
    publish("# Search (second run)\n\nnew figures\n", tmp_path / "RESULTS-search.md")  # replaced in place
    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\nmain body\n")
    assert text.count("<!-- begin RESULTS-search.md") == 1 and text.count("<!-- end RESULTS-search.md -->") == 1
    assert "first run" not in text and "## Search (second run)\n\nnew figures" in text  # headings one level down
    assert text.index("RESULTS-search.md") < text.index("RESULTS-serverless.md")  # kept its place
    assert (tmp_path / "RESULTS-search.md").read_text(encoding="utf-8") == "# Search (second run)\n\nnew figures\n"
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files renamed into place


def test_results_writer_keeps_the_mirrored_reports(tmp_path: Path) -> None:
    from benchmarks import run
    from benchmarks.report import publish

    publish("# Retrieval at scale\n\nfigures\n", tmp_path / "RESULTS-retrieval-scale.md")
    assert run.main(["--from-json", str(REPO / "benchmarks" / "results.json"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "## Document throughput" in text  # the main report was written...
    assert text.count("<!-- begin RESULTS-retrieval-scale.md") == 1 and "## Retrieval at scale\n\nfigures" in text
    assert run.main(["--from-json", str(REPO / "benchmarks" / "results.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "RESULTS.md").read_text(encoding="utf-8") == text  # ...and rewritten without losing it


def test_real_model_report_is_mirrored_into_results_md(tmp_path: Path) -> None:
    """The splade-tiny report (its own folder) shows in RESULTS.md beside the BERT-base one, its plot link
    rebased, and survives the BERT-base report being rewritten."""
    from benchmarks import run

    main_json, tiny_json = REPO / "benchmarks" / "results.json", REPO / "benchmarks" / "splade-tiny" / "results.json"
    assert run.main(["--from-json", str(main_json), "--out", str(tmp_path)]) == 0
    tiny = tmp_path / "splade-tiny"
    assert run.main(["--from-json", str(tiny_json), "--out", str(tiny), "--mirror-into",
                     str(tmp_path / "RESULTS.md")]) == 0
    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert text.count("<!-- begin splade-tiny/RESULTS.md") == 1
    mirrored = text[text.index("<!-- begin splade-tiny/RESULTS.md"):]
    assert "## spladerunner benchmark results: the real splade-tiny" in mirrored
    assert "### Document throughput" in mirrored and "](splade-tiny/throughput.png)" in mirrored
    assert "](throughput.png)" in (tiny / "RESULTS.md").read_text(encoding="utf-8")
    assert run.main(["--from-json", str(main_json), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "RESULTS.md").read_text(encoding="utf-8") == text
    with pytest.raises(SystemExit, match="must lie under"):
        run.main(["--from-json", str(tiny_json), "--out", str(tiny), "--mirror-into",
                  str(tmp_path / "elsewhere" / "RESULTS.md")])


def test_committed_results_md_shows_the_real_model() -> None:
    """benchmarks/RESULTS.md carries the real splade-tiny's speed report exactly as its own folder has it."""
    from benchmarks.report import mirrored_sections

    text = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    section = next(s for s in mirrored_sections(text).split("<!-- begin ")[1:] if s.startswith("splade-tiny/"))
    report = (REPO / "benchmarks" / "splade-tiny" / "RESULTS.md").read_text(encoding="utf-8")
    for line in report.splitlines():
        if line.startswith("| spladerunner int8 |"):
            assert line in section
