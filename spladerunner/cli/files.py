"""Files of the commands: `-` for stdin/stdout, and output files that appear only when complete."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def open_input(path: str) -> Iterator[TextIO]:
    """`-` is stdin; anything else a UTF-8 file."""
    if path == "-":
        yield sys.stdin
        return
    with open(path, encoding="utf-8") as handle:
        yield handle


@contextmanager
def open_output(path: str) -> Iterator[TextIO]:
    """`-` is stdout; a file is written under a temporary name beside it and renamed into place on success.

    An interrupted or failed run (Ctrl-C, an error, a full disk) leaves no file at `path` (and an
    existing one untouched), so a partial output never looks complete.
    """
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def count_lines(path: str) -> int | None:
    """Lines of a file (None for stdin): the progress line's total."""
    if path == "-":
        return None
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)
