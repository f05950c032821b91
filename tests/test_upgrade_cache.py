"""A hub model that ships only a logits graph runs upgraded (fused pooling, per-token int8) once cached.

Real HF cache layout (`cache_dir=`, no network: the snapshot is cached), the real toolkit in a child
process (`upgrade=True` runs `spladerunner-export upgrade org/name --revision <commit>` with no output
argument, so this also covers the command's default output), the real runtime checks on the result.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hf_cache import populate_hf_cache

from spladerunner import Expander, InputError, ManifestError
from spladerunner.upgrade_cache import upgraded_folder

COMMIT = "d" * 40
TEXTS = ["what causes the seasons on earth", "the tilt of the axis of the earth relative to its orbit", "x"]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, foreign_logits_folder):
    cache = tmp_path_factory.mktemp("upgrade-cache") / "hub"
    populate_hf_cache(cache, "acme/logits-only", foreign_logits_folder, COMMIT)
    return str(cache)


def expand(expander: Expander) -> np.ndarray:
    return expander.expand_batch(TEXTS).to_dense()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_without_the_upgraded_folder_one_warning_names_the_command(hub_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="spladerunner"):
        first = Expander("acme/logits-only", cache_dir=hub_cache)
        Expander("acme/logits-only", cache_dir=hub_cache)
    assert first.graph("document").output == "logits" and first.precision == "fp32"
    [warning] = warnings_of(caplog)  # one per model and process
    assert "`spladerunner-export upgrade acme/logits-only`" in warning
    assert str(upgraded_folder("acme/logits-only", COMMIT)) in warning and "upgrade=True" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spladerunner"):
        Expander("acme/logits-only", cache_dir=hub_cache, upgrade=False)
    assert warnings_of(caplog) == []


def test_upgrade_true_converts_once_and_the_folder_is_used_and_checked(hub_cache, foreign_logits_folder, caplog):
    logits = Expander(foreign_logits_folder)
    upgraded = Expander("acme/logits-only", cache_dir=hub_cache, upgrade=True)
    folder = upgraded_folder("acme/logits-only", COMMIT)
    assert upgraded.source.folder == folder and not list(folder.parent.glob(".*upgrading*"))
    assert upgraded.precision == "int8" and upgraded.graph("document").output == "pooled"
    assert upgraded.max_length == logits.max_length  # the graph changes, never the cut
    fp32 = Expander("acme/logits-only", cache_dir=hub_cache, precision="fp32")  # upgrade=None: the cached folder
    assert fp32.source.folder == folder and fp32.graph("document").output == "pooled"
    np.testing.assert_allclose(expand(fp32), expand(logits), atol=1e-4)
    reference, quantised = expand(logits), expand(upgraded)
    cosine = (reference * quantised).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(quantised, axis=1)
    assert cosine.min() >= 0.99

    manifest_path = folder / "spladerunner.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    try:
        manifest["parity"]["graphs"]["model"]["int8"]["passed"] = False  # int8 failed: the fused fp32 runs
        manifest_path.write_text(json.dumps(manifest))
        expander = Expander("acme/logits-only", cache_dir=hub_cache)
        assert expander.precision == "fp32" and expander.source.folder == folder
        manifest["parity"]["graphs"]["model"]["fp32"]["passed"] = False  # all failed: back to the logits graph
        manifest_path.write_text(json.dumps(manifest))
        with caplog.at_level(logging.WARNING, logger="spladerunner"):
            expander = Expander("acme/logits-only", cache_dir=hub_cache)
        assert expander.graph("document").output == "logits" and not expander.source.is_local
        assert any("failed the export's parity gate" in w and "logits graph instead" in w for w in warnings_of(caplog))
        manifest["source"]["revision"] = "e" * 40  # a folder claiming another origin is refused
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ManifestError, match="delete it and upgrade again"):
            Expander("acme/logits-only", cache_dir=hub_cache)
    finally:
        manifest_path.write_text(original)


def test_the_environment_variable_sets_the_default(monkeypatch):
    from spladerunner.upgrade_cache import UPGRADE_ENV, wanted

    for value, expected in (("1", True), ("yes", True), ("0", False), ("false", False), ("", None)):
        monkeypatch.setenv(UPGRADE_ENV, value)
        assert wanted(None) is expected
        assert wanted(True) is True and wanted(False) is False  # the argument wins
    monkeypatch.setenv(UPGRADE_ENV, "maybe")
    with pytest.raises(InputError, match="SPLADERUNNER_UPGRADE=.maybe."):
        wanted(None)
