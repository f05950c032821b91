"""`spladerunner-export`: the export toolkit's command, installed with the runtime.

The toolkit is its own distribution (`spladerunner-export`, brought in by the `export` extra), so a
runtime install carries none of it; this entry point hands over to the toolkit when it is there, and
otherwise says how to install it instead of failing on an import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

INSTALL_HINT = 'pip install "spladerunner[export]"'


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # The one place the runtime names the toolkit: only to hand the command over (tests/test_layers.py).
        from spladerunner_export.cli import main as export_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "spladerunner_export":
            raise
        print("spladerunner-export needs the export toolkit (torch, transformers, optimum, onnx), which this "
              f"install does not have. Install it with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
