"""One measurement process: `python -m benchmarks.worker JOB.json` loads one system, runs its tasks, writes JSON.

Each configuration runs in a process of its own so its peak RSS (`ru_maxrss`) is its own. Warm-up
runs are never timed. Module-level imports stay light: the `cold` and `import` tasks time the
imports of the system under test from a fresh interpreter.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Current resident set size."""
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def median(values: list[float]) -> float:
    return percentile(values, 50)


def import_seconds(statement: str) -> float:
    """Seconds to execute an import statement in this (fresh) interpreter."""
    start = time.perf_counter()
    exec(compile(statement, "<import>", "exec"), {})
    return time.perf_counter() - start


def import_statement(system: str) -> str:
    from benchmarks.systems import IMPORTS

    module, name = IMPORTS[system]
    return f"from {module} import {name}"


def run_cold(job: dict[str, Any]) -> dict[str, Any]:
    """Import, load and expand one query, as a fresh process would; each phase timed."""
    import_time = import_seconds(import_statement(job["setup"]["system"]))
    from benchmarks import texts
    from benchmarks.systems import Folders, Setup, make_runner

    runner = make_runner(Setup.from_dict(job["setup"]), Folders.from_dict(job["folders"]), job["max_length"])
    load_time, _ = timed(runner.load)
    query = texts.load(job["params"]["texts"])[:1]
    first_time, _ = timed(lambda: runner.run(runner.prepare(query, True), True))
    return {"import_s": import_time, "load_s": load_time, "first_query_s": first_time,
            "total_s": import_time + load_time + first_time, "process_s": time.perf_counter() - PROCESS_START,
            "peak_rss_mb": peak_rss_mb()}


def throughput(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Texts per second over the whole text set, median of `repeats` timed runs after a warm-up."""
    from benchmarks import texts

    items = texts.load(params["texts"])
    query = params.get("query", False)
    runner.run(runner.prepare(items[: params["warmup"]], query), query)
    prepared = runner.prepare(items, query)
    seconds = [timed(runner.run, prepared, query)[0] for _ in range(params["repeats"])]
    return {"texts": len(items), "seconds": seconds, "per_s": len(items) / median(seconds)}


def latency(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Per-query latency at batch 1: p50, p95 (ms) over the query set, after a warm-up."""
    from benchmarks import texts

    items = texts.load(params["texts"])
    for text in items[: params["warmup"]]:
        runner.run(runner.prepare([text], True), True)
    prepared = [runner.prepare([text], True) for text in items]
    milliseconds = [1000 * timed(runner.run, p, True)[0] for p in prepared]
    return {"queries": len(items), "p50_ms": median(milliseconds), "p95_ms": percentile(milliseconds, 95),
            "mean_ms": sum(milliseconds) / len(milliseconds)}


def memory(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of expanding one fixed-length batch (no warm-up: the first run is the one that peaks)."""
    from benchmarks import texts

    items = texts.load(params["texts"])
    prepared = runner.prepare(items, False)
    before = rss_mb()
    seconds, _ = timed(runner.run, prepared, False)
    return {"texts": len(items), "rss_before_mb": before, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_after_mb": rss_mb()}


def sweep(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Texts/s on fixed-length batches for each (padded length, batch size): one batch per run."""
    from benchmarks import texts

    points = []
    for tokens in params["lengths"]:
        for batch_size in params["batch_sizes"]:
            runner.set_batch(batch_size, batch_size * tokens)
            prepared = runner.prepare(texts.fixed_length(batch_size, tokens, seed=1), False)
            runner.run(prepared, False)
            seconds: list[float] = []
            while len(seconds) < params["min_repeats"] or sum(seconds) < params["min_seconds"]:
                seconds.append(timed(runner.run, prepared, False)[0])
            points.append({"tokens": tokens, "batch_size": batch_size, "per_s": batch_size / median(seconds)})
    return {"points": points}


def vectors(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Expand the texts and save the CSR arrays (special tokens removed) for the agreement check."""
    import numpy as np

    from benchmarks import texts

    items = texts.load(params["texts"])
    query = params.get("query", False)
    indptr, indices, values = runner.csr(runner.run(runner.prepare(items, query), query))
    np.savez(params["out"], indptr=indptr, indices=indices, values=values)
    return {"texts": len(items), "out": params["out"]}


TASKS = {"throughput": throughput, "latency": latency, "memory": memory, "sweep": sweep, "vectors": vectors}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run a job: an import or cold-start probe, or a loaded system and its tasks in order."""
    kind = job["tasks"][0]["task"]
    if kind == "import":
        return {"import_s": import_seconds(job["tasks"][0]["params"]["statement"])}
    if kind == "cold":
        return run_cold({**job, "params": job["tasks"][0]["params"]})
    from benchmarks.systems import Folders, Setup, make_runner

    runner = make_runner(Setup.from_dict(job["setup"]), Folders.from_dict(job["folders"]), job["max_length"])
    load_time, _ = timed(runner.load)
    result: dict[str, Any] = {"load_s": load_time, "rss_after_load_mb": rss_mb(),
                              "max_length": runner.effective_max_length(),
                              "max_tokens": runner.effective_max_tokens(), "tasks": []}
    for task in job["tasks"]:
        result["tasks"].append(TASKS[task["task"]](runner, task["params"]))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    result = run_job(job)
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
