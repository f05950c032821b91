"""The GPU run: the benchmark model, texts and runners of the CPU suite on the CUDA provider.

    python -m benchmarks.gpu            # needs onnxruntime-gpu with CUDA active, fastembed, sentence-transformers

Ours runs the fp16 graph (and fp32 for reference), the bare onnxruntime floor the same fp16 graph,
fastembed its logits graph (fp32: the layout it loads) and sentence-transformers the torch checkpoint,
all on the GPU at the same batch size and pinned max length. Each system runs in its own process
(`benchmarks.worker`); rounds are interleaved and medians reported. Writes `benchmarks/RESULTS-gpu.md`
and `benchmarks/results-gpu.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from .models import prepare_models
from .report import compare
from .run import WORK, child_env
from .systems import Folders, Setup

HERE = Path(__file__).resolve().parent
MAX_LENGTH = 256
BATCH_SIZE = 32
SETUPS = (("spladerunner", "fp16"), ("spladerunner", "fp32"), ("onnxruntime", "fp16"), ("fastembed", "fp32"),
          ("sentence-transformers", "fp32"))
REFERENCE = "spladerunner fp32"


def run_worker(setup: Setup, folders: Folders, tasks: list[dict[str, Any]], scratch: Path) -> dict[str, Any]:
    """One system in a fresh process; returns the worker's JSON."""
    job_path = Path(tempfile.mkstemp(suffix=".json", dir=scratch)[1])
    job = {"setup": setup.to_dict(), "folders": folders.to_dict(), "max_length": MAX_LENGTH, "tasks": tasks,
           "result": str(job_path) + ".out"}
    job_path.write_text(json.dumps(job), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "benchmarks.worker", str(job_path)], check=True, env=child_env(),
                   cwd=HERE.parent)
    return json.loads(Path(job["result"]).read_text(encoding="utf-8"))


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown GPU (nvidia-smi not available)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="base", choices=("tiny", "base"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--providers", default="cuda", help="cpu only to dry-run the script without a GPU")
    args = parser.parse_args(argv)

    folders = prepare_models(WORK / "models", args.size, MAX_LENGTH)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-", dir=WORK))
    documents = {"kind": "documents", "count": args.documents}
    queries = {"kind": "queries", "count": args.queries}
    setups = {f"{system} {precision}" if system in ("spladerunner", "onnxruntime") else system:
              Setup(system, precision, batch_size=BATCH_SIZE, max_tokens=BATCH_SIZE * MAX_LENGTH,
                    providers=(args.providers,)) for system, precision in SETUPS}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in setups}
    for round_number in range(args.rounds):
        for label, setup in setups.items():
            tasks = [{"task": "throughput", "params": {"texts": documents, "warmup": 64, "repeats": 1}},
                     {"task": "latency", "params": {"texts": queries, "warmup": 20}}]
            if round_number == 0:
                tasks.append({"task": "vectors", "params": {
                    "texts": {"kind": "documents", "count": 64}, "query": False,
                    "out": str(scratch / f"{label.replace(' ', '_')}.npz")}})
            print(f"[round {round_number + 1}/{args.rounds}] {label}", flush=True)
            results[label].append(run_worker(setup, folders, tasks, scratch))

    def figure(label: str, task: int, field: str) -> float:
        return median(r["tasks"][task][field] for r in results[label])

    rows = []
    for label in setups:
        agree = compare(str(scratch / f"{REFERENCE.replace(' ', '_')}.npz"),
                        str(scratch / f"{label.replace(' ', '_')}.npz"))
        rows.append({"system": label, "docs_per_s": figure(label, 0, "per_s"), "p50_ms": figure(label, 1, "p50_ms"),
                     "p95_ms": figure(label, 1, "p95_ms"), "load_s": median(r["load_s"] for r in results[label]),
                     "max_length": results[label][0]["max_length"],
                     **{f"vs_ours_fp32_{k}": v for k, v in agree.items()}})
    write_report(args, rows, results)
    return 0


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    by_system = {row["system"]: row for row in rows}
    ours, fastembed, bare = by_system["spladerunner fp16"], by_system["fastembed"], by_system["onnxruntime fp16"]
    lines = [
        "# GPU benchmark results", "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {gpu_name()}; Python {platform.python_version()}; "
        f"{args.size} BERT SPLADE test model (random init, calibrated sparsity), max length {MAX_LENGTH} for every "
        f"system, batch size {BATCH_SIZE}; {args.documents} SciFact documents, {args.queries} SciFact queries at "
        f"batch 1; medians of {args.rounds} rounds, each system in its own process. Written by "
        "`python -m benchmarks.gpu`.", "",
        "| system | docs/s | vs fastembed | query p50 ms | query p95 ms | load s | max length | "
        "max abs diff vs ours fp32 | active-set Jaccard |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = row["docs_per_s"] / fastembed["docs_per_s"]
        lines.append(f"| {row['system']} | {row['docs_per_s']:.1f} | {speedup:.2f}x | "
                     f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['load_s']:.1f} | {row['max_length']} | "
                     f"{row.get('vs_ours_fp32_max_abs_diff', float('nan')):.2e} | "
                     f"{row.get('vs_ours_fp32_min_jaccard', float('nan')):.3f} |")
    lines += ["", f"Ours (fp16) vs fastembed: {ours['docs_per_s'] / fastembed['docs_per_s']:.2f}x documents/s, "
              f"query p50 {ours['p50_ms'] / fastembed['p50_ms']:.2f}x; vs the bare onnxruntime fp16 session: "
              f"{ours['docs_per_s'] / bare['docs_per_s']:.2f}x documents/s, query p50 "
              f"{ours['p50_ms'] / bare['p50_ms']:.2f}x.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS-gpu.md").write_text("\n".join(lines), encoding="utf-8")
    (args.out / "results-gpu.json").write_text(json.dumps({"rows": rows, "raw": results}, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
