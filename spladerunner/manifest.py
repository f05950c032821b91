"""The model-folder manifest (`spladerunner.json`): what the export toolkit promises the runtime.

A model folder holds `spladerunner.json`, `tokenizer.json` and one ONNX graph per encoder and precision.
Single-encoder models point the query and document encoders at the same files; efficient-SPLADE
models give each its own graph. Graph outputs come in three layouts (`GraphOutput`):

- "pooled": output `sparse_weights` [batch, vocab] float32, SPLADE pooling fused in the graph.
- "topk":   outputs `top_ids` [batch, K] int64 and `top_weights` [batch, K] float32, sorted by weight.
- "logits": one output [batch, length, vocab] (foreign graphs: fastembed/Qdrant, optimum, sentence-transformers);
            the runtime pools it.
- "sparsembed": outputs `top_ids`, `top_weights` and `top_embeddings` [batch, K, dim].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ManifestError

MANIFEST_NAME = "spladerunner.json"
FORMAT_VERSION = 1

Mode = Literal["query", "document"]
MODES: tuple[Mode, ...] = ("query", "document")
PRECISIONS = ("fp32", "int8", "fp16")
GRAPH_OUTPUTS = ("pooled", "topk", "logits", "sparsembed")
POOLINGS = ("max", "sum")
KINDS = ("splade", "sparsembed")
# Max lengths (tokens) an export records when not told otherwise.
DEFAULT_MAX_LENGTH: dict[str, int] = {"query": 64, "document": 256}

# Output tensor names of fused graphs; the runtime checks the graph against them.
POOLED_OUTPUT = "sparse_weights"
TOPK_IDS_OUTPUT = "top_ids"
TOPK_WEIGHTS_OUTPUT = "top_weights"
TOPK_EMBEDDINGS_OUTPUT = "top_embeddings"


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX file: where it is (relative to the folder) and what it outputs."""

    path: str
    output: str = "pooled"
    top_k: int | None = None
    sha256: str | None = None


@dataclass
class Manifest:
    """Parsed `spladerunner.json`. `encoders[mode][precision]` names the graph to run."""

    kind: str
    vocab_size: int
    special_token_ids: list[int]
    max_length: dict[str, int]
    encoders: dict[str, dict[str, GraphEntry]]
    pooling: str = "max"
    activation: str = "log1p_relu"
    tokenizer: str = "tokenizer.json"
    format_version: int = FORMAT_VERSION
    # Model-family extras (SparsEmbed: k per mode, embedding dim, softmax axis), provenance and parity.
    extra: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)

    def precisions(self, mode: Mode) -> list[str]:
        return [p for p in PRECISIONS if p in self.encoders[mode]]

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path | str = MANIFEST_NAME) -> Manifest:
        def fail(problem: str) -> ManifestError:
            return ManifestError(f"{path}: {problem}")

        if not isinstance(data, dict):
            raise fail("top level must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise fail(f"format_version {version!r} is not supported (this runtime reads {FORMAT_VERSION})")
        for key in ("kind", "vocab_size", "special_token_ids", "max_length", "encoders"):
            if key not in data:
                raise fail(f"missing field {key!r}")
        if data["kind"] not in KINDS:
            raise fail(f"kind {data['kind']!r} is not one of {KINDS}")
        if not isinstance(data["vocab_size"], int) or data["vocab_size"] <= 0:
            raise fail(f"vocab_size must be a positive integer, got {data['vocab_size']!r}")
        if data.get("pooling", "max") not in POOLINGS:
            raise fail(f"pooling {data['pooling']!r} is not one of {POOLINGS}")
        specials = data["special_token_ids"]
        if not isinstance(specials, list) or not all(isinstance(i, int) for i in specials):
            raise fail("special_token_ids must be a list of integers")
        max_length = data["max_length"]
        for mode in MODES:
            value = max_length.get(mode) if isinstance(max_length, dict) else None
            if not isinstance(value, int) or value < 2:
                raise fail(f"max_length.{mode} must be an integer >= 2, got {value!r}")
        encoders: dict[str, dict[str, GraphEntry]] = {}
        raw_encoders = data["encoders"]
        for mode in MODES:
            graphs = raw_encoders.get(mode) if isinstance(raw_encoders, dict) else None
            if not isinstance(graphs, dict) or not graphs:
                raise fail(f"encoders.{mode} must map a precision to a graph")
            encoders[mode] = {}
            for precision, entry in graphs.items():
                if precision not in PRECISIONS:
                    raise fail(f"encoders.{mode}: unknown precision {precision!r} (expected {PRECISIONS})")
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                    raise fail(f"encoders.{mode}.{precision} must be an object with a 'path'")
                unknown = set(entry) - {"path", "output", "top_k", "sha256"}
                if unknown:
                    raise fail(f"encoders.{mode}.{precision}: unknown fields {sorted(unknown)}")
                graph = GraphEntry(**entry)
                if graph.output not in GRAPH_OUTPUTS:
                    raise fail(f"encoders.{mode}.{precision}.output {graph.output!r} not in {GRAPH_OUTPUTS}")
                encoders[mode][precision] = graph
        known = {f for f in cls.__dataclass_fields__}
        return cls(
            kind=data["kind"],
            vocab_size=data["vocab_size"],
            special_token_ids=sorted(set(specials)),
            max_length={mode: max_length[mode] for mode in MODES},
            encoders=encoders,
            **{k: v for k, v in data.items() if k in known and k not in {
                "kind", "vocab_size", "special_token_ids", "max_length", "encoders"}},
        )
