"""Retrieval quality of the real splade-tiny: nDCG@10 (and MRR@10, recall@100) on BEIR SciFact and the
TREC DL19 subset, for our fp32 and int8 graphs next to sentence-transformers' `SparseEncoder` on the same
checkpoint (torch fp32), all with the same max lengths (queries 64, documents 256 tokens).

Every system's vectors are searched with the same exact `SparseIndex`, so the figures differ only by the
encoders. Writes the table to --output (benchmarks/RESULTS-quality.md for a full run).

    python -m benchmarks.quality --output benchmarks/RESULTS-quality.md
    python -m benchmarks.quality --smoke     # 200 documents per corpus, seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spladerunner.evaluation import BeirDataset, evaluate, load_beir, markdown_table
from spladerunner.manifest import DEFAULT_MAX_LENGTH
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch

from .report import publish
from .texts import SHARED, SPLADE_TINY

# corpus -> (BEIR folder, lowest relevance grade MRR and recall count: TREC DL judges relevance >= 2)
CORPORA = {"SciFact": (SHARED / "data" / "beir-scifact", 1),
           "DL19 subset": (SHARED / "data" / "msmarco-dl19-subset", 2)}
METRICS = ("ndcg@10", "mrr@10", "recall@100")
Encode = Callable[[list[str], bool], SparseBatch]


def our_encoder(folder: Path | str, precision: str) -> Encode:
    from spladerunner import Expander

    expander = Expander(folder, precision=precision)
    return lambda texts, query: expander.expand_batch(texts, query=query)


def sentence_transformers_encoder(vocab_size: int) -> Encode:
    """SparseEncoder on the checkpoint, its max length set per call to ours, vectors read back as CSR."""
    import torch
    from sentence_transformers import SparseEncoder

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = SparseEncoder(str(SPLADE_TINY), device="cpu", local_files_only=True)

    def encode(texts: list[str], query: bool) -> SparseBatch:
        model.max_seq_length = DEFAULT_MAX_LENGTH["query" if query else "document"]
        dense = model.encode(texts, batch_size=32, convert_to_sparse_tensor=False, convert_to_tensor=True)
        dense = dense.to_dense().numpy() if dense.is_sparse else dense.numpy()
        keep = dense > 0
        indptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
        return SparseBatch(indptr, np.nonzero(keep)[1].astype(np.int32), dense[keep].astype(np.float32), vocab_size)

    return encode


def measure(encode: Encode, data: BeirDataset, level: int) -> dict[str, float | str]:
    started = time.perf_counter()
    ids = [d["_id"] for d in data.corpus]
    texts = [" ".join(filter(None, [d.get("title"), d.get("text")])) for d in data.corpus]
    index = SparseIndex()
    for start in range(0, len(texts), 512):
        index.add_vectors(encode(texts[start:start + 512], False), ids[start:start + 512])
    query_ids, query_texts = data.judged_queries()
    run = index.search(encode(query_texts, True), k=100).to_run(query_ids)
    scores = evaluate(run, data.qrels, METRICS, relevance_level=level)
    return {**{m: round(v, 4) for m, v in scores.items()}, "seconds": f"{time.perf_counter() - started:.0f}"}


def export_model(out: Path) -> Path:
    """Our export of splade-tiny (fp32 and int8; exit 1 = a parity gate failed, the folder is still complete)."""
    done = subprocess.run([sys.executable, "-m", "spladerunner_export", "convert", str(SPLADE_TINY), str(out)],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"export failed:\n{done.stderr[-3000:]}")
    return out


def first_documents(data: BeirDataset, count: int) -> BeirDataset:
    """The first `count` documents of the corpus, with the judgements on them (smoke runs)."""
    keep = {d["_id"] for d in data.corpus[:count]}
    return BeirDataset([d for d in data.corpus if d["_id"] in keep], data.queries,
                       {q: {d: r for d, r in j.items() if d in keep} for q, j in data.qrels.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 documents per corpus")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(Path(tmp) / "splade-tiny")
        from spladerunner import Expander

        vocab_size = Expander(folder, precision="fp32").manifest.vocab_size
        # The int8 row is the package's built-in model (the same export, shipped: tests/test_builtin_model.py).
        systems = {"spladerunner fp32": our_encoder(folder, "fp32"),
                   "built-in splade-tiny (spladerunner int8)": our_encoder("splade-tiny", "int8"),
                   "sentence-transformers (torch fp32)": sentence_transformers_encoder(vocab_size)}
        rows = {}
        for corpus, (path, level) in CORPORA.items():
            data = load_beir(path)
            if args.smoke:
                data = first_documents(data, 200)
            for name, encode in systems.items():
                rows[f"{corpus}: {name}"] = measure(encode, data, level)
                print(f"{corpus}: {name}: {rows[f'{corpus}: {name}']}", file=sys.stderr)
    table = markdown_table(rows)
    text = (f"# Retrieval quality of the real splade-tiny ({time.strftime('%Y-%m-%d %H:%M')}, "
            "`python -m benchmarks.quality`)\n\n"
            f"Queries cut at {DEFAULT_MAX_LENGTH['query']} tokens, documents at {DEFAULT_MAX_LENGTH['document']}, for "
            "every system; each system's vectors searched exactly (`SparseIndex`, top 100). DL19 MRR@10 and "
            "recall@100 count grade >= 2 as relevant (TREC DL convention); nDCG uses the graded qrels.\n\n"
            + table)
    publish(text, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
