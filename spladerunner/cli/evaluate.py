"""`spladerunner eval DATASET`: index a BEIR corpus (or reuse --index), search, print a metrics table.

The row says what was measured (encoder, model, precision, index weights) and how long indexing took;
`--output` keeps the same fields as JSON and `--run` the ranking as a TREC run file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .encoders import add_encoder_arguments, add_progress_argument, add_window_arguments
from .files import open_output

DEFAULT_RELEVANCE_LEVEL = 1


def register(commands: argparse._SubParsersAction) -> None:
    from ..evaluation import DEFAULT_METRICS
    from ..retrieval import WEIGHT_STORAGES

    parser = commands.add_parser("eval", help="BEIR folder -> metrics table")
    parser.add_argument("dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels file: qrels/<split>.tsv")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="e.g. ndcg@10 mrr@10 map")
    parser.add_argument("-k", "--top-k", type=int, default=100, help="documents retrieved per query")
    parser.add_argument("--relevance-level", type=int, default=None,
                        help="lowest qrels grade that MRR, recall and MAP count as relevant (default: "
                             f"{DEFAULT_RELEVANCE_LEVEL}). Graded qrels such as TREC DL 2019/2020 (grades 0-3) "
                             "need 2; left at the default on graded qrels, eval warns")
    parser.add_argument("--weights", choices=WEIGHT_STORAGES, default="float32", help="index weight storage")
    parser.add_argument("--index", default=None,
                        help="index folder: reused if it exists (then no time to index is reported), else "
                             "written there (default: none, index in memory)")
    parser.add_argument("--output", default=None, metavar="JSON",
                        help="also write the row as JSON, with the dataset, split, k and relevance level "
                             "(default: none)")
    parser.add_argument("--run", default=None, metavar="RUN",
                        help="also write the ranking as a TREC run file, qid Q0 docid rank score tag (default: "
                             "none)")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per encoder call")
    add_progress_argument(parser)
    add_encoder_arguments(parser)
    add_window_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_beir, load_beir, markdown_table, max_relevance, parse_metric
    from ..retrieval import SparseIndex
    from .encoders import encoders_from_args, index_corpus

    dataset = load_beir(args.dataset, args.split)
    for metric in args.metrics:
        parse_metric(metric)
    level = DEFAULT_RELEVANCE_LEVEL if args.relevance_level is None else args.relevance_level
    top_grade = max_relevance(dataset.qrels)
    if args.relevance_level is None and top_grade > 1:
        qrels = Path(args.dataset) / "qrels" / f"{args.split}.tsv"
        print(f"warning: {qrels} has graded relevance (grades up to {top_grade}); MRR, recall and MAP count "
              f"grade >= {level} as relevant. TREC DL-style qrels need --relevance-level 2", file=sys.stderr)
    index_path = Path(args.index) if args.index else None
    seconds: float | None = None
    if index_path is not None and index_path.exists():
        index = SparseIndex.load(index_path)
        _, queries = encoders_from_args(args, index.metadata)
    else:
        index, queries, seconds = index_corpus(args, dataset.corpus, key="_id", on=("title", "text"))
        if index_path is not None:
            index.save(index_path)
    scores, results = evaluate_beir(dataset, index, queries, metrics=args.metrics, k=args.top_k,
                                    relevance_level=level)
    row = {**system(args, index, queries), **scores, "index s": None if seconds is None else round(seconds, 3),
           "index docs/s": None if seconds is None else round(len(index) / max(seconds, 1e-9))}
    print(markdown_table({Path(args.dataset).name: row}))
    if args.run:
        with open_output(args.run) as sink:
            sink.writelines(line + "\n" for line in results.to_trec(dataset.judged_queries()[0]))
    if args.output:
        record = {"dataset": str(args.dataset), "split": args.split, "top_k": args.top_k,
                  "relevance_level": level, **row}
        with open_output(args.output) as sink:
            json.dump(record, sink, indent=2, allow_nan=False)
            sink.write("\n")
    return 0


def system(args: argparse.Namespace, index: Any, queries: Any) -> dict[str, Any]:
    """What was measured: the index's encoder kind, model and precision (None for BM25) from its metadata,
    how it stores weights, and the query model and precision when they differ from the index's (a reused
    index searched with another --model or --precision)."""
    from ..expander import Expander
    from .encoders import encoder_metadata

    meta = index.metadata
    encoder = meta.get("encoder")  # None: an index saved from Python without encoder metadata
    if encoder and meta.get("idf_queries"):
        encoder += " + idf queries"
    row = {"encoder": encoder, "model": meta.get("model"), "precision": meta.get("precision"),
           "weights": index.precision}
    if meta.get("long_documents") == "windows":  # documents read whole, as windows (--windows)
        row["documents"] = f"windows, stride {meta['window_stride']}, norm {meta.get('window_norm', 0.0)}"
    if isinstance(queries, Expander):
        used = encoder_metadata(args, queries)
        if (used["model"], used["precision"]) != (row["model"], row["precision"]):
            row.update({"query model": used["model"], "query precision": used["precision"]})
    return row
