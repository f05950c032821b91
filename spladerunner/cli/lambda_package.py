"""`spladerunner lambda-package`: an AWS Lambda zip with the runtime, a model and the handler entry."""

from __future__ import annotations

import argparse
import sys

from ..lambda_package import ARCHES, DIRECT_UPLOAD_LIMIT, PYTHONS, UNZIPPED_LIMIT, megabytes
from ..manifest import PRECISIONS


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("lambda-package", help="build an AWS Lambda deployment zip (README: Serverless)")
    parser.add_argument("--model", default="splade-tiny",
                        help="built-in name, model folder, or a converted Hub model in the HF cache "
                             "(default: the built-in splade-tiny)")
    parser.add_argument("--python", default="3.12", help=f"the function's Python runtime: {', '.join(PYTHONS)}")
    parser.add_argument("--arch", choices=list(ARCHES), default="x86_64", help="the function's architecture")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the one precision shipped (default: the one the Expander picks on CPU)")
    parser.add_argument("--compile-with", default=None, metavar="PYTHON",
                        help="a Python of the function's version to precompile bytecode with (default: this one "
                             "or python3.X on PATH, if that version)")
    parser.add_argument("--image", action="store_true",
                        help="for a container image (deploy/lambda/Dockerfile): no zip size limits")
    parser.add_argument("-o", "--output", required=True, help="the zip to write (whole or not at all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..lambda_package import build_package

    report = build_package(args.model, args.output, python=args.python, arch=args.arch, precision=args.precision,
                           compile_with=args.compile_with, image=args.image,
                           log=lambda line: print(line, file=sys.stderr))
    print(f"{report.output}: {megabytes(report.unzipped)} unzipped (Lambda's limit {megabytes(UNZIPPED_LIMIT)}), "
          f"{megabytes(report.zipped)} zipped (direct upload up to {megabytes(DIRECT_UPLOAD_LIMIT)})")
    print(f"model {report.model} ({report.precision}), Python {report.python} on {report.arch}, "
          + ", ".join(f"{name} {version}" for name, version in report.versions.items()))
    print("largest parts (unzipped): " + ", ".join(f"{name} {megabytes(size)}" for name, size in report.parts[:6]))
    print(f"handler: {report.handler}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
