"""A dependency-free progress line on stderr for long CLI jobs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints `label: done/total (rate/s)` on one stderr line, at most a few times a second."""

    def __init__(self, total: int | None, label: str, *, enabled: bool = True, stream: TextIO | None = None):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self._last_print = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and now - self._last_print >= 0.2:
            self._last_print = now
            self._print(now)

    def close(self) -> None:
        if self.enabled:
            self._print(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def _print(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        of_total = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"\r{self.label}: {self.done}{of_total} ({rate:,.1f}/s)")
        self.stream.flush()
