"""`spladerunner expand --ray`: a corpus file -> Parquet shards in a folder, expanded by a Ray actor pool.

Resumable: a re-run skips the shards already complete (`spladerunner.ray_data.expand_corpus`).
"""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import InputError
from ..progress import Progress
from .encoders import window_options
from .files import count_lines


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (pip install 'spladerunner[ray]')")
    group.add_argument("--ray", action="store_true",
                       help="expand on a Ray cluster into Parquet shards in the -o folder; a re-run resumes")
    group.add_argument("--address", default=None,
                       help="Ray cluster to join, e.g. auto or ray://head:10001 (default: RAY_ADDRESS, else a "
                            "local cluster)")
    group.add_argument("--actors", type=int, default=1, help="actors in the pool, one model each")
    group.add_argument("--gpus-per-actor", type=float, default=0,
                       help="GPUs per actor; > 0 runs the actors on CUDA (fp16 when the model has it)")
    group.add_argument("--shard-size", type=int, default=10_000, help="input lines per Parquet shard")
    group.add_argument("--batch-size", type=int, default=256, help="records per actor call")


def run_ray(args: argparse.Namespace) -> int:
    """--threads are each actor's intra-op threads (default 1); --keys tokens adds a tokens column."""
    if args.input == "-" or args.output == "-":
        raise InputError("--ray reads a corpus file and writes a folder of Parquet shards: pass FILE -o FOLDER")
    check = {"--actors": args.actors, "--shard-size": args.shard_size, "--batch-size": args.batch_size}
    for name, value in check.items():
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    from ..ray_data import connect, expand_corpus

    connect(args.address)
    total = math.ceil((count_lines(args.input) or 0) / args.shard_size)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(total, "shards", enabled=show)
    run = expand_corpus(
        args.input, args.output, args.model, shard_size=args.shard_size,
        fmt=None if args.format == "auto" else args.format, id_field=args.id_field,
        text_fields=args.text_field or ["text"], query=args.query, top_k=args.top_k, threshold=args.threshold,
        tokens=args.keys == "tokens", actors=args.actors, threads_per_actor=args.threads or 1,
        gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size, on_shard=lambda *_: progress.update(1),
        precision=args.precision, providers=args.providers, revision=args.revision,
        query_max_length=args.max_length, document_max_length=args.max_length, **window_options(args))
    progress.close()
    print(f"{run.records} records in {run.shards} shards ({len(run.computed)} expanded now, {len(run.skipped)} "
          f"already complete) in {args.output}", file=sys.stderr)
    if run.failed:
        shown = "; ".join(f"{record_id}: {error}" for record_id, error in run.failed[:10])
        more = f" (and {len(run.failed) - 10} more)" if len(run.failed) > 10 else ""
        print(f"error: {len(run.failed)} record(s) failed, their rows hold the error in column 'error': "
              f"{shown}{more}", file=sys.stderr)
        return 1
    return 0
