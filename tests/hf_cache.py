"""Lay a model folder out as a Hugging Face hub cache entry, exactly as huggingface_hub writes one:
`models--org--name/blobs/<sha256>`, `snapshots/<commit>/<file> -> ../../blobs/<sha256>`, `refs/main`.
"""

import hashlib
import os
import shutil
from pathlib import Path


def populate_hf_cache(cache_dir: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> Path:
    """Copy every file under `folder` into the cache as repo `repo_id` at `commit`; returns the snapshot."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot
