"""Turn the workers' results into RESULTS.md (tables, targets, context), results.json and throughput.png."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import Config
from .plan import Measurement, lever_setups
from .sizes import closure_size
from .systems import Folders

Results = dict[str, list[dict[str, Any]]]
VOCAB = 30522
OURS_INT8, OURS_FP32 = "spladerunner int8", "spladerunner fp32"
BARE_INT8, BARE_FP32 = "onnxruntime int8", "onnxruntime fp32"
FASTEMBED, ST = "fastembed", "sentence-transformers"
SYSTEM_ORDER = (OURS_INT8, OURS_FP32, BARE_INT8, BARE_FP32, FASTEMBED, ST)
VERSIONED = ("spladerunner", "onnxruntime", "numpy", "tokenizers", "huggingface-hub", "fastembed",
             "sentence-transformers", "torch", "transformers", "optimum-onnx", "onnx")
# Install footprints compared: our declared dependencies vs each peer's closure.
STACKS = {
    "spladerunner (numpy, onnxruntime, tokenizers, huggingface-hub)": ["spladerunner"],
    "fastembed": ["fastembed"],
    "sentence-transformers (+ torch)": ["sentence-transformers"],
}


def runtime_budget(results: Results) -> int:
    """The token budget our main setup ran with: recorded by the worker, else the runtime's default."""
    for result in results.get(f"throughput|{OURS_INT8}", []):
        if result.get("max_tokens"):
            return int(result["max_tokens"])
    import inspect

    from spladerunner.expander import Expander

    return int(inspect.signature(Expander.__init__).parameters["max_tokens"].default)


def median_of(results: Results, name: str, field: str) -> float:
    """Median of a field over the rounds of one measurement (NaN when missing)."""
    values = [r[field] for r in results.get(name, []) if field in r]
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- agreement


def _load_csr(path: str) -> tuple[Any, Any, Any]:
    import numpy as np

    data = np.load(path)
    return data["indptr"], data["indices"], data["values"]


def compare(reference: str, other: str) -> dict[str, float]:
    """Max abs weight difference (absent = 0) and active-set Jaccard, per text, between two CSR files."""
    import numpy as np

    (ref_ptr, ref_ids, ref_w), (ptr, ids, w) = _load_csr(reference), _load_csr(other)
    diffs, jaccards, terms = [], [], []
    for row in range(len(ref_ptr) - 1):
        a = dict(zip(ref_ids[ref_ptr[row]:ref_ptr[row + 1]].tolist(), ref_w[ref_ptr[row]:ref_ptr[row + 1]].tolist()))
        b = dict(zip(ids[ptr[row]:ptr[row + 1]].tolist(), w[ptr[row]:ptr[row + 1]].tolist()))
        union = set(a) | set(b)
        diffs.append(max((abs(a.get(i, 0.0) - b.get(i, 0.0)) for i in union), default=0.0))
        jaccards.append(len(set(a) & set(b)) / len(union) if union else 1.0)
        terms.append(len(b))
    return {"max_abs_diff": float(max(diffs)), "mean_jaccard": float(np.mean(jaccards)),
            "min_jaccard": float(min(jaccards)), "mean_terms": float(np.mean(terms)), "count": len(terms)}


