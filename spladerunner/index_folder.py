"""The index-folder format shared by `SparseIndex` and `SparsEmbedIndex`: `.npy` arrays plus `index.json`.

Crash safety: a save writes each array to a new file named after this save (`offsets-<save id>.npy`),
fsyncs it, then replaces `index.json` in one atomic rename; only then are the previous save's files
removed. `index.json` names the files of its save, so after a crash at any point the folder loads as
the old index (the rename had not happened) or the new one (it had); files of an unfinished save are
removed by the next save. `index.json` lists every file's size and sha256 and carries a checksum of
its own content, so an edited field (say `impact_scale`) is caught like a corrupt array.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFormatError

MANIFEST_FILE = "index.json"
# Version 1 named files `NAME.npy` and had no header checksum; version 2 added it; version 3 (read and
# written) stores postings in blocks (`postings`), and versions 1-2 still load.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# Files a save of ours writes into a folder (arrays of a save, the manifest while it is being written).
OUR_FILE = re.compile(r"^([a-z_]+-[0-9a-f]{12}\.npy|\.index\.json\.tmp-[0-9a-f]{12})$")
LIMIT = 1 << 48  # larger counts in a manifest are corrupt, and are refused before anything is allocated


def _fsync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def header_checksum(header: Mapping[str, Any]) -> str:
    """sha256 of the manifest's content without its own `checksum` field (canonical JSON)."""
    body = {key: value for key, value in header.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def is_index_folder(path: Path) -> bool:
    """A folder holding `index.json`, or only files that a save of ours leaves (an interrupted first save)."""
    return path.is_dir() and ((path / MANIFEST_FILE).is_file()
                              or all(OUR_FILE.match(entry.name) for entry in path.iterdir()))


def write_index_folder(path: str | Path, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> Path:
    """Write each array as a `.npy` file and `header` plus every file's size and sha256 as `index.json`.

    Crash-safe (see the module docstring). An existing `path` is written into only if it is an index
    folder (or empty), so a wrong path cannot wipe user data. A failed write (a full disk) raises
    `OSError` naming the file and leaves the previous index as it was.
    """
    path = Path(path)
    if path.exists() and not is_index_folder(path):
        raise FileExistsError(f"{path}: exists and is not an index folder; not overwriting it")
    path.mkdir(parents=True, exist_ok=True)
    save_id = uuid.uuid4().hex[:12]
    written: list[Path] = []
    files: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    try:
        for name, array in arrays.items():
            file = path / f"{name}-{save_id}.npy"
            written.append(file)
            with _naming(file), open(file, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            names[name] = file.name
            files[file.name] = {"sha256": _sha256(file), "bytes": file.stat().st_size}
        manifest = {**header, "version": FORMAT_VERSION, "arrays": names, "files": files}
        manifest["checksum"] = header_checksum(manifest)
        temporary = path / f".{MANIFEST_FILE}.tmp-{save_id}"
        written.append(temporary)
        with _naming(temporary), open(temporary, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path / MANIFEST_FILE)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    # The rename is the commit: from here on `index.json` names the new files, so none may be removed.
    _fsync_folder(path)
    keep = {MANIFEST_FILE, *files}
    for entry in path.iterdir():  # the previous save's files, and leftovers of interrupted saves
        if entry.name not in keep and (OUR_FILE.match(entry.name) or entry.name.endswith(".npy")):
            entry.unlink(missing_ok=True)
    return path


@contextmanager
def _naming(file: Path) -> Iterator[None]:
    """Make an `OSError` while writing `file` (a full disk: numpy says only "N requested and M written") name it."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"{file}: write failed ({exc.strerror or exc})") from exc


def read_manifest(path: Path, format_name: str) -> dict[str, Any]:
    """The `index.json` of folder `path`, refused (`IndexFormatError`) unless of `format_name`, of a
    version this runtime reads, and unmodified (checksum)."""
    manifest_file = path / MANIFEST_FILE
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path}: not an index folder (no {MANIFEST_FILE})")
    with malformed_manifest(path):
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise IndexFormatError(f"{manifest_file}: not a {format_name} manifest")
    version = manifest.get("version")
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(f"{manifest_file}: format version {version!r}, this spladerunner reads "
                               f"versions {READABLE_VERSIONS}")
    if version >= 2 and manifest.get("checksum") != header_checksum(manifest):
        raise IndexFormatError(f"{manifest_file}: checksum mismatch, the manifest is corrupt or was modified")
    return manifest


def count_field(manifest: Mapping[str, Any], field: str, path: Path, *, minimum: int = 0) -> int:
    """An integer field of the manifest within [minimum, 2^48), checked before anything is sized by it."""
    value = manifest.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < LIMIT:
        raise IndexFormatError(f"{path / MANIFEST_FILE}: field {field!r} must be an integer in "
                               f"[{minimum}, 2^48), got {value!r}")
    return value


def positive_float_field(manifest: Mapping[str, Any], field: str, path: Path) -> float:
    value = manifest.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise IndexFormatError(f"{path / MANIFEST_FILE}: field {field!r} must be a finite number > 0, got {value!r}")
    return float(value)


@contextmanager
def malformed_manifest(path: Path) -> Iterator[None]:
    """Turn bad JSON or a missing or mistyped manifest field into `IndexFormatError` naming the file."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        if isinstance(exc, IndexFormatError):
            raise
        raise IndexFormatError(f"{path / MANIFEST_FILE}: malformed manifest ({exc!r})") from None


def read_arrays(path: Path, manifest: Mapping[str, Any], layout: Mapping[str, tuple[int | None, type]], *,
                mmap: bool, verify: bool) -> dict[str, np.ndarray]:
    """The arrays `layout` names ({name: (length or None for any, dtype)}) from folder `path`.

    Each file must be listed in the manifest with its size (and sha256 if `verify`) and hold a 1-D array
    of that dtype and length; arrays are memory-mapped read-only unless `mmap=False`.
    """
    with malformed_manifest(path):
        names = manifest.get("arrays") or {name: f"{name}.npy" for name in layout}
        arrays = {}
        for name, (length, dtype) in layout.items():
            file_name = names.get(name)
            if not isinstance(file_name, str) or Path(file_name).name != file_name:
                raise IndexFormatError(f"{path / MANIFEST_FILE}: no valid file name for array {name!r}")
            arrays[name] = _load_array(path / file_name, manifest["files"].get(file_name), length, dtype,
                                       mmap=mmap, verify=verify)
        return arrays


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_array(file: Path, entry: Mapping[str, Any] | None, length: int | None, dtype: type, *, mmap: bool,
                verify: bool) -> np.ndarray:
    if entry is None or not file.is_file():
        raise IndexFormatError(f"{file}: missing")
    if file.stat().st_size != entry["bytes"] or (verify and _sha256(file) != entry["sha256"]):
        raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise IndexFormatError(f"{file}: unreadable ({exc})") from None
    if array.ndim != 1 or array.dtype != dtype or (length is not None and len(array) != length):
        raise IndexFormatError(f"{file}: expected a 1-D {np.dtype(dtype)} array"
                               + (f" of length {length}" if length is not None else ""))
    return array


def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids as two flat arrays for `.npy` files: their UTF-8 bytes concatenated (uint8) and int64 offsets [n + 1]."""
    encoded = [i.encode("utf-8") for i in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def decode_ids(path: Path, id_bytes: np.ndarray, id_offsets: np.ndarray) -> list[str]:
    """The ids `encode_ids` turned into (id_bytes, id_offsets), checked for consistency."""
    if (len(id_offsets) and (id_offsets[0] != 0 or id_offsets[-1] != len(id_bytes)
                             or np.any(np.diff(id_offsets) < 0))):
        raise IndexFormatError(f"{path}: id arrays disagree with each other")
    blob, offsets = id_bytes.tobytes(), id_offsets.tolist()
    try:
        return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    except UnicodeDecodeError:
        raise IndexFormatError(f"{path}: document ids are not valid UTF-8") from None
