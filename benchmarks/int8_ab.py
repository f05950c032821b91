"""What batch-invariant int8 costs: onnxruntime's `quantize_dynamic` (one activation scale per batch, the
old export) against the export's per-token int8, on the same fused fp32 graph of the benchmark model.

Both graphs run on sessions made as the runtime makes them (its threads and disabled CPU fusions), on
the same pre-tokenised SciFact documents (1024-token batches) and queries (one per call), in interleaved
rounds; medians. Needs the benchmark model (`python -m benchmarks.run` builds it under benchmarks/.work).

    python -m benchmarks.int8_ab --output benchmarks/RESULTS-int8-ab.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from spladerunner.session import SLOW_CPU_FUSIONS
from spladerunner.tokenization import Encoded, batches, encode, load_tokenizer

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
        graphs = {"per-batch (quantize_dynamic)": per_batch, "per-token (export)": export / "model_int8.onnx"}
        tokenizer = load_tokenizer(export / "tokenizer.json")
        docs, texts = encode(tokenizer, documents(32), 256), encode(tokenizer, queries(40), 64)
        rows = {}
        for threads in (2, 1):
            sessions = {name: session(path, threads) for name, path in graphs.items()}
            doc_feeds = {name: feeds(s, docs, 1024, 64) for name, s in sessions.items()}
            query_feeds = {name: feeds(s, texts, 64, 1) for name, s in sessions.items()}
            rates: dict[str, list[float]] = {name: [] for name in graphs}
            latencies: dict[str, list[float]] = {name: [] for name in graphs}
            for name, graph in sessions.items():  # warm-up
                for feed in doc_feeds[name][:2]:
                    graph.run(None, feed)
            for round_index in range(args.rounds):
                for name in (list(graphs) if round_index % 2 == 0 else list(graphs)[::-1]):
                    started = time.perf_counter()
                    for feed in doc_feeds[name]:
                        sessions[name].run(None, feed)
                    rates[name].append(len(docs.ids) / (time.perf_counter() - started))
                    one = []
                    for feed in query_feeds[name]:
                        started = time.perf_counter()
                        sessions[name].run(None, feed)
                        one.append(time.perf_counter() - started)
                    latencies[name].append(statistics.median(one) * 1000)
            for name in graphs:
                rows[f"{name}, threads={threads}"] = (statistics.median(rates[name]),
                                                      statistics.median(latencies[name]))
    lines = [f"# int8: per-batch vs per-token activation scales ({time.strftime('%Y-%m-%d %H:%M')}, "
             "`python -m benchmarks.int8_ab`)", "", "| graph | docs/s | query p50 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:.2f} | {latency:.2f} |" for name, (rate, latency) in rows.items()]
    publish("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
