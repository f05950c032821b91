"""Expansion through Ray Data (`spladerunner.ray_data.expand_dataset`) with 1 and 2 actors against the plain
`Expander` on this machine: SciFact documents, the built-in splade-tiny int8, one local Ray cluster.

Each Ray run builds a fresh actor pool (its start and model load are part of the run), so every Ray setup
runs over two corpus sizes: the slope between them is the steady rate, the intercept the fixed cost of a
run. The per-batch overhead is Ray's steady time per batch (1 actor, 1 thread) minus the plain Expander's
time for the same texts at 1 thread, per batch. Medians of interleaved rounds. Needs `[ray]` and the
built-in model (`spladerunner-export convert ../shared/models/splade-tiny spladerunner/builtin/splade-tiny
--ship int8`).

    python -m benchmarks.ray_expand --output benchmarks/RESULTS-ray.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib import metadata

import ray
import ray.data

from spladerunner.expander import Expander
from spladerunner.ray_data import expand_dataset

from .contention import CPUS, wait_for_quiet
from .report import publish
from .texts import SCIFACT

MODEL = "splade-tiny"
QUIET_WAIT_S = 10  # the longest wait for other work to leave the CPUs before each timed run


def records(count: int) -> list[dict]:
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for _, line in zip(range(count), lines)]


def plain_seconds(expander: Expander, texts: list[str], batch_size: int) -> float:
    """Seconds for the plain Expander over `texts`, `batch_size` texts per call (as an actor gets them)."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        expander.expand_batch(texts[start:start + batch_size])
    return time.perf_counter() - started


def ray_seconds(rows: list[dict], actors: int, threads: int, batch_size: int) -> float:
    """Seconds for a whole `expand_dataset` run, fresh actor pool included, one input block per batch."""
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
    started = time.perf_counter()
    expand_dataset(ds, MODEL, actors=actors, threads_per_actor=threads, batch_size=batch_size).materialize()
    return time.perf_counter() - started


class Identity:
    """An actor that returns its batch: what Ray itself costs per batch, with no model."""

    def __call__(self, batch: dict) -> dict:
        return batch


def ray_identity_seconds(rows: list[dict], batch_size: int) -> float:
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
    started = time.perf_counter()
    ds.map_batches(Identity, batch_size=batch_size, batch_format="numpy",
                   compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1).materialize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=256, help="documents in the small run")
    parser.add_argument("--large", type=int, default=1280, help="documents in the large run")
    parser.add_argument("--batch-size", type=int, default=64, help="records per actor call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None, help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    rows = records(args.large)
    texts = [" ".join(t for t in (r["title"], r["text"]) if t) for r in rows]
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    plain = {threads: Expander(MODEL, threads=threads) for threads in (1, 2)}
    setups = {"Ray, 1 actor x 1 thread": (1, 1), "Ray, 1 actor x 2 threads": (1, 2), "Ray, 2 actors x 1 thread": (2, 1)}
    load = {threads: 0.0 for threads in plain}
    for threads in plain:
        started = time.perf_counter()
        Expander(MODEL, threads=threads)
        load[threads] = time.perf_counter() - started
        plain_seconds(plain[threads], texts[:args.batch_size], args.batch_size)  # warm-up
    ray_seconds(rows[:args.batch_size], 1, 1, args.batch_size)  # warm-up: workers started, imports cached
    times: dict[tuple[str, int], list[float]] = {}
    loads = []
    for round_index in range(args.rounds):
        order = list(setups) if round_index % 2 == 0 else list(setups)[::-1]
        for threads in plain:
            wait_for_quiet(0.2, QUIET_WAIT_S)
            times.setdefault((f"plain Expander, {threads} thread(s)", args.large), []).append(
                plain_seconds(plain[threads], texts, args.batch_size))
        for name in order:
            for size in (args.small, args.large):
                wait_for_quiet(0.2, QUIET_WAIT_S)
                times.setdefault((name, size), []).append(ray_seconds(rows[:size], *setups[name], args.batch_size))
        for size in (args.small, args.large):
            times.setdefault(("identity", size), []).append(ray_identity_seconds(rows[:size], args.batch_size))
        loads.append(os.getloadavg()[0])

    def median(name: str, size: int) -> float:
        return statistics.median(times[(name, size)])

    lines = [f"# Expansion through Ray Data ({time.strftime('%Y-%m-%d %H:%M')}, `python -m benchmarks.ray_expand`)",
             "",
             f"{args.large} SciFact documents (title + abstract), built-in {MODEL} int8, {args.batch_size} records "
             f"per actor call, local Ray cluster with {CPUS} CPUs on this machine. Median of {args.rounds} "
             "interleaved rounds. Ray runs are timed whole (a fresh actor pool each: start, model load, "
             f"scheduling) at {args.small} and {args.large} documents; the steady rate is the slope between "
             "them, the fixed cost per run its intercept.",
             "",
             "| setup | docs/s, whole run of " + str(args.large) + " | steady docs/s | fixed cost per run s |",
             "|---|---:|---:|---:|"]
    steady: dict[str, float] = {}
    for threads in plain:
        name = f"plain Expander, {threads} thread(s)"
        seconds = median(name, args.large)
        steady[name] = args.large / seconds
        lines.append(f"| {name} | {args.large / seconds:.1f} | {steady[name]:.1f} | {load[threads]:.2f} (load) |")
    for name in setups:
        small, large = median(name, args.small), median(name, args.large)
        slope = (large - small) / (args.large - args.small)
        steady[name] = 1 / slope
        lines.append(f"| {name} | {args.large / large:.1f} | {steady[name]:.1f} | {small - slope * args.small:.2f} |")
    per_batch = (1 / steady["Ray, 1 actor x 1 thread"] - 1 / steady["plain Expander, 1 thread(s)"]) * args.batch_size
    identity = (median("identity", args.large) - median("identity", args.small)) / (args.large - args.small)
    identity_fixed = median("identity", args.small) - identity * args.small
    lines += ["",
              f"Ray's own cost with no model (an identity actor over the same blocks): {identity_fixed:.2f} s per "
              f"run, {identity * args.batch_size * 1000:.1f} ms per batch of {args.batch_size} (steady).",
              f"Overhead per batch of {args.batch_size} (Ray 1 actor x 1 thread, steady, minus the plain Expander at "
              f"1 thread): {per_batch * 1000:.1f} ms ({per_batch / args.batch_size * 1000:.2f} ms per document).",
              "",
              f"Machine: {platform.processor() or platform.machine()}, {CPUS} CPUs shared with other engineers' "
              f"work (1-minute load average after each round: {', '.join(f'{x:.2f}' for x in loads)}); before "
              f"each run the script waits up to {QUIET_WAIT_S} s for others to use under 20% of the CPUs. Versions: "
              + ", ".join(f"{p} {metadata.version(p)}" for p in ("spladerunner", "ray", "pyarrow", "onnxruntime"))
              + f", Python {platform.python_version()}."]
    if max(loads) > CPUS + 1:  # this script's own runs keep up to CPUS (+ the driver) busy
        lines += ["", f"**Contended run**: the load average ({min(loads):.1f} to {max(loads):.1f}) exceeded by far "
                  f"the {CPUS} CPUs this script keeps busy: other work held most of them, so each setup got an "
                  "unknown, varying share and the differences between rows (a negative overhead above all) are "
                  "noise, not Ray's cost. Only figures far above that noise (the fixed cost per run) say "
                  "something; rerun on a quiet machine for the rest."]
    ray.shutdown()
    publish("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
