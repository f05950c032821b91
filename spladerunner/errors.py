"""Every error spladerunner raises on purpose derives from `SpladerunnerError`.

Each also keeps the builtin base a caller would catch without knowing us (`ValueError` for bad
content, `FileNotFoundError` for a missing model, `RuntimeError` for a provider that is not active),
so `except ValueError` and `except SpladerunnerError` both work. Messages name the file, field,
argument or text position at fault.
"""

from __future__ import annotations


class SpladerunnerError(Exception):
    """Base class of spladerunner's own errors: the CLI reports these (and `OSError`) without a traceback."""


class ManifestError(SpladerunnerError, ValueError):
    """A model folder's manifest is missing, unreadable or inconsistent; names the file and the field."""


class GraphError(SpladerunnerError, ValueError):
    """An ONNX graph is unreadable, was swapped, or does not match what its manifest says."""


class GraphLayoutError(GraphError):
    """A graph loaded but its inputs or outputs are not what its manifest (or a foreign layout) says."""


class ProviderError(SpladerunnerError, RuntimeError):
    """A requested execution provider is not active in the session."""


class ModelNotFoundError(SpladerunnerError, FileNotFoundError):
    """The model (folder, hub id or one of its files) could not be found."""


class HubUnreachableError(ModelNotFoundError):
    """A hub model is not (fully) in the Hugging Face cache and the hub could not be reached to fetch it."""


class NotOnHubError(ModelNotFoundError):
    """The hub answered: no such repository, revision or file (or it is private or gated)."""


class NotCachedOfflineError(ModelNotFoundError):
    """`HF_HUB_OFFLINE` is set and the hub model (or one of its files) is not in the Hugging Face cache."""


class UpgradeError(SpladerunnerError, RuntimeError):
    """`upgrade=True` was asked for and the conversion of a logits graph could not run or wrote no folder."""


class IndexFormatError(SpladerunnerError, ValueError):
    """An index folder is incomplete, corrupt or from an unknown format version; names the file."""


class InputError(SpladerunnerError, ValueError):
    """An argument or input record is invalid; names the argument, the text position or the file and line."""


class InputTypeError(InputError, TypeError):
    """An argument or text of the wrong type: an `InputError` that `except TypeError` also catches."""
