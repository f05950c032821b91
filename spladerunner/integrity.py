"""Integrity of a model folder's graphs: their sha256 against the manifest's (vocabulary: `tokenization`).

Hashing a BERT-base graph at every load would add a sizeable share to cold start (a third of the time
its session takes to start, measured when this was written), so a verified digest is remembered in a
small cache file (`verified-graphs.json` under `$SPLADERUNNER_CACHE`, else `$XDG_CACHE_HOME/spladerunner`,
else `~/.cache/spladerunner`) keyed by the file's resolved path, size, mtime_ns, ctime_ns, inode and
device. Any write to the file, or a `touch` back to the old mtime, changes its ctime and so forces a new
hash. The cache is written atomically
(temporary file + rename); if it cannot be read or written, every load simply hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from .errors import GraphError

logger = logging.getLogger("spladerunner")

CACHE_FILE = "verified-graphs.json"
CACHE_ENTRIES = 256  # the most recent verified files kept
_lock = threading.Lock()


def cache_dir() -> Path:
    explicit = os.environ.get("SPLADERUNNER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spladerunner"


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else _chunked(file)


def _chunked(file) -> str:  # Python 3.10 has no hashlib.file_digest
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _key(path: Path) -> str:
    real = path.resolve()
    stat = real.stat()
    return f"{real}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}|{stat.st_dev}"


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _remember(key: str, digest: str) -> None:
    folder = cache_dir()
    target = folder / CACHE_FILE
    with _lock:
        entries = _read_cache(target)
        entries.pop(key, None)
        entries[key] = digest
        entries = dict(list(entries.items())[-CACHE_ENTRIES:])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=CACHE_FILE, suffix=".tmp", dir=folder)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump(entries, file, indent=0)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            logger.debug("cannot record the verified digest in %s: %s", target, exc)


def verify_graph(path: str | Path, expected: str | None) -> None:
    """Raise `GraphError` naming the file when its sha256 is not the manifest's (no check when None)."""
    if expected is None:
        return
    path = Path(path)
    expected = expected.lower()
    try:
        key = _key(path)
    except OSError as exc:
        raise GraphError(f"{path}: cannot read the graph ({exc})") from None
    if _read_cache(cache_dir() / CACHE_FILE).get(key) == expected:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise GraphError(f"{path}: sha256 {actual} does not match the manifest's {expected}: the graph was "
                         "modified or swapped for another")
    _remember(key, actual)
