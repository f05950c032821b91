"""Long documents, truncated or read as windows: retrieval quality and cost of the real splade-tiny (int8) on
BEIR SciFact, and the peak memory of one very long document.

Rows: documents cut at 128, 256 and 512 tokens, and windows of 128 and 256 tokens (`long_documents="windows"`)
at the default stride (half a window's text tokens), aggregated by the plain max (`window_norm=0`) and by the
default length-normalised max (`window_norm=0.25`, chosen in `benchmarks.window_aggregation`), plus windows of
128 at a full-window stride (half the windows). Queries are cut at 64 tokens in every row; every row's
vectors are searched by the same exact `SparseIndex` (`benchmarks.quality.measure`). docs/s counts documents
expanded per second (the document side alone); windows/doc is the mean number of windows (1 for truncation).
The memory rows run one document of N tokens in a fresh process and report its peak RSS.

    python -m benchmarks.windows --output benchmarks/RESULTS-windows.md
    python -m benchmarks.windows --smoke     # 300 documents, 100k tokens: a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spladerunner.evaluation import load_beir, markdown_table

from .quality import CORPORA, Encode, export_model, first_documents, measure
from .report import publish

PRECISION = "int8"
# row label -> Expander keywords
SETTINGS = {
    "truncate 128": {"document_max_length": 128},
    "truncate 256": {"document_max_length": 256},
    "truncate 512": {"document_max_length": 512},
    "windows 128, stride 63, plain max (norm 0)": {"document_max_length": 128, "long_documents": "windows",
                                                   "window_norm": 0.0},
    "windows 256, stride 127, plain max (norm 0)": {"document_max_length": 256, "long_documents": "windows",
                                                    "window_norm": 0.0},
    "windows 128, stride 63, norm 0.25 (default)": {"document_max_length": 128, "long_documents": "windows"},
    "windows 256, stride 127, norm 0.25 (default)": {"document_max_length": 256, "long_documents": "windows"},
    "windows 128, stride 126, norm 0.25": {"document_max_length": 128, "long_documents": "windows",
                                           "window_stride": 126},
}
MEMORY_SETTING = "windows 256, stride 127, norm 0.25 (default)"

# Run in a fresh interpreter: expand one document of about N tokens, print windows, seconds and peak RSS.
MEMORY_PROBE = """
import json, resource, sys, time
from spladerunner import Expander
folder, tokens, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
expander = Expander(folder, precision="int8", **options)
words = open(sys.argv[4], encoding="utf-8").read().split()
per_word = len(expander.tokenizer.encode(" ".join(words), add_special_tokens=False).ids) / len(words)
document = " ".join(words[i % len(words)] for i in range(int(tokens / per_word)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
vector = expander.expand(document)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tokens": len(expander.tokenizer.encode(document, add_special_tokens=False).ids),
                  "windows": vector.windows, "seconds": seconds, "rss_before_mb": before / 1024,
                  "rss_peak_mb": peak / 1024}))
"""


def windowed_encoder(folder: Path, options: dict, cost: dict[str, float]) -> Encode:
    """Our int8 Expander with these options; documents' expansion time and windows summed into `cost`."""
    from spladerunner import Expander

    expander = Expander(folder, precision=PRECISION, **options)

    def encode(texts: list[str], query: bool):
        started = time.perf_counter()
        batch = expander.expand_batch(texts, query=query)
        if not query:
            cost["seconds"] += time.perf_counter() - started
            cost["documents"] += len(texts)
            cost["windows"] += int(batch.windows.sum())
        return batch

    return encode


def memory_rows(folder: Path, sizes: list[int], words: Path) -> dict[str, dict[str, str]]:
    rows = {}
    for tokens in sizes:
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(folder), str(tokens),
                               json.dumps(SETTINGS[MEMORY_SETTING]), str(words)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"memory probe failed:\n{done.stderr[-3000:]}")
        probe = json.loads(done.stdout.splitlines()[-1])
        rows[f"{probe['tokens']:,} tokens"] = {
            "windows": f"{probe['windows']:,}", "seconds": f"{probe['seconds']:.1f}",
            "RSS before (MB)": f"{probe['rss_before_mb']:.0f}", "peak RSS (MB)": f"{probe['rss_peak_mb']:.0f}",
            "all windows' outputs (MB)": f"{probe['windows'] * 30522 * 4 / 1e6:,.0f}"}
        print(f"memory: {rows}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="300 documents, memory probe at 100k tokens")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown report here too")
    args = parser.parse_args(argv)
    path, level = CORPORA["SciFact"]
    data = load_beir(path)
    if args.smoke:
        data = first_documents(data, 300)
    load = os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(Path(tmp) / "splade-tiny")
        for label, options in SETTINGS.items():
            cost = {"seconds": 0.0, "documents": 0, "windows": 0}
            scores = measure(windowed_encoder(folder, options, cost), data, level)
            rows[label] = {"ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"],
                           "docs/s": f"{cost['documents'] / cost['seconds']:.0f}",
                           "windows/doc": f"{cost['windows'] / cost['documents']:.2f}"}
            print(f"{label}: {rows[label]}", file=sys.stderr)
        words = Path(tmp) / "words.txt"
        words.write_text(" ".join(f"{d.get('title', '')} {d['text']}" for d in data.corpus[:200]), encoding="utf-8")
        memory = memory_rows(folder, [100_000] if args.smoke else [10_000, 1_000_000], words)
    lengths = np.array([len(d["text"].split()) + len(d.get("title", "").split()) for d in data.corpus])
    text = (f"# Long documents: truncation or windows, splade-tiny {PRECISION} on SciFact "
            f"({time.strftime('%Y-%m-%d %H:%M')}, `python -m benchmarks.windows{' --smoke' if args.smoke else ''}`)\n\n"
            f"{len(data.corpus):,} documents (title + abstract, median {int(np.median(lengths))} words), "
            f"{len(data.qrels)} judged queries cut at 64 tokens. Windows: the element-wise max over overlapping "
            "windows of the document max length (`long_documents=\"windows\"`), divided for a document of several "
            "windows by (its tokens / a window's text tokens) ** norm (`window_norm`; 0: the plain max); stride = "
            "tokens between window starts. Why the plain max loses and how the norm was chosen (on half of the "
            "queries, confirmed on the other half): `benchmarks/RESULTS-window-aggregation.md`. docs/s: documents "
            "expanded per second on this machine (the document side alone; 2 cores, load average "
            f"{load:.1f} at the start: figures are comparable only on a quiet machine); windows/doc: mean windows "
            "per document. The other shared collection (the MS MARCO DL19 "
            "subset) holds passages shorter than 128 tokens, which windows leave unchanged.\n\n"
            + markdown_table(rows)
            + f"\n\nPeak memory of one long document ({MEMORY_SETTING}, max_tokens 1024), each in a fresh process; "
            "the peak RSS includes the interpreter, onnxruntime and the model (RSS before the call). Holding every "
            "window's [vocab] float32 output at once would take the last column.\n\n"
            + markdown_table(memory))
    publish(text, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
