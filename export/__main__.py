"""`python -m export`: the `spladerunner-export` command."""

import sys

from export.cli import main

sys.exit(main())
