"""The toolkit's own errors: `spladerunner.errors.SpladerunnerError` subclasses that keep `ValueError`.

`spladerunner-export` reports these (and `OSError`) as one-line messages; anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

from spladerunner.errors import SpladerunnerError


class ExportError(SpladerunnerError, ValueError):
    """A checkpoint, graph or option the toolkit cannot export; the message says which and why."""


class GraphRewriteError(ExportError):
    """A graph is not a masked-LM logits graph the toolkit can rewrite; the message says why."""
