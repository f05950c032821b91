"""`spladerunner search INDEX QUERY...`: the top-k documents per query, as TREC run lines or JSONL."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from .encoders import add_encoder_arguments


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="search an index folder")
    parser.add_argument("index", help="index folder written by `spladerunner index`")
    parser.add_argument("queries", nargs="*", help="query texts (default: none; then --queries-file is needed)")
    parser.add_argument("--queries-file", default=None,
                        help="JSONL {_id, text} or plain lines (default: none, the query texts given)")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="documents per query")
    parser.add_argument("--format", choices=["trec", "jsonl"], default="trec",
                        help="TREC run lines (qid Q0 docid rank score tag) or JSONL")
    add_encoder_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..readers import read_texts
    from ..retrieval import SparseIndex
    from .encoders import encoders_from_args

    if args.queries_file:
        query_ids, texts = read_texts(args.queries_file)
    else:
        query_ids, texts = list(range(len(args.queries))), list(args.queries)
    if not texts:
        raise InputError("no queries: give query texts or --queries-file")
    index = SparseIndex.load(args.index)
    _, queries = encoders_from_args(args, index.metadata)
    results = index.search(queries.expand_batch(texts, query=True), k=args.top_k)
    if args.format == "trec":
        for line in results.to_trec(query_ids):
            print(line)
        return 0
    for position, (qid, text) in enumerate(zip(query_ids, texts)):
        hits = results.hits(position)
        print(json.dumps({"qid": str(qid), "text": text, "hits": [{"id": d, "score": s} for d, s in hits]},
                         ensure_ascii=False))
    return 0
