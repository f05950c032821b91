"""Provenance for the manifest: where a checkpoint came from, its file hashes, and what built the export."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Packages whose versions decide the exported graphs (read from metadata: importing torch is not needed).
EXPORTER_PACKAGES = ("spladerunner", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")


@dataclass(frozen=True)
class Checkpoint:
    """A local folder holding a checkpoint; `name` is what the user gave (path or hub id)."""

    path: Path
    name: str
    revision: str | None = None

    def record(self) -> dict:
        """The manifest's `source` entry: name, revision and sha256 of every file."""
        return {"checkpoint": self.name, "revision": self.revision, "sha256": file_hashes(self.path)}


def resolve_checkpoint(name: str | Path, revision: str | None = None) -> Checkpoint:
    """A local folder as is; anything else is a hub id fetched by `huggingface_hub.snapshot_download`
    (which honours the cache and HF_HUB_OFFLINE). A hub snapshot's revision is its commit hash."""
    path = Path(name)
    if path.is_dir():
        return Checkpoint(path, str(name), revision)
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(str(name), revision=revision))
    return Checkpoint(snapshot, str(name), snapshot.name)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, keyed by its relative POSIX path (hidden files skipped)."""
    return {path.relative_to(folder).as_posix(): sha256(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)}


def exporter_versions() -> dict[str, str | None]:
    """Installed versions of the exporting packages (None where one is absent, e.g. torch on upgrade)."""
    versions: dict[str, str | None] = {}
    for package in EXPORTER_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
