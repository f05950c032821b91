"""spladerunner: learned-sparse retrieval (SPLADE) on onnxruntime, without torch.

`import spladerunner` loads nothing heavy: numpy, tokenizers and onnxruntime are imported when a
name below is first used, which keeps serverless cold starts short.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "Expander": "expander",
    "SparseVector": "sparse",
    "SparseBatch": "sparse",
    "SparsEmbedEncoder": "sparsembed",
    "SparsEmbedBatch": "sparsembed",
    "SparsEmbedVector": "sparsembed",
    "SparsEmbedIndex": "sparsembed_index",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "GraphError": "session",
    "ProviderError": "session",
    "ModelNotFoundError": "loading",
    "DEFAULT_MODEL": "loading",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .expander import Expander
    from .loading import DEFAULT_MODEL, ModelNotFoundError
    from .manifest import Manifest, ManifestError
    from .session import GraphError, ProviderError
    from .sparse import SparseBatch, SparseVector
    from .sparsembed import SparsEmbedBatch, SparsEmbedEncoder, SparsEmbedVector
    from .sparsembed_index import SparsEmbedIndex


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spladerunner' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
