"""What to measure: the systems, their tasks and the lever variants, as a list of `Measurement`s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config
from .contention import CPUS
from .systems import Setup


@dataclass(frozen=True)
class Measurement:
    """One task of one configuration, repeated `repeats` times, each time in a fresh process (unless grouped)."""

    name: str
    section: str
    setup: Setup
    task: str
    params: dict[str, Any]
    repeats: int


GRAPH_LEVER = "graph: attention left unfused (export --unfused-attention)"
# onnxruntime SessionOptions attributes, or "config:<key>" session config entries (`systems.patch_session_options`).
SESSION_OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cpu arena off": {"enable_cpu_mem_arena": False},
    "memory pattern off": {"enable_mem_pattern": False},
    "arena + pattern off": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
    "no thread spinning": {"config:session.intra_op.allow_spinning": "0"},
}


def main_setups(config: Config, providers: tuple[str, ...]) -> list[Setup]:
    """The systems compared in the main tables, all at the same batch size and max length."""
    return [Setup(system, precision, batch_size=config.batch_size, threads=CPUS, providers=providers)
            for system, precision in (("spladerunner", "int8"), ("spladerunner", "fp32"), ("onnxruntime", "int8"),
                                      ("onnxruntime", "fp32"), ("fastembed", "fp32"),
                                      ("sentence-transformers", "fp32"))]


def lever_setups(config: Config, providers: tuple[str, ...]) -> list[tuple[str, Setup]]:
    """Variants of our runtime (int8 unless said) for the lever study: (lever, setup). The base is the main
    table's `spladerunner int8` setup, so lever figures compare with the peers' figures of the same run."""
    base = Setup("spladerunner", "int8", batch_size=config.batch_size, threads=CPUS, providers=providers)
    variants: list[tuple[str, Setup]] = []
    variants += [("max_tokens", base.with_(max_tokens=budget, name=f"int8 max_tokens={budget}"))
                 for budget in config.lever_max_tokens]
    variants += [("threads", base.with_(threads=threads, name=f"int8 threads={threads}"))
                 for threads in config.lever_threads]
    variants += [("session options", base.with_(session_options=SESSION_OPTIONS[key], name=f"int8 {key}"))
                 for key in config.lever_options]
    variants += [(GRAPH_LEVER, base.with_(precision=precision, graph=graph, name=f"{precision} {graph} graph"))
                 for precision, graph in config.lever_graphs]
    return variants


def documents(config: Config, count: int | None = None) -> dict[str, Any]:
    return {"kind": "documents", "count": count or config.documents}


def queries(config: Config) -> dict[str, Any]:
    return {"kind": "queries", "count": config.queries}


def plan(config: Config, vectors_dir: str, providers: tuple[str, ...] = ("cpu",)) -> list[Measurement]:
    """Every measurement of a run, main comparison first, then the levers."""
    out: list[Measurement] = []
    setups = main_setups(config, providers)
    memory_shapes = [{"kind": "fixed", "count": rows, "tokens": tokens} for rows, tokens in config.memory_shapes]
    for setup in setups:
        label = setup.label
        out.append(Measurement(f"throughput|{label}", "throughput", setup, "throughput",
                               {"texts": documents(config), "warmup": config.warmup, "repeats": 1}, config.rounds))
        out.append(Measurement(f"latency|{label}", "latency", setup, "latency",
                               {"texts": queries(config), "warmup": config.warmup}, config.rounds))
        for shape in memory_shapes:
            out.append(Measurement(f"memory {shape['count']}x{shape['tokens']}|{label}", "memory", setup, "memory",
                                   {"texts": shape}, config.rounds))
        for kind, texts in (("documents", documents(config, config.agreement_texts)),
                            ("queries", {"kind": "queries", "count": config.agreement_texts})):
            out.append(Measurement(f"vectors {kind}|{label}", "agreement", setup, "vectors",
                                   {"texts": texts, "query": kind == "queries",
                                    "out": f"{vectors_dir}/{label.replace(' ', '_')}-{kind}.npz"}, 1))
        if setup.system != "onnxruntime":
            grid = {"lengths": list(config.sweep_lengths), "batch_sizes": list(config.sweep_batch_sizes),
                    "min_seconds": config.sweep_min_seconds, "min_repeats": 2}
            out.append(Measurement(f"sweep|{label}", "sweep", setup, "sweep", grid, 1))
    for setup in setups:
        if setup.system != "onnxruntime" and setup.precision == ("int8" if setup.system == "spladerunner" else "fp32"):
            out.append(Measurement(f"cold|{setup.label}", "cold", setup, "cold",
                                   {"texts": {"kind": "queries", "count": 1}}, config.cold_runs))
    for statement in ("import spladerunner", "from spladerunner import Expander", "import onnxruntime",
                      "from fastembed import SparseTextEmbedding", "from sentence_transformers import SparseEncoder"):
        out.append(Measurement(f"import|{statement}", "import", setups[0], "import", {"statement": statement},
                               config.import_runs))
    for lever, setup in lever_setups(config, providers):
        label = setup.label
        out.append(Measurement(f"lever throughput|{label}", lever, setup, "throughput",
                               {"texts": documents(config, config.lever_documents), "warmup": config.warmup,
                                "repeats": 1}, 1))
        rows, tokens = config.memory_shapes[-1]
        out.append(Measurement(f"lever memory|{label}", lever, setup, "memory",
                               {"texts": {"kind": "fixed", "count": rows, "tokens": tokens}}, 1))
        if lever != "max_tokens":
            out.append(Measurement(f"lever latency|{label}", lever, setup, "latency",
                                   {"texts": queries(config), "warmup": config.warmup}, 1))
    return out
