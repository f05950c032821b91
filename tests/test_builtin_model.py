"""The built-in model: splade-tiny's int8 export shipped inside the package, loaded by name without network.

It must be exactly what the recorded command builds from the recorded checkpoint, stay within the wheel
budget, pass its export gate, and run the README's first command offline in seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from paths import REPO, SPLADE_TINY
from test_splade_tiny import CARD_TEXTS, assert_close_to_the_card

from spladerunner import Expander, ModelNotFoundError
from spladerunner.loading import BUILTIN_FOLDER, BUILTIN_MODELS, open_source
from spladerunner.manifest import Manifest

CATALOGUE = json.loads((REPO / "models" / "catalogue.json").read_text(encoding="utf-8"))
[BUILTIN_ENTRY] = [model for model in CATALOGUE["models"] if model.get("builtin")]
FOLDER = BUILTIN_FOLDER / "splade-tiny"
# The wheel's budget for everything the package carries (zip-compressed).
WHEEL_BUDGET = 10 * 1024 * 1024


def test_the_builtin_model_loads_by_name_from_the_package():
    assert (BUILTIN_ENTRY["id"],) == BUILTIN_MODELS
    source = open_source("splade-tiny")
    assert source.folder == FOLDER and source.folder.is_relative_to(REPO / "spladerunner")
    expander = Expander("splade-tiny")
    assert expander.precision == "int8" and expander.manifest.gate("int8").passed


def test_the_builtin_model_ships_int8_alone_and_its_gate_passed():
    manifest = Manifest.read(FOLDER)
    assert {mode: list(variants) for mode, variants in manifest.encoders.items()} == {"query": ["int8"],
                                                                                       "document": ["int8"]}
    assert manifest.parity["passed"] is True
    assert sorted(p.name for p in FOLDER.iterdir()) == ["LICENSE", "model_int8.onnx", "spladerunner.json",
                                                         "tokenizer.json"]


def test_the_builtin_model_is_the_recorded_checkpoint():
    """Its manifest's checkpoint hashes are the shared splade-tiny's published SHA256SUMS and the catalogue's."""
    recorded = Manifest.read(FOLDER).source["sha256"]
    sums = dict(reversed(line.split()) for line in (SPLADE_TINY / "SHA256SUMS").read_text().splitlines())
    assert {name: recorded[name] for name in sums} == sums
    assert BUILTIN_ENTRY["checkpoint_sha256"] == sums


def test_the_builtin_model_is_what_the_recorded_command_builds(tmp_path):
    """Rebuild with the catalogue's command (output redirected): the same graph, byte for byte."""
    argv = shlex.split(BUILTIN_ENTRY["convert"])
    assert argv[:2] == ["spladerunner-export", "convert"] and argv[3] == "spladerunner/builtin/splade-tiny"
    from spladerunner_export.cli import main

    assert main([*argv[1:3], str(tmp_path / "rebuilt"), *argv[4:]]) == 0
    rebuilt, shipped = Manifest.read(tmp_path / "rebuilt"), Manifest.read(FOLDER)
    assert rebuilt.encoders == shipped.encoders  # paths and sha256 of every graph
    assert (tmp_path / "rebuilt" / "tokenizer.json").read_bytes() == (FOLDER / "tokenizer.json").read_bytes()


def test_the_builtin_model_comes_close_to_the_model_card():
    assert_close_to_the_card(Expander("splade-tiny").expand_batch(CARD_TEXTS))


def test_the_catalogue_quotes_the_measured_quality():
    """The catalogue's nDCG@10 figures are the quality report's row for the built-in model, not typed by hand."""
    report = (REPO / "benchmarks" / "RESULTS-quality.md").read_text(encoding="utf-8")
    for corpus, key in (("SciFact", "beir_scifact_ndcg@10"), ("DL19 subset", "dl19_subset_ndcg@10")):
        [row] = [line for line in report.splitlines() if line.startswith(f"| {corpus}: built-in splade-tiny")]
        assert float(row.split("|")[2]) == BUILTIN_ENTRY["figures"][key]


def test_a_folder_of_the_same_name_is_an_error_not_a_guess(tmp_path, monkeypatch):
    (tmp_path / "splade-tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"'\./splade-tiny' for the folder"):
        open_source("splade-tiny")
    assert open_source("./splade-tiny").folder == Path("./splade-tiny")


def test_the_wheel_carries_the_builtin_model_within_budget(tmp_path):
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("spladerunner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"spladerunner/builtin/splade-tiny/{p.name}" for p in FOLDER.iterdir()} <= names
    assert wheel.stat().st_size <= WHEEL_BUDGET, wheel.stat().st_size


def test_the_readme_first_command_runs_offline_in_seconds(tmp_path):
    """The README's first command, minus its install, with the Hub unreachable (a closed local port) and
    offline mode NOT set: real SPLADE terms come out, fast, from the built-in model."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()[-1]
    command = first.split("&&", 1)[1].strip()
    assert "--model splade-tiny" in command
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    started = time.perf_counter()
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    terms = json.loads(result.stdout.splitlines()[0])
    weights = terms["vector"]
    assert {"seasons", "earth"} <= set(weights), weights
    assert len(weights) == 10 and all(np.isfinite(list(weights.values())))
    assert elapsed < 20, elapsed
    assert not (tmp_path / "hf").exists()  # nothing was looked up in, or written to, a Hub cache
