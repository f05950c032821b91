"""Installed size of a set of distributions and everything they require (their dependency closure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def closure(roots: Iterable[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions `roots` need, transitively (extras not followed, markers evaluated)."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if _key(name) in found:
            continue
        dist = _dist(name)
        if dist is None:
            continue
        found[_key(name)] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    """Bytes on disk of the files a distribution's RECORD lists."""
    total = 0
    for file in dist.files or []:
        with suppress(OSError):
            total += Path(dist.locate_file(file)).stat().st_size
    return total


def closure_size(roots: Iterable[str]) -> tuple[int, list[tuple[str, int]]]:
    """Total bytes of the closure of `roots`, and (distribution, bytes) for each member, largest first."""
    members = [(f"{d.metadata['Name']}=={d.version}", installed_bytes(d)) for d in closure(roots).values()]
    members.sort(key=lambda item: -item[1])
    return sum(size for _, size in members), members
