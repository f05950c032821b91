"""Code written for SPLADERunner 0.1.6 (PrithiviDa's package, which owns the name `spladerunner` on the
package index) runs unchanged on this one: its model names, keywords and list-of-dicts outputs.

0.1.6 wrote `Expander(model_name="Splade_PP_en_v1", max_length=64, cache_dir="/tmp")` (or positionally
`Expander('Splade_PP_en_v1', 128)`) and `expand(text_or_list, outformat="hybrid"|"lucene")`, which always
returns a list: "hybrid" (the default) `{"indices": [...], "values": [...]}` per text, ids ascending and
weights as Python floats; "lucene" `{token: round(weight, 2)}` heaviest first. An Expander built with
those arguments keeps that shape, with a `DeprecationWarning` naming the new API. Its `max_length` is
ignored: 0.1.6 cut every text, documents included, at 64 tokens by default, which loses most of a
document; here documents use the model's document max length.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError
from .sparse import SparseBatch

# 0.1.6 model name -> hub id. 0.1.6 knew one model (its MODEL_FILE_MAP): SPLADE++ prithivida/Splade_PP_en_v1,
# which it downloaded as a zip; the same model's ONNX export is Qdrant's.
MODELS = {"Splade_PP_en_v1": "Qdrant/Splade_PP_en_v1"}
OUTFORMATS = ("hybrid", "lucene")
NEW_API = "see the README section 'Coming from SPLADERunner 0.1.6'"


def resolve(model: str | Path, *, model_name: str | None, max_length: int | None,
            default: str | Path) -> tuple[str | Path, bool]:
    """The model to open, and whether the call was 0.1.6's (then `expand` keeps 0.1.6's output shape).

    0.1.6 calls: `model_name=`, a `max_length`, or one of its model names. Warns once per call site.
    """
    if model_name is not None:
        if model != default:
            raise InputError(f"pass model={model!r} or model_name={model_name!r} (SPLADERunner 0.1.6), not both")
        model = model_name
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
        raise InputError(f"max_length must be an int (SPLADERunner 0.1.6's max_length), got {max_length!r}")
    name = str(model)
    legacy = model_name is not None or max_length is not None or name in MODELS
    if not legacy:
        return model, False
    changes = []
    if name in MODELS:
        changes.append(f"model {name!r} runs as {MODELS[name]!r}")
    if max_length is not None:
        changes.append(f"max_length={max_length} is ignored (documents are expanded up to the model's document "
                       "max length; cut with query_max_length=/document_max_length=)")
    changes.append("expand() returns 0.1.6's list of dicts (outformat='hybrid' or 'lucene')")
    warnings.warn(f"SPLADERunner 0.1.6 arguments: {'; '.join(changes)}. New API: "
                  f"Expander({MODELS.get(name, name)!r}).expand(texts) gives SparseVector objects "
                  f"(.ids, .weights, .to_dict()); {NEW_API}", DeprecationWarning, stacklevel=3)
    return MODELS.get(name, model), True


def formatter(outformat: str | None) -> Callable[[SparseBatch], list[dict[Any, Any]]]:
    """The 0.1.6 shaping of an expansion: "hybrid" (also when None) or "lucene". Warns once per call site."""
    outformat = "hybrid" if outformat is None else outformat
    if outformat not in OUTFORMATS:
        raise InputError(f"outformat must be one of {', '.join(map(repr, OUTFORMATS))} (SPLADERunner 0.1.6), "
                         f"got {outformat!r}")
    warnings.warn(f"expand(outformat={outformat!r}) is SPLADERunner 0.1.6's output shape; the new API's "
                  f"expand(texts) gives SparseVector objects: vector.ids/vector.weights for 'hybrid', "
                  f"vector.to_dict() for 'lucene'; {NEW_API}", DeprecationWarning, stacklevel=3)
    return lucene if outformat == "lucene" else hybrid


def hybrid(batch: SparseBatch) -> list[dict[str, list]]:
    """Per text `{"indices": ids ascending (int), "values": weights (float)}`, as 0.1.6 gave them."""
    return [{"indices": vector.ids.tolist(), "values": vector.weights.tolist()} for vector in batch]


def lucene(batch: SparseBatch) -> list[dict[str, float]]:
    """Per text `{token: weight rounded to 2 decimals}`, heaviest first (ties in id order), as 0.1.6 gave them."""
    return [{token: round(weight, 2) for token, weight in vector.to_dict().items()} for vector in batch]
