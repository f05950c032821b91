"""What batch-invariant int8 costs: onnxruntime's `quantize_dynamic` (one activation scale per batch, the
old export) against the export's per-token int8, both made here from the same fused fp32 graph of the
benchmark model (so the per-token graph is the current `spladerunner_export.quantize`'s, not the one the
benchmark model was exported with).

Both graphs run on sessions made as the runtime makes them (its threads and disabled CPU fusions), on
the same pre-tokenised SciFact documents (1024-token batches) and queries (one per call), in interleaved
rounds; medians. With one thread each round runs again timed by the calling thread's CPU clock
(onnxruntime computes on that thread), which a busy shared machine disturbs far less than the wall
clock. Needs the benchmark model (`python -m benchmarks.run` builds it under benchmarks/.work).

    python -m benchmarks.int8_ab --output benchmarks/RESULTS-int8-ab.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from spladerunner.session import SLOW_CPU_FUSIONS
from spladerunner.tokenization import Encoded, batches, encode, load_tokenizer
from spladerunner_export.quantize import quantize_int8

from .report import publish
from .texts import documents, queries

WORK = Path(__file__).resolve().parent / ".work" / "models"


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(SLOW_CPU_FUSIONS))


def feeds(graph: ort.InferenceSession, encoded: Encoded, max_tokens: int, max_batch_size: int) -> list[dict]:
    names = {i.name for i in graph.get_inputs()}
    out = []
    for batch in batches(encoded, max_tokens=max_tokens, max_batch_size=max_batch_size, pad_id=0):
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                "token_type_ids": batch.token_type_ids}
        out.append({k: v for k, v in feed.items() if k in names})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    folders = sorted(WORK.glob("bert-base-len256-*"))
    if not folders:
        raise SystemExit(f"no benchmark model under {WORK}: run `python -m benchmarks.run` first")
    export = folders[-1] / "export"
    with tempfile.TemporaryDirectory() as tmp:
        per_batch = Path(tmp) / "model_int8_dynamic.onnx"
        quantize_dynamic(export / "model.onnx", per_batch, weight_type=QuantType.QInt8, per_channel=False,
                         reduce_range=False, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        per_token = Path(tmp) / "model_int8.onnx"
        quantize_int8(export / "model.onnx", per_token)
        graphs = {"per-batch (quantize_dynamic)": per_batch, "per-token (export)": per_token}
        tokenizer = load_tokenizer(export / "tokenizer.json")
        docs, texts = encode(tokenizer, documents(32), 256), encode(tokenizer, queries(40), 64)
        rows = {}
        for threads in (2, 1):
            sessions = {name: session(path, threads) for name, path in graphs.items()}
            doc_feeds = {name: feeds(s, docs, 1024, 64) for name, s in sessions.items()}
            query_feeds = {name: feeds(s, texts, 64, 1) for name, s in sessions.items()}
            # per graph: (docs/s, query p50 ms) by the wall clock, then by this thread's CPU clock
            figures: dict[str, list[list[float]]] = {name: [[], [], [], []] for name in graphs}
            clocks = [(0, time.perf_counter)] + ([(2, time.thread_time)] if threads == 1 else [])
            for name, graph in sessions.items():  # warm-up
                for feed in doc_feeds[name][:2]:
                    graph.run(None, feed)
            for round_index in range(args.rounds):
                for name in (list(graphs) if round_index % 2 == 0 else list(graphs)[::-1]):
                    for offset, clock in clocks:
                        started = clock()
                        for feed in doc_feeds[name]:
                            sessions[name].run(None, feed)
                        figures[name][offset].append(len(docs.ids) / (clock() - started))
                        one = []
                        for feed in query_feeds[name]:
                            started = clock()
                            sessions[name].run(None, feed)
                            one.append(clock() - started)
                        figures[name][offset + 1].append(statistics.median(one) * 1000)
            for name in graphs:
                rows[f"{name}, threads={threads}"] = [statistics.median(values) for values in figures[name] if values]
    lines = [f"# int8: per-batch vs per-token activation scales ({time.strftime('%Y-%m-%d %H:%M')}, "
             f"`python -m benchmarks.int8_ab`, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", "",
             "| graph | docs/s | query p50 ms | docs per CPU s (1 thread) | query p50 CPU ms (1 thread) |",
             "|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join([name, *(f"{value:.2f}" for value in values), *[""] * (4 - len(values))]) + " |"
              for name, values in rows.items()]
    publish("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
