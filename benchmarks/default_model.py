"""The default path before and after `upgrade`: `Expander(hub id)` on a hub model that ships only a logits graph.

The BERT-base benchmark model's plain logits graph (the `fastembed/` folder of `benchmarks/models.py`, max
length pinned at 256) is laid out as a Hugging Face cache entry, as `Qdrant/Splade_PP_en_v1` is. Each
configuration runs `Expander("acme/bert-base-logits")` with its defaults in a process of its own (peak RSS
is its own), in alternating order:

- before: no upgraded folder, so the logits graph runs (fp32, [batch, length, vocab] pooled in numpy);
- after: once `spladerunner-export upgrade acme/bert-base-logits` (no output argument: the upgrade cache)
  has run, the same call loads the upgraded folder (fused pooling; int8 when its gate passed).

Figures: documents/s expanding 32 SciFact documents (median of rounds), query p50 over 40 SciFact queries
(one per call), peak RSS, construction time; and the one-time upgrade's wall time. Needs the benchmark
model (`python -m benchmarks.run` builds it) and the export toolkit (for the upgrade).

    python -m benchmarks.default_model --output benchmarks/RESULTS-default-model.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .contention import CPUS, Meter
from .report import publish
from .worker import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work" / "models"
REPO_ID = "acme/bert-base-logits"


def worker(rounds: int) -> dict:
    """Construct the default Expander of the hub id and time it (runs in its own process)."""
    from spladerunner import Expander

    from .texts import documents, queries

    docs, texts = documents(32), queries(40)
    started = time.perf_counter()
    expander = Expander(REPO_ID)
    load_s = time.perf_counter() - started
    expander.expand_batch(docs[:4])  # warm-up
    expander.expand(texts[0], query=True)
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        expander.expand_batch(docs)
        rates.append(len(docs) / (time.perf_counter() - started))
    latencies = []
    for text in texts:
        started = time.perf_counter()
        expander.expand(text, query=True)
        latencies.append((time.perf_counter() - started) * 1000)
    return {"graph": expander.graph("document").output, "precision": expander.precision,
            "folder": str(expander.source.folder or expander.source.snapshot), "load_s": load_s,
            "docs_per_s": statistics.median(rates), "query_p50_ms": statistics.median(latencies),
            "peak_rss_mb": peak_rss_mb()}


def run_worker(env: dict[str, str], rounds: int) -> dict:
    meter = Meter()
    meter.start()
    done = subprocess.run([sys.executable, "-m", "benchmarks.default_model", "--worker", "--rounds", str(rounds)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    others = meter.stop()
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.splitlines()[-1]), "others_cpu_share": others}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=WORK, help="benchmark models folder (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2, help="before/after processes, alternating")
    parser.add_argument("--output", type=Path, default=None, help="also write the report to this markdown file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.rounds)))
        return 0
    found = sorted(args.models.glob("bert-base-len256-*/fastembed"))
    if not found:
        raise SystemExit(f"no benchmark model under {args.models}: run `python -m benchmarks.run` first")
    sys.path.insert(0, str(REPO / "tests"))  # the HF cache layout the tests use, one definition
    from hf_cache import populate_hf_cache

    with tempfile.TemporaryDirectory() as tmp:
        populate_hf_cache(Path(tmp) / "hub", REPO_ID, found[-1])
        env = {**os.environ, "HF_HUB_CACHE": str(Path(tmp) / "hub"), "HF_HUB_OFFLINE": "1",
               "SPLADERUNNER_CACHE": str(Path(tmp) / "spladerunner"), "PYTHONPATH": str(REPO)}
        env.pop("SPLADERUNNER_UPGRADE", None)
        before = [run_worker(env, args.rounds)]
        started = time.perf_counter()
        upgrade = subprocess.run([sys.executable, "-m", "spladerunner_export", "upgrade", REPO_ID], cwd=REPO, env=env,
                                 capture_output=True, text=True, check=False)
        upgrade_s = time.perf_counter() - started
        if upgrade.returncode not in (0, 1):  # 1: a gate failed; the runtime then does not choose that precision
            raise SystemExit(f"upgrade failed:\n{upgrade.stderr[-3000:]}")
        after = [run_worker(env, args.rounds)]
        for _ in range(args.pairs - 1):
            before.append(run_worker(env, args.rounds))
            after.append(run_worker(env, args.rounds))
    rows = {"before: logits graph": before, "after: upgraded folder": after}
    lines = [f"# The default path before and after `upgrade` ({time.strftime('%Y-%m-%d %H:%M')}, "
             "`python -m benchmarks.default_model`)", "",
             f"`Expander(\"{REPO_ID}\")` with its defaults on the BERT-base benchmark model's logits graph served from "
             f"a Hugging Face cache layout (max length 256); {CPUS} CPUs ({platform.machine()}), "
             f"{args.pairs} processes per row in alternating order, {args.rounds} rounds each; medians over "
             "processes. Documents: 32 SciFact documents per call; queries: 40 SciFact queries, one per call.", "",
             "| default path | graph, precision | docs/s | query p50 ms | peak RSS MB | construction s | "
             "others' CPU share |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, runs in rows.items():
        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(run[key] for run in runs)
        lines.append(f"| {name} | {runs[0]['graph']}, {runs[0]['precision']} | {median('docs_per_s'):.2f} | "
                     f"{median('query_p50_ms'):.1f} | {median('peak_rss_mb'):.0f} | {median('load_s'):.2f} | "
                     f"{max(run['others_cpu_share'] for run in runs):.0%} |")
    ratio = statistics.median(r["docs_per_s"] for r in after) / statistics.median(r["docs_per_s"] for r in before)
    lines += ["", f"After/before documents/s: {ratio:.2f}x. The one-time `spladerunner-export upgrade {REPO_ID}` "
              f"took {upgrade_s:.0f} s (exit {upgrade.returncode}; its gate report: "
              f"`{' '.join(upgrade.stderr.split())[-200:]}`)."]
    publish("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
