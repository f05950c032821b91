"""How much of the machine other processes used: the benchmark shares its CPUs with other work.

Busy CPU time comes from /proc/stat (all processes); our children's CPU time from getrusage. The
difference, over a job's wall time and the CPU count, is the share of the machine someone else took.
Linux only; elsewhere the figures are NaN and the gate lets every job through.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_seconds() -> float:
    """CPU seconds spent not idle, summed over all CPUs since boot (NaN where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Share of the machine used by others between `start()` and `stop()` (excluding our children)."""

    def start(self) -> None:
        self.busy, self.ours, self.wall = busy_seconds(), children_seconds(), time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self.wall
        foreign = (busy_seconds() - self.busy) - (children_seconds() - self.ours)
        return max(0.0, foreign / (wall * CPUS)) if wall > 0 else float("nan")


def wait_for_quiet(threshold: float, max_wait_s: float, sample_s: float = 1.0) -> float:
    """Wait until others use less than `threshold` of the machine over one sample; seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        before = busy_seconds()
        time.sleep(sample_s)
        share = (busy_seconds() - before) / (sample_s * CPUS)
        if not share >= threshold:  # NaN (no /proc/stat) passes
            break
    return time.perf_counter() - start
