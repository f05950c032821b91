"""spladerunner: learned-sparse retrieval (SPLADE) on onnxruntime, without torch.

`import spladerunner` loads nothing heavy: numpy, tokenizers and onnxruntime are imported when a
name below is first used, which keeps serverless cold starts short.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# Public name -> module that defines it.
_EXPORTS = {
    "Expander": "expander",
    "SparseVector": "sparse",
    "SparseBatch": "sparse",
    "SparsEmbedEncoder": "sparsembed",
    "SparsEmbedBatch": "sparsembed",
    "SparsEmbedVector": "sparsembed",
    "SparsEmbedIndex": "sparsembed_index",
    "SparseIndex": "retrieval",
    "SearchResults": "results",
    "BM25Encoder": "bm25",
    "IdfQueryEncoder": "idf_queries",
    "Manifest": "manifest",
    "DEFAULT_MODEL": "loading",
    "SpladerunnerError": "errors",
    "ManifestError": "errors",
    "GraphError": "errors",
    "ProviderError": "errors",
    "ModelNotFoundError": "errors",
    "HubUnreachableError": "errors",
    "NotOnHubError": "errors",
    "NotCachedOfflineError": "errors",
    "UpgradeError": "errors",
    "IndexFormatError": "errors",
    "InputError": "errors",
    "InputTypeError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .bm25 import BM25Encoder
    from .errors import (
        GraphError,
        HubUnreachableError,
        IndexFormatError,
        InputError,
        InputTypeError,
        ManifestError,
        ModelNotFoundError,
        NotCachedOfflineError,
        NotOnHubError,
        ProviderError,
        SpladerunnerError,
        UpgradeError,
    )
    from .expander import Expander
    from .idf_queries import IdfQueryEncoder
    from .loading import DEFAULT_MODEL
    from .manifest import Manifest
    from .results import SearchResults
    from .retrieval import SparseIndex
    from .sparse import SparseBatch, SparseVector
    from .sparsembed import SparsEmbedBatch, SparsEmbedEncoder, SparsEmbedVector
    from .sparsembed_index import SparsEmbedIndex


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spladerunner' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
