"""`spladerunner index CORPUS OUTPUT`: encode a JSONL corpus and save the index folder."""

from __future__ import annotations

import argparse
import sys

from .encoders import add_encoder_arguments, add_progress_argument, add_window_arguments, index_corpus


def register(commands: argparse._SubParsersAction) -> None:
    from ..retrieval import WEIGHT_STORAGES

    parser = commands.add_parser("index", help="corpus JSONL -> index folder")
    parser.add_argument("corpus", help="JSONL corpus, one document per line (BEIR corpus.jsonl works)")
    parser.add_argument("output", help="index folder to write")
    parser.add_argument("--id-field", default="_id", help="id field")
    parser.add_argument("--text-field", action="append", default=None,
                        help="text field; repeat to join several (default: title and text, either may be missing)")
    parser.add_argument("--weights", choices=WEIGHT_STORAGES, default="float32", help="weight storage")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per encoder call")
    add_progress_argument(parser)
    add_encoder_arguments(parser)
    add_window_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..readers import read_texts

    ids, texts = read_texts(args.corpus, id_fields=[args.id_field], text_fields=args.text_field or ["title", "text"],
                            fmt="jsonl", require_all=args.text_field is not None, ids_required=True)
    corpus = [{"id": str(i), "text": t} for i, t in zip(ids, texts)]
    index, _, seconds = index_corpus(args, corpus, key="id", on=("text",))
    index.save(args.output)
    print(f"indexed {len(index)} documents into {args.output} in {seconds:.1f} s "
          f"({len(index) / max(seconds, 1e-9):.0f} docs/s)", file=sys.stderr)
    return 0
