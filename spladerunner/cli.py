"""Command line: `spladerunner expand` (texts -> JSONL sparse vectors), plus retrieval commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import TextIO

from .loading import DEFAULT_MODEL

CHUNK = 256  # texts per expand call: bounds memory and paces the progress line


@contextmanager
def open_text(path: str, mode: str) -> Iterator[TextIO]:
    """`-` is stdin/stdout; anything else a UTF-8 file."""
    if path == "-":
        yield sys.stdin if "r" in mode else sys.stdout
        return
    with open(path, mode, encoding="utf-8") as handle:
        yield handle


def read_records(lines: TextIO, fmt: str, id_field: str, text_fields: list[str]) -> Iterator[tuple[object, str]]:
    """(id, text) pairs from plain lines (id = 0-based line number) or JSONL objects."""
    for number, line in enumerate(lines):
        line = line.rstrip("\r\n")
        if fmt == "lines":
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"error: line {number + 1} is not valid JSON ({exc.msg}); use --format lines "
                             "for plain text") from None
        if not isinstance(record, dict):
            raise SystemExit(f"error: line {number + 1}: expected a JSON object")
        missing = [f for f in text_fields if f not in record]
        if missing:
            raise SystemExit(f"error: line {number + 1}: no field {missing[0]!r} (set --text-field)")
        texts = [record[f] for f in text_fields]
        if not all(isinstance(t, str) for t in texts):
            raise SystemExit(f"error: line {number + 1}: text fields must be strings")
        yield record.get(id_field, record.get("_id", number)), " ".join(t for t in texts if t)


def detect_format(path: str) -> str:
    """JSONL when the first non-empty line of a file looks like a JSON object, else plain lines."""
    if path == "-":
        return "lines"
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "lines"
    return "lines"


def count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def cmd_expand(args: argparse.Namespace) -> int:
    from .expander import Expander
    from .progress import Progress

    expander = Expander(args.model, precision=args.precision, providers=args.providers, threads=args.threads,
                        revision=args.revision, query_max_length=args.max_length,
                        document_max_length=args.max_length)
    fmt = detect_format(args.input) if args.format == "auto" else args.format
    total = count_lines(args.input)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and (total or 0) >= CHUNK)
    progress = Progress(total, "expanded", enabled=show)
    truncated = 0
    with open_text(args.input, "r") as source, open_text(args.output, "w") as sink:
        records = read_records(source, fmt, args.id_field, args.text_field)
        while chunk := list(islice(records, CHUNK)):
            ids, texts = zip(*chunk)
            batch = expander.expand_batch(list(texts), query=args.query, top_k=args.top_k,
                                          threshold=args.threshold)
            truncated += int(batch.truncated.sum())
            for record_id, vector in zip(ids, batch):
                weights = vector.to_dict() if args.keys == "tokens" else vector.to_id_dict()
                sink.write(json.dumps({"id": record_id, "vector": weights, "truncated": vector.truncated},
                                      ensure_ascii=False) + "\n")
            progress.update(len(chunk))
    progress.close()
    if truncated:
        print(f"note: {truncated} text(s) were cut at the max length", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spladerunner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    expand = commands.add_parser("expand", help="expand texts into sparse vectors (JSONL out)")
    expand.add_argument("input", nargs="?", default="-", help="text file: one text per line, or JSONL (- = stdin)")
    expand.add_argument("-o", "--output", default="-", help="JSONL output file (- = stdout)")
    expand.add_argument("--model", default=DEFAULT_MODEL, help="model folder or hub id")
    expand.add_argument("--query", action="store_true", help="encode as queries (query encoder and max length)")
    expand.add_argument("--top-k", type=int, default=None, help="keep the K heaviest terms per text")
    expand.add_argument("--threshold", type=float, default=0.0, help="keep weights above this")
    expand.add_argument("--keys", choices=["tokens", "ids"], default="tokens", help="token strings or ids")
    expand.add_argument("--format", choices=["auto", "lines", "jsonl"], default="auto")
    expand.add_argument("--id-field", default="id", help="JSONL id field (falls back to _id, then line number)")
    expand.add_argument("--text-field", action="append", default=None,
                        help="JSONL text field; repeat to join several (default: text)")
    expand.add_argument("--precision", choices=["fp32", "int8", "fp16"], default=None)
    expand.add_argument("--providers", nargs="+", default=None, help="e.g. cuda, or CPUExecutionProvider")
    expand.add_argument("--threads", type=int, default=None)
    expand.add_argument("--max-length", type=int, default=None, help="override the model's max length")
    expand.add_argument("--revision", default=None, help="hub revision")
    expand.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress line on stderr (default: when stderr is a terminal)")
    expand.set_defaults(func=cmd_expand)

    # The retrieval commands keep their arguments beside their code; importing them is cheap.
    from . import evaluation, retrieval

    index = commands.add_parser("index", help="corpus JSONL -> index folder")
    retrieval.add_index_arguments(index)
    index.set_defaults(func=retrieval.run_index)
    search = commands.add_parser("search", help="search an index folder")
    retrieval.add_search_arguments(search)
    search.set_defaults(func=retrieval.run_search)
    evaluate = commands.add_parser("eval", help="BEIR folder -> metrics table")
    evaluation.add_eval_arguments(evaluate)
    evaluate.set_defaults(func=evaluation.run_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "text_field", "unset") is None:
        args.text_field = ["text"]
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