def agreement(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Each system's vectors against ours: fp32 peers vs our fp32, the bare int8 session vs our int8,
    our int8 vs our fp32 (quantisation error)."""
    files = {(m.setup.label, m.params["query"]): m.params["out"] for m in measurements if m.task == "vectors"}
    rows = []
    for (label, query), path in sorted(files.items()):
        reference = OURS_INT8 if label == BARE_INT8 else OURS_FP32
        if label == reference or (reference, query) not in files:
            continue
        rows.append({"system": label, "reference": reference, "texts": "queries" if query else "documents",
                     **compare(files[(reference, query)], path)})
    return rows


# ---------------------------------------------------------------- context


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_features() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags.split())


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def context(config: Config, folders: Folders, started: float, load_start: tuple[float, ...],
            load_end: tuple[float, ...], providers: str) -> dict[str, Any]:
    """Date, machine, versions, settings and install sizes of this run."""
    import psutil

    sizes = {}
    for stack, roots in STACKS.items():
        total, members = closure_size(roots)
        sizes[stack] = {"bytes": total, "members": members}
    calibration = folders.checkpoint / "calibration.json"
    return {
        "date": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": datetime.now().timestamp() - started,
        "machine": {"cpu": _cpu_model(), "features": _cpu_features(), "logical_cpus": os.cpu_count(),
                    "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "memory_gb": psutil.virtual_memory().total / 2**30, "os": platform.platform(),
                    "python": platform.python_version(), "providers": providers},
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "versions": {name: _version(name) for name in VERSIONED},
        "model": json.loads(calibration.read_text()) if calibration.is_file() else {},
        "sizes": sizes,
        "config": config.__dict__,
    }


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A target from the issue: `measured` compared with `bound` (at least, or at most)."""

    claim: str
    measured: float
    bound: float
    at_least: bool
    unit: str
    note: str

    @property
    def verdict(self) -> str:
        if self.measured != self.measured:  # NaN: not measured
            return "n/a"
        passed = self.measured >= self.bound if self.at_least else self.measured <= self.bound
        return "PASS" if passed else "MISS"


def targets(config: Config, results: Results) -> list[Target]:
    """The issue's targets, evaluated on this run (ours = the CPU default, int8, unless a row says fp32)."""
    def rate(label: str) -> float:
        return median_of(results, f"throughput|{label}", "per_s")

    def p50(label: str) -> float:
        return median_of(results, f"latency|{label}", "p50_ms")

    rows, tokens = config.memory_shapes[-1]
    memory = f"memory {rows}x{tokens}"

    def peak(label: str) -> float:
        return median_of(results, f"{memory}|{label}", "peak_rss_mb")

    def loaded(label: str) -> float:
        return median_of(results, f"{memory}|{label}", "rss_before_mb")

    cold = {label: {f: median_of(results, f"cold|{label}", f) for f in ("import_s", "load_s", "first_query_s",
                                                                        "total_s")} for label in (OURS_INT8, FASTEMBED)}
    import_time = median_of(results, "import|import spladerunner", "import_s")
    budget = runtime_budget(results)
    budget_rows = min(config.batch_size, max(1, budget // tokens))

    def lever(label: str, field: str, task: str = "throughput") -> float:
        return median_of(results, f"lever {task}|{label}", field)

    def best_lever(prefix: str) -> tuple[str, float]:
        """The fastest lever variant whose name starts with `prefix` (NaN when none ran)."""
        rates = [(name.split("|", 1)[1], lever(name.split("|", 1)[1], "per_s")) for name in results
                 if name.startswith(f"lever throughput|{prefix}")]
        return max(rates, key=lambda item: item[1], default=("", float("nan")))

    def throughput_note(ours: str, bare: str, peer: str) -> str:
        precision = ours.split()[-1]
        note = (f"bare onnxruntime on the same {precision} graph: {rate(bare) / rate(peer):.2f}x, so the runtime "
                f"costs little here; the graph's compute at {budget}-token batches sets the ratio")
        if precision == "int8":
            note += f" (int8 runs {rate(OURS_INT8) / rate(OURS_FP32):.2f}x our fp32 graph)"
        label, best = best_lever(precision)
        if best == best:
            note += f"; fastest lever variant `{label}`: {best / rate(peer):.2f}x (Levers)"
        return note

    def memory_note() -> str:
        return (f"ours {peak(OURS_INT8):.0f} MB = {loaded(OURS_INT8):.0f} MB loaded + "
                f"{peak(OURS_INT8) - loaded(OURS_INT8):.0f} MB expanding: the largest tensor is the decoder output "
                f"of a {budget_rows}-row batch ({budget}-token budget), {budget_rows * tokens * VOCAB * 4 / 2**20:.0f}"
                f" MB fp32, written once; fastembed {peak(FASTEMBED):.0f} MB (its [32, {tokens}, vocab] logits, "
                "then numpy pooling)")

    def query_note() -> str:
        note = (f"ours {p50(OURS_INT8):.2f} ms, fastembed {p50(FASTEMBED):.2f} ms; bare session.run on our int8 graph "
                f"{p50(BARE_INT8) / p50(FASTEMBED):.2f}x fastembed: the int8 encoder's compute sets it, not the "
                f"runtime (our fp32 graph: {p50(OURS_FP32) / p50(FASTEMBED):.2f}x)")
        unfused = lever("int8 unfused graph", "p50_ms", "latency")
        if unfused == unfused:
            note += (f"; with attention unfused (export --unfused-attention, Levers) {unfused:.2f} ms = "
                     f"{unfused / p50(FASTEMBED):.2f}x")
        return note

    def overhead_note(ours: str, bare: str) -> str:
        per_text = 1000 * (1 / rate(ours) - 1 / rate(bare))
        return f"{per_text:+.2f} ms per text over session.run (tokenise, batch, sparsify, reorder)"

    return [
        Target("int8 document throughput vs fastembed", rate(OURS_INT8) / rate(FASTEMBED), 6, True, "x",
               throughput_note(OURS_INT8, BARE_INT8, FASTEMBED)),
        Target("int8 document throughput vs sentence-transformers", rate(OURS_INT8) / rate(ST), 5, True, "x",
               throughput_note(OURS_INT8, BARE_INT8, ST)),
        Target("fp32 document throughput vs fastembed", rate(OURS_FP32) / rate(FASTEMBED), 1.8, True, "x",
               throughput_note(OURS_FP32, BARE_FP32, FASTEMBED)),
        Target(f"peak RSS expanding {rows} docs x {tokens} tokens vs fastembed", peak(OURS_INT8) / peak(FASTEMBED),
               0.25, False, "x", memory_note()),
        Target("query latency p50 (batch 1) vs fastembed", p50(OURS_INT8) / p50(FASTEMBED), 0.25, False, "x",
               query_note()),
        Target("query latency p50 vs bare onnxruntime, int8", p50(OURS_INT8) / p50(BARE_INT8), 1.15, False, "x",
               f"{p50(OURS_INT8) - p50(BARE_INT8):+.2f} ms over session.run ({p50(BARE_INT8):.2f} ms)"),
        Target("query latency p50 vs bare onnxruntime, fp32", p50(OURS_FP32) / p50(BARE_FP32), 1.15, False, "x",
               f"{p50(OURS_FP32) - p50(BARE_FP32):+.2f} ms over session.run ({p50(BARE_FP32):.2f} ms)"),
        Target("cold start (import + load + first query) vs fastembed",
               cold[OURS_INT8]["total_s"] / cold[FASTEMBED]["total_s"], 1 / 3, False, "x",
               "; ".join(f"{label}: import {c['import_s']:.2f} s, load {c['load_s']:.2f} s, first query "
                         f"{c['first_query_s']:.2f} s" for label, c in cold.items())),
        Target("`import spladerunner`", import_time, 0.15, False, "s",
               "lazy package: numpy, tokenizers and onnxruntime load on first use"),
        Target("end-to-end vs bare onnxruntime throughput, int8", rate(OURS_INT8) / rate(BARE_INT8), 0.9, True, "x",
               overhead_note(OURS_INT8, BARE_INT8)),
        Target("end-to-end vs bare onnxruntime throughput, fp32", rate(OURS_FP32) / rate(BARE_FP32), 0.9, True, "x",
               overhead_note(OURS_FP32, BARE_FP32)),
    ]


# ---------------------------------------------------------------- markdown


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:
                return "n/a"
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return "n/a" if a != a or b != b or b == 0 else f"{a / b:.2f}x"


def sections(config: Config, ctx: dict[str, Any], results: Results, agree: list[dict[str, Any]],
             plot_name: str, gpu_report: bool = False) -> list[tuple[str, str]]:
    """(title, body) of every RESULTS.md section, in order."""
    def m(name: str, field: str) -> float:
        return median_of(results, name, field)

    memory_names = [f"memory {rows}x{tokens}" for rows, tokens in config.memory_shapes]
    out: list[tuple[str, str]] = []

    out.append(("Targets", table(
        ["target", "measured", "bound", "verdict", "what limits it / detail"],
        [[t.claim, f"{t.measured:.3g} {t.unit}", f"{'>=' if t.at_least else '<='} {t.bound:.3g} {t.unit}",
          t.verdict, t.note] for t in targets(config, results)])))

    out.append(("Document throughput", table(
        ["system", "docs/s", "vs fastembed", "vs sentence-transformers", "vs bare onnxruntime (same graph)",
         "load s"],
        [[label, m(f"throughput|{label}", "per_s"), ratio(m(f"throughput|{label}", "per_s"),
                                                          m(f"throughput|{FASTEMBED}", "per_s")),
          ratio(m(f"throughput|{label}", "per_s"), m(f"throughput|{ST}", "per_s")),
          ratio(m(f"throughput|{label}", "per_s"), m(f"throughput|onnxruntime {label.split()[-1]}", "per_s"))
          if label.startswith("spladerunner") else "", m(f"throughput|{label}", "load_s")]
         for label in SYSTEM_ORDER])
        + f"\n\n{config.documents} SciFact documents (title + abstract), max length {config.max_length} tokens for "
          f"every system, batch size {config.batch_size} (ours: at most {config.batch_size} rows and the runtime's "
          f"default {runtime_budget(results)}-token budget per batch; bare onnxruntime: the same batches, "
          "pre-tokenised). "
          f"Median of {config.rounds} rounds, each a fresh process with a warm-up of {config.warmup} documents."))

    out.append(("Each system at its best batch size", best_batch_table(results)))

    out.append(("Query latency (batch 1)", table(
        ["system", "p50 ms", "p95 ms", "p50 vs fastembed", "p50 vs bare onnxruntime"],
        [[label, m(f"latency|{label}", "p50_ms"), m(f"latency|{label}", "p95_ms"),
          ratio(m(f"latency|{label}", "p50_ms"), m(f"latency|{FASTEMBED}", "p50_ms")),
          ratio(m(f"latency|{label}", "p50_ms"), m(f"latency|onnxruntime {label.split()[-1]}", "p50_ms"))
          if label.startswith("spladerunner") else ""] for label in SYSTEM_ORDER])
        + f"\n\n{config.queries} SciFact queries, one at a time, after {config.warmup} warm-up queries; "
          "bare onnxruntime times `session.run` alone on pre-tokenised input."))

    last = memory_names[-1]
    out.append(("Peak memory", table(
        ["system", "RSS after load MB", *[f"peak RSS {n.split()[1]} MB" for n in memory_names],
         f"RSS after {last.split()[1]} MB", f"peak {last.split()[1]} vs fastembed"],
        [[label, m(f"{last}|{label}", "rss_before_mb"), *[m(f"{n}|{label}", "peak_rss_mb") for n in memory_names],
          m(f"{last}|{label}", "rss_after_mb"),
          ratio(m(f"{last}|{label}", "peak_rss_mb"), m(f"{last}|{FASTEMBED}", "peak_rss_mb"))]
         for label in SYSTEM_ORDER])
        + "\n\nPeak RSS (`ru_maxrss`) of a process that loads the system and expands one batch of synthetic texts of "
          "exactly that many tokens (rows x tokens), each configuration in its own process."))

    cold_rows = [[label, *[m(f"cold|{label}", f) for f in ("import_s", "load_s", "first_query_s", "total_s",
                                                             "process_s", "peak_rss_mb")],
                  ratio(m(f"cold|{label}", "total_s"), m(f"cold|{FASTEMBED}", "total_s"))]
                 for label in (OURS_INT8, FASTEMBED, ST)]
    imports = sorted({name.split("|", 1)[1] for name in results if name.startswith("import|")})
    out.append(("Cold start and import", table(
        ["system", "import s", "load s", "first query s", "total s", "process wall s", "peak RSS MB",
         "total vs fastembed"], cold_rows)
        + f"\n\nA fresh interpreter imports the library, loads the model and expands one query; median of "
          f"{config.cold_runs} processes (page cache warm). process wall s includes interpreter start-up.\n\n"
        + table(["statement", "seconds (fresh interpreter)"],
                [[f"`{s}`", m(f"import|{s}", "import_s")] for s in imports])))

    base = ctx["sizes"]["spladerunner (numpy, onnxruntime, tokenizers, huggingface-hub)"]["bytes"]
    out.append(("Installed size of the dependency closure", table(
        ["stack", "MB on disk", "vs spladerunner", "largest members"],
        [[stack, info["bytes"] / 1e6, ratio(info["bytes"], base),
          ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in info["members"][:5])]
         for stack, info in ctx["sizes"].items()])
        + "\n\nSum of the files each installed distribution's RECORD lists, over the transitive `Requires-Dist` "
          "closure (markers evaluated, extras not followed) in this environment."))

    out.append(("Output agreement (same weights, same texts)", table(
        ["system", "reference", "texts", "max abs diff", "mean Jaccard", "min Jaccard", "mean terms"],
        [[a[k] for k in ("system", "reference", "texts", "max_abs_diff", "mean_jaccard", "min_jaccard", "mean_terms")]
         for a in sorted(agree, key=lambda a: (a["texts"], SYSTEM_ORDER.index(a["system"])))])
        + f"\n\n{config.agreement_texts} documents and {config.agreement_texts} queries; vectors compared with "
          "special tokens removed (the runtime drops them, the peers keep [CLS]/[SEP]). Jaccard of the active "
          "(weight > 0) term sets; our int8 row shows quantisation error against our fp32."))

    sweep_rows = []
    for label in (OURS_INT8, OURS_FP32, FASTEMBED, ST):
        for point in (results.get(f"sweep|{label}") or [{}])[0].get("points", []):
            sweep_rows.append([label, point["tokens"], point["batch_size"], point["per_s"],
                               point["per_s"] * point["tokens"]])
    out.append(("Throughput against padded length and batch size", f"![throughput]({plot_name})\n\n" + table(
        ["system", "padded length", "batch size", "texts/s", "tokens/s"], sweep_rows)
        + "\n\nOne batch of synthetic fixed-length texts per run (no padding waste, our token budget lifted to the "
          "batch); median of at least two timed runs after a warm-up."))

    out.append(("Levers: what moves our speed and memory", lever_tables(config, results)))

    gpu = (f"This run measured CPU only (`--providers {ctx['machine']['providers']}`): no GPU figure comes from it. "
           "Every system takes a providers option (`--providers cuda`) for the CUDA + fp16 graph. ")
    gpu += ("GPU figures of a separate run (`python -m benchmarks.gpu`, another machine) are in "
            "[RESULTS-gpu.md](RESULTS-gpu.md)." if gpu_report else "No GPU figure of this model exists yet.")
    out.append(("GPU", gpu))
    return out


def best_batch_table(results: Results) -> str:
    """Per padded length, each system's best texts/s over the swept batch sizes, and ours against the peers'."""
    labels = (OURS_INT8, OURS_FP32, FASTEMBED, ST)
    best: dict[tuple[str, int], tuple[float, int]] = {}
    for label in labels:
        for point in (results.get(f"sweep|{label}") or [{}])[0].get("points", []):
            key = (label, point["tokens"])
            best[key] = max(best.get(key, (0.0, 0)), (point["per_s"], point["batch_size"]))
    rows = []
    for tokens in sorted({t for _, t in best}):
        cells = [best.get((label, tokens), (float("nan"), 0)) for label in labels]
        rows.append([tokens, *[f"{rate:.3g} (batch {size})" for rate, size in cells],
                     ratio(cells[0][0], cells[2][0]), ratio(cells[0][0], cells[3][0])])
    return (table(["padded length", *[f"{label} texts/s" for label in labels], "int8 vs fastembed",
                   "int8 vs sentence-transformers"], rows)
            + "\n\nFrom the sweep below: each system's fastest batch size, so no system is held to a batch size that "
              "suits another. The targets use the matched batch size of the main table.")


def lever_tables(config: Config, results: Results) -> str:
    """One table per lever: throughput, peak and retained RSS on the memory batch, latency."""
    rows_, tokens = config.memory_shapes[-1]
    blocks = []
    variants = lever_setups(config, ("cpu",))
    for lever in dict.fromkeys(lever for lever, _ in variants):
        rows = []
        for _, setup in (v for v in variants if v[0] == lever):
            label = setup.label
            rows.append([label, median_of(results, f"lever throughput|{label}", "per_s"),
                         median_of(results, f"lever memory|{label}", "peak_rss_mb"),
                         median_of(results, f"lever memory|{label}", "rss_after_mb"),
                         median_of(results, f"lever memory|{label}", "seconds"),
                         median_of(results, f"lever latency|{label}", "p50_ms") if lever != "max_tokens" else ""])
        blocks.append(f"**{lever}**\n\n" + table(
            ["variant", "docs/s", f"peak RSS {rows_}x{tokens} MB", "RSS after MB", f"{rows_}x{tokens} batch s",
             "query p50 ms"], rows))
    note = (f"Lever runs: the main table's `spladerunner int8` setup (max_batch_size {config.batch_size}, threads = "
            f"usable CPUs, the runtime's default {runtime_budget(results)}-token budget) with one thing changed; "
            f"{config.lever_documents} SciFact documents, one process per variant and task; session options are "
            "applied to the sessions the runtime creates.")
    findings = "\n".join(f"- {line}" for line in lever_findings(config, results))
    return "\n\n".join([*blocks, note, findings])


def lever_findings(config: Config, results: Results) -> list[str]:
    """The levers' effects in one line each, computed from this run."""
    import numpy as np

    rows, tokens = config.memory_shapes[-1]

    def get(label: str, task: str, field: str) -> float:
        return median_of(results, f"lever {task}|{label}", field)

    budgets = [b for b in config.lever_max_tokens if b >= tokens]
    batch_tokens = [min(rows, 64, b // tokens) * tokens for b in budgets]
    peaks = [get(f"int8 max_tokens={b}", "memory", "peak_rss_mb") for b in budgets]
    findings = []
    if len(set(batch_tokens)) > 1:
        slope = float(np.polyfit(batch_tokens, peaks, 1)[0]) * 1024
        findings.append(f"max_tokens: peak RSS grows by {slope:.0f} MB per 1024 padded tokens in a batch "
                        f"(the fused graph writes the [rows, length, {VOCAB}] fp32 decoder output once); docs/s "
                        + ", ".join(f"{b}: {get(f'int8 max_tokens={b}', 'throughput', 'per_s'):.2f}"
                                    for b in config.lever_max_tokens) + ".")
    main = {label: median_of(results, f"throughput|{label}", "per_s") for label in (FASTEMBED, ST)}
    latency = median_of(results, f"latency|{FASTEMBED}", "p50_ms")
    for precision in dict.fromkeys(precision for precision, _ in config.lever_graphs):
        export, unfused = f"{precision} export graph", f"{precision} unfused graph"
        if f"lever throughput|{unfused}" not in results:
            continue
        rate = get(unfused, "throughput", "per_s")
        findings.append(
            f"{precision}, attention unfused (export --unfused-attention): docs/s "
            f"{get(export, 'throughput', 'per_s'):.2f} -> "
            f"{rate:.2f} ({rate / main[FASTEMBED]:.2f}x fastembed, {rate / main[ST]:.2f}x sentence-transformers), "
            f"query p50 {get(export, 'latency', 'p50_ms'):.2f} -> {get(unfused, 'latency', 'p50_ms'):.2f} ms "
            f"({get(unfused, 'latency', 'p50_ms') / latency:.2f}x fastembed), peak RSS "
            f"{get(export, 'memory', 'peak_rss_mb'):.0f} -> {get(unfused, 'memory', 'peak_rss_mb'):.0f} MB.")
    defaults, arena = "int8 defaults", "int8 cpu arena off"
    findings.append(
        f"cpu arena off: RSS kept after the batch {get(defaults, 'memory', 'rss_after_mb'):.0f} -> "
        f"{get(arena, 'memory', 'rss_after_mb'):.0f} MB, peak {get(defaults, 'memory', 'peak_rss_mb'):.0f} -> "
        f"{get(arena, 'memory', 'peak_rss_mb'):.0f} MB, docs/s {get(defaults, 'throughput', 'per_s'):.2f} -> "
        f"{get(arena, 'throughput', 'per_s'):.2f}.")
    return findings


def effective_max_lengths(results: Results) -> dict[str, list[int]]:
    """The document max length each loaded system reported, per main-table label."""
    found: dict[str, set[int]] = {}
    for name, rounds in results.items():
        label = name.split("|", 1)[1]
        if label in SYSTEM_ORDER:
            found.setdefault(label, set()).update(r["max_length"] for r in rounds if "max_length" in r)
    return {label: sorted(found[label]) for label in SYSTEM_ORDER if label in found}


def header(ctx: dict[str, Any], config: Config, results: Results) -> str:
    machine, versions = ctx["machine"], ctx["versions"]
    pinned = ", ".join(f"{label} {'/'.join(map(str, lengths))}"
                       for label, lengths in effective_max_lengths(results).items())
    model = ctx.get("model", {})
    title = ("spladerunner benchmark results" + (": the real splade-tiny" if config.model_size == "splade-tiny" else "")
             + (" (SMOKE RUN: tiny model, not a measurement)" if config.smoke else ""))
    resumed = "; resumed after an interruption, with the processes measured before it" if ctx.get("resumed") else ""
    return "\n".join([
        f"# {title}", "",
        "Generated by `python -m benchmarks.run`" + (" --smoke" if config.smoke else "") + f" on {ctx['date']} "
        f"({ctx['duration_s'] / 60:.1f} min{resumed}). Every figure is a ratio against peers measured in this run, "
        "on the same weights and texts; each configuration runs in its own process, warm-ups excluded, medians "
        "reported.", "",
        f"- **Machine**: {machine['cpu']} ({machine['features']}), {machine['usable_cpus']} usable of "
        f"{machine['logical_cpus']} logical CPUs, {machine['memory_gb']:.0f} GB RAM, {machine['os']}, "
        f"Python {machine['python']}; providers: {machine['providers']}. Load average (1 min) "
        f"{ctx['load_average']['start'][0]:.2f} at start, {ctx['load_average']['end'][0]:.2f} at end "
        "(other work shared the machine; rounds are interleaved across systems so it hits all alike).",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        ("- **Model**: the real trained rasyosef/splade-tiny (BERT-Tiny, 2 layers, hidden 128; "
         "../shared/models/splade-tiny), exported by " if config.model_size == "splade-tiny" else
         f"- **Model**: random-init, sparsity-calibrated BERT-{model.get('size', config.model_size)} masked-LM from "
         f"`spladerunner_export.factory` (seed {model.get('seed', 0)}, calibration {model.get('calibration', {})}), "
         "exported by ") +
        "`spladerunner-export` (fp32 with fused pooling, dynamic int8); fastembed runs a plain logits export of the "
        "same checkpoint, sentence-transformers the checkpoint itself (torch fp32).",
        f"- **Settings**: max length {config.max_length} tokens for every system and mode, batch size "
        f"{config.batch_size}, threads = usable CPUs for every system. Truncation length each system reported "
        f"after loading: {pinned}.",
    ])


def write(out: Path, config: Config, ctx: dict[str, Any], measurements: list[Measurement], results: Results,
          agree: list[dict[str, Any]], mirrored: tuple[Path, str] | None = None) -> list[Path]:
    """Write results.json, throughput.png and RESULTS.md into `out`; `mirrored` = (another RESULTS.md, this
    report's path relative to it) shows the report there too."""
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "results.json"
    raw.write_text(json.dumps({"context": ctx, "results": results, "agreement": agree}, indent=1, default=str),
                   encoding="utf-8")
    plot = plot_sweep(out / "throughput.png", results)
    body = [header(ctx, config, results)]
    gpu_report = (out / "RESULTS-gpu.md").is_file()
    body += [f"## {title}\n\n{text}" for title, text in sections(config, ctx, results, agree, plot.name, gpu_report)]
    markdown = out / "RESULTS.md"
    kept = mirrored_sections(markdown.read_text(encoding="utf-8")) if markdown.is_file() else ""
    write_atomic(markdown, "\n\n".join(body) + "\n" + (f"\n{kept}" if kept else ""))
    if mirrored:
        mirror(*mirrored, markdown.read_text(encoding="utf-8"))
        return [markdown, plot, raw, mirrored[0]]
    return [markdown, plot, raw]


def plot_sweep(path: Path, results: Results) -> Path:
    """Texts/s against padded length, one panel per batch size, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    series = {label: (results.get(f"sweep|{label}") or [{}])[0].get("points", [])
              for label in (OURS_INT8, OURS_FP32, FASTEMBED, ST)}
    batch_sizes = sorted({p["batch_size"] for points in series.values() for p in points})
    figure, axes = plt.subplots(1, max(1, len(batch_sizes)), figsize=(4.5 * max(1, len(batch_sizes)), 4),
                                sharey=True, squeeze=False)
    for axis, batch_size in zip(axes[0], batch_sizes):
        for label, points in series.items():
            chosen = sorted((p["tokens"], p["per_s"]) for p in points if p["batch_size"] == batch_size)
            if chosen:
                axis.plot([t for t, _ in chosen], [v for _, v in chosen], marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({p["tokens"] for points in series.values() for p in points}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_yscale("log")
        axis.set_title(f"batch size {batch_size}")
        axis.set_xlabel("padded length (tokens)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("texts/s")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


MIRROR_BEGIN, MIRROR_END = "<!-- begin {} (generated by benchmarks.report.publish) -->", "<!-- end {} -->"
_MIRROR = re.compile(r"<!-- begin (\S+) \(generated by benchmarks\.report\.publish\) -->\n.*?<!-- end \1 -->\n",
                     re.DOTALL)


def write_atomic(path: Path, text: str) -> None:
    """Write `path` through a temporary file renamed over it: a crash never leaves half a report."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def mirrored_sections(results: str) -> str:
    """The companion reports mirrored into a RESULTS.md (each between its markers), in file order."""
    return "".join(match.group(0) for match in _MIRROR.finditer(results))


_RELATIVE_LINK = re.compile(r"\]\((?![a-z]+:|#|/)([^)]+)\)")


def mirror(results_md: Path, name: str, report: str) -> None:
    """Put `report` (the companion file `name`, a path relative to `results_md`'s folder) into `results_md`
    between markers: replaced in place when already there, appended otherwise. Its headings move one level
    down, under RESULTS.md's title; its relative links (a plot beside it) are rebased onto `results_md`'s folder."""
    folder = Path(name).parent.as_posix()
    if folder != ".":
        report = _RELATIVE_LINK.sub(lambda link: f"]({folder}/{link.group(1)})", report)
    lines, fenced = [], False
    for line in report.rstrip("\n").splitlines():
        fenced ^= line.startswith("```")
        lines.append(f"#{line}" if line.startswith("#") and not fenced else line)
    section = f"{MIRROR_BEGIN.format(name)}\n" + "\n".join(lines) + f"\n{MIRROR_END.format(name)}\n"
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    pattern = re.compile(re.escape(MIRROR_BEGIN.format(name)) + r"\n.*?" + re.escape(MIRROR_END.format(name))
                         + r"\n", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = f"{text.rstrip(chr(10))}\n\n{section}" if text.strip() else section
    write_atomic(results_md, text)


def publish(text: str, output: str | Path | None) -> None:
    """Print a markdown report, and write it to `output` as well when given (the RESULTS-*.md files); the
    RESULTS.md next to `output` then shows it too (`mirror`), so RESULTS.md carries every benchmark."""
    print(text)
    if output:
        output = Path(output)
        write_atomic(output, text if text.endswith("\n") else text + "\n")
        if output.name != "RESULTS.md":
            mirror(output.parent / "RESULTS.md", output.name, text)
