"""Command line: `spladerunner expand` (texts -> JSONL sparse vectors), `index`, `search`, `eval`, `lambda-package`.

One module per command; each registers its arguments and its function with `build_parser`. Heavy
modules (onnxruntime, tokenizers) load only when a command runs. Our own errors and `OSError` are
reported as one `error: ...` line (exit 1); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import SpladerunnerError
from . import evaluate, expand, index, lambda_package, search


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spladerunner", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (expand, index, search, evaluate, lambda_package):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpladerunnerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
