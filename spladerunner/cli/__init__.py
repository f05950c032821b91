"""Command line: `spladerunner expand` (texts -> JSONL sparse vectors), `index`, `search`, `eval`, `lambda-package`.

One module per command; each registers its arguments and its function with `build_parser`. Heavy
modules (onnxruntime, tokenizers) load only when a command runs. Our own errors and `OSError` are
reported as one `error: ...` line (exit 1); anything else is a bug and shows its traceback. A reader
that closes stdout early (`spladerunner ... | head`) ends the command quietly with exit code 141, the
128 + SIGPIPE a shell reports for other tools cut off that way.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from ..errors import SpladerunnerError
from . import evaluate, expand, index, lambda_package, search

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what `set -o pipefail` shells report for `cat big | head`


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, lists written as typed on the command line.

    A help text that states its default itself ("(default: the model's max length)") is kept as it is:
    that is how a None default says what None means. Flags (off unless given) get nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or (action.nargs == 0 and not action.default):
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help  # a required positional has no default
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spladerunner", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelpFormatter)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        parser_class=functools.partial(argparse.ArgumentParser, formatter_class=DefaultsHelpFormatter))
    for command in (expand, index, search, evaluate, lambda_package):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except (SpladerunnerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at the null device: the interpreter's last flush of the unwritten rest would otherwise
    fail again on the closed pipe and print "Exception ignored ... BrokenPipeError" (Python's documented
    recipe, see the `signal` module's notes on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
