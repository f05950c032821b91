"""`python -m spladerunner_export`: the `spladerunner-export` command."""

import sys

from spladerunner_export.cli import main

sys.exit(main())
