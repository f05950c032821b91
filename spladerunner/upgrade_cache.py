"""Hub models that ship only a logits graph run upgraded once cached: fused pooling and per-token int8.

A foreign logits graph (the default `Qdrant/Splade_PP_en_v1` among them) writes [batch, length, vocab]
logits that the runtime pools in numpy: none of the README's speed and memory figures apply to it.
`spladerunner-export upgrade org/name` (the export toolkit, onnx + onnxruntime, no torch) turns it into a
model folder with the pooling fused into the graph and a per-token int8 graph, written by default to
`upgraded_folder(org/name, commit)`: `$SPLADERUNNER_CACHE/upgraded/<org>--<name>/<commit>/`, keyed by the
hub snapshot's commit, so a new revision of the model is never served by an old conversion.

`Expander(org/name)` then loads that folder as any model folder (manifest, graph hashes, vocabulary,
export gate): the precision whose gate passed runs, and a folder where every precision failed is not
used (a warning quotes the gate). Without it, one warning per model and process names the command.
`upgrade=True` (or `SPLADERUNNER_UPGRADE=1`) runs the command when the folder is missing; `upgrade=False`
(`SPLADERUNNER_UPGRADE=0`) keeps the logits graph and the warning quiet.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

from .errors import InputError, ManifestError, UpgradeError
from .integrity import cache_dir
from .loading import ModelSource
from .manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger("spladerunner")

UPGRADE_ENV = "SPLADERUNNER_UPGRADE"
INSTALL_HINT = 'pip install "spladerunner[export]"'
_warned: set[str] = set()  # messages already logged: each once per process
_lock = threading.Lock()


def upgraded_folder(repo_id: str, commit: str) -> Path:
    """Where the upgraded folder of a hub model's snapshot lives (the `upgrade` command's default output)."""
    return cache_dir() / "upgraded" / repo_id.replace("/", "--") / commit


def wanted(upgrade: bool | None) -> bool | None:
    """`upgrade`, else `SPLADERUNNER_UPGRADE` (1/true/yes: True, 0/false/no: False), else None."""
    if upgrade is not None:
        return upgrade
    value = os.environ.get(UPGRADE_ENV, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    if value:
        raise InputError(f"{UPGRADE_ENV}={value!r}: expected 1 or 0")
    return None


def upgraded_source(source: ModelSource, manifest: Manifest,
                    upgrade: bool | None) -> tuple[ModelSource, Manifest] | None:
    """For a hub model served as a foreign logits graph: its upgraded folder and manifest, or None.

    None when the model is not such a graph, `upgrade` is False, or the folder is missing (one warning naming
    the command) or every precision in it failed its gate (a warning quoting the figures).
    """
    upgrade = wanted(upgrade)
    graph = manifest.source.get("foreign_graph")
    if source.is_local or graph is None or upgrade is False:
        return None
    path = source.fetch(graph)
    commit = path.parents[len(Path(graph).parts) - 1].name  # models--org--name/snapshots/<commit>/<graph>
    folder = upgraded_folder(source.name, commit)
    if not (folder / MANIFEST_NAME).is_file():
        if not upgrade:
            _warn_once(f"{source.name} is a logits graph pooled in numpy (fp32, no int8): run "
                       f"`spladerunner-export upgrade {source.name}` once ({INSTALL_HINT}; no torch) to fuse the "
                       f"pooling and add a per-token int8 graph, cached at {folder} and used from then on "
                       f"(README: 'Logits-only hub models, upgraded'); or pass upgrade=True, or set {UPGRADE_ENV}=1")
            return None
        run_upgrade(source, commit, folder)
    upgraded = Manifest.read(folder)
    origin = (upgraded.source.get("checkpoint"), upgraded.source.get("revision"))
    if origin != (source.name, commit):
        raise ManifestError(f"{folder}: an upgraded folder of {origin[0]} at {origin[1]}, found where the one of "
                            f"{source.name} at {commit} belongs; delete it and upgrade again")
    gates = [upgraded.gate(precision) for precision in upgraded.precisions("document")]
    if gates and all(gate is not None and not gate.passed for gate in gates):
        _warn_once(f"{folder}: every precision of the upgraded {source.name} failed the export's parity "
                   f"gate ({'; '.join(f'{g.precision} {g.figures()}' for g in gates if g)}); running the logits "
                   f"graph instead")
        return None
    # The conversion changes the graph, never the cut: the lengths stay those the logits graph ran with.
    return ModelSource(str(folder), folder=folder), replace(upgraded, max_length=dict(manifest.max_length))


def run_upgrade(source: ModelSource, commit: str, folder: Path) -> None:
    """`spladerunner-export upgrade` in a child process (the runtime never imports the toolkit), offline: the
    snapshot is cached. It writes `folder` atomically (a temporary folder renamed when complete)."""
    if importlib.util.find_spec("spladerunner_export") is None:
        raise UpgradeError(f"upgrade=True needs the export toolkit (onnx) to upgrade {source.name}: {INSTALL_HINT}")
    logger.warning("%s: upgrading the logits graph once (fused pooling, per-token int8) into %s ...",
                   source.name, folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(source.cache_folder)}
    done = subprocess.run([sys.executable, "-m", "spladerunner_export", "upgrade", source.name,
                           "--revision", commit], env=env, capture_output=True, text=True)
    if not (folder / MANIFEST_NAME).is_file():
        raise UpgradeError(f"spladerunner-export upgrade {source.name} --revision {commit} failed (exit "
                           f"{done.returncode}): {done.stderr.strip()[-2000:]}")


def _warn_once(message: str) -> None:
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning("%s", message)
