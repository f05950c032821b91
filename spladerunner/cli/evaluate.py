"""`spladerunner eval DATASET`: index a BEIR corpus (or reuse --index), search, print a metrics table."""

from __future__ import annotations

import argparse
from pathlib import Path

from .encoders import add_encoder_arguments, add_progress_argument, add_window_arguments


def register(commands: argparse._SubParsersAction) -> None:
    from ..evaluation import DEFAULT_METRICS
    from ..retrieval import WEIGHT_STORAGES

    parser = commands.add_parser("eval", help="BEIR folder -> metrics table")
    parser.add_argument("dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="e.g. ndcg@10 mrr@10 map")
    parser.add_argument("-k", "--top-k", type=int, default=100, help="documents retrieved per query")
    parser.add_argument("--relevance-level", type=int, default=1,
                        help="lowest qrels grade counted relevant by MRR, recall and MAP (TREC DL uses 2)")
    parser.add_argument("--weights", choices=WEIGHT_STORAGES, default="float32", help="index weight storage")
    parser.add_argument("--index", default=None, help="index folder: reused if it exists, else written there")
    parser.add_argument("--batch-size", type=int, default=256)
    add_progress_argument(parser)
    add_encoder_arguments(parser)
    add_window_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_beir, load_beir, markdown_table, parse_metric
    from ..retrieval import SparseIndex
    from .encoders import encoders_from_args, index_corpus

    dataset = load_beir(args.dataset, args.split)
    for metric in args.metrics:
        parse_metric(metric)
    index_path = Path(args.index) if args.index else None
    if index_path is not None and index_path.exists():
        index = SparseIndex.load(index_path)
        _, queries = encoders_from_args(args, index.metadata)
    else:
        index, queries = index_corpus(args, dataset.corpus, key="_id", on=("title", "text"))
        if index_path is not None:
            index.save(index_path)
    row = evaluate_beir(dataset, index, queries, metrics=args.metrics, k=args.top_k,
                        relevance_level=args.relevance_level)
    print(markdown_table({Path(args.dataset).name: row}))
    return 0
