"""`spladerunner expand`: texts (plain lines or JSONL) -> one JSON object of token weights per text."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import islice
from typing import TextIO

from ..loading import DEFAULT_MODEL
from ..manifest import PRECISIONS
from ..readers import Format, parse_json_object, record_id, record_text
from .encoders import add_progress_argument, add_window_arguments, window_options
from .expand_ray import add_ray_arguments, run_ray
from .files import count_lines, open_input, open_output

CHUNK = 256  # texts per expand call: bounds memory and paces the progress line


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("expand", help="expand texts into sparse vectors (JSONL out)")
    parser.add_argument("input", nargs="?", default="-", help="text file: one text per line, or JSONL "
                        "(default: -, stdin)")
    parser.add_argument("-o", "--output", default="-",
                        help="JSONL output file, written whole or not at all (default: -, stdout)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model folder or hub id")
    parser.add_argument("--query", action="store_true", help="encode as queries (query encoder and max length)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="keep the K heaviest terms per text (default: keep every term)")
    parser.add_argument("--threshold", type=float, default=0.0, help="keep weights above this")
    parser.add_argument("--keys", choices=["tokens", "ids"], default="tokens", help="token strings or ids")
    parser.add_argument("--format", choices=["auto", "lines", "jsonl"], default="auto",
                        help="input format; auto: JSONL if a file's first line is a JSON object, stdin is lines")
    parser.add_argument("--id-field", default="id", help="JSONL id field (falls back to _id, then line number)")
    parser.add_argument("--text-field", action="append", default=None,
                        help="JSONL text field; repeat to join several (default: text)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="model precision (default: the fastest that passed the export gate: int8, else "
                             "fp32, on CPU; fp16, else fp32, on CUDA)")
    parser.add_argument("--providers", nargs="+", default=None,
                        help="onnxruntime providers, e.g. cuda, or CPUExecutionProvider (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: the CPUs this process may use)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="max tokens per text, specials included (default: the model's max length, for "
                             "queries or documents)")
    parser.add_argument("--revision", default=None, help="hub revision (default: main)")
    add_window_arguments(parser)
    add_progress_argument(parser)
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


def records(lines: TextIO, name: str, fmt: Format, id_field: str,
            text_fields: list[str]) -> Iterator[tuple[str | int, str]]:
    """(id, text) pairs from plain lines (id = 0-based line number) or JSONL objects; errors name `name`:line."""
    for number, line in enumerate(lines):
        line = line.rstrip("\r\n")
        if fmt == "lines":
            yield number, line
            continue
        if not line.strip():
            continue
        where = f"{name}:{number + 1}"
        record = parse_json_object(line, where)
        yield record_id(record, [id_field, "_id"], number, where), record_text(record, text_fields, where)


def run(args: argparse.Namespace) -> int:
    if args.ray:
        return run_ray(args)
    from ..expander import Expander
    from ..progress import Progress
    from ..readers import detect_format

    expander = Expander(args.model, precision=args.precision, providers=args.providers, threads=args.threads,
                        revision=args.revision, query_max_length=args.max_length,
                        document_max_length=args.max_length, **window_options(args))
    stdin = args.input == "-"
    fmt = args.format if args.format != "auto" else "lines" if stdin else detect_format(args.input)
    total = count_lines(args.input)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and (total or 0) >= CHUNK)
    progress = Progress(total, "expanded", enabled=show)
    truncated = 0
    name = "<stdin>" if args.input == "-" else args.input
    with open_input(args.input) as source, open_output(args.output) as sink:
        pairs = records(source, name, fmt, args.id_field, args.text_field or ["text"])
        while chunk := list(islice(pairs, CHUNK)):
            ids, texts = zip(*chunk)
            batch = expander.expand_batch(list(texts), query=args.query, top_k=args.top_k,
                                          threshold=args.threshold)
            truncated += int(batch.truncated.sum())
            for text_id, vector in zip(ids, batch):
                weights = vector.to_dict() if args.keys == "tokens" else vector.to_id_dict()
                line = {"id": text_id, "vector": weights, "truncated": vector.truncated}
                if args.windows:
                    line["windows"] = vector.windows
                sink.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            progress.update(len(chunk))
    progress.close()
    if truncated:
        print(f"note: {truncated} text(s) were cut at the max length", file=sys.stderr)
    return 0
