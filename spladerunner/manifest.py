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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
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
ACTIVATIONS = ("log1p_relu",)
# Bounds on a manifest's integers: vocabulary ids are int32 in every sparse vector; no encoder has a
# position table anywhere near a million rows (the graph's own table is checked at load as well).
MAX_VOCAB_SIZE = 2**31 - 1
MAX_MAX_LENGTH = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")

# Output tensor names of fused graphs; the runtime checks the graph against them.
POOLED_OUTPUT = "sparse_weights"
TOPK_IDS_OUTPUT = "top_ids"
TOPK_WEIGHTS_OUTPUT = "top_weights"
TOPK_EMBEDDINGS_OUTPUT = "top_embeddings"


# Figures of a parity result that `Gate.figures` quotes, in this order, when the report has them.
GATE_FIGURES = ("tolerant_overlap_at_10", "overlap_at_10", "score_pearson", "min_cosine", "max_abs_diff")


@dataclass(frozen=True)
class Gate:
    """The export's parity verdict on one precision: its results for the graphs that precision runs."""

    precision: str
    passed: bool
    results: dict[str, dict]  # graph key in the report ("model", "query", "document") -> result

    def figures(self) -> str:
        """The gate's figures, one group per graph: `model: tolerant_overlap_at_10=0.960 ...`."""
        parts = []
        for key, result in self.results.items():
            if result.get("ran") is False:
                parts.append(f"{key}: did not run ({str(result.get('error', ''))[:100]})")
                continue
            values = [f"{name}={result[name]:.4g}" for name in GATE_FIGURES
                      if isinstance(result.get(name), (int, float)) and not isinstance(result.get(name), bool)]
            parts.append(f"{key}: {'passed' if result['passed'] else 'FAILED'} {' '.join(values)}".rstrip())
        return "; ".join(parts)


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX file: where it is (relative to the folder) and what it outputs."""

    path: str
    output: str = "pooled"
    top_k: int | None = None
    sha256: str | None = None


def is_int(value: Any) -> bool:
    """A JSON integer (bool is an int subclass in Python, never a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_relative_path(value: Any) -> str | None:
    """The problem with a file path from a manifest, or None: it must stay inside the model folder."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return "must be a non-empty relative path"
    posix = PurePosixPath(value)
    if posix.is_absolute() or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        return f"{value!r} is an absolute path; paths must stay inside the model folder"
    if ".." in posix.parts or ".." in PureWindowsPath(value).parts:
        return f"{value!r} leaves the model folder"
    return None


@dataclass
class Manifest:
    """Parsed `spladerunner.json`. `encoders[mode][precision]` names the graph to run.

    `vocabulary_sha256` (optional, written by exporters since format 1 gained it): the tokenizer's
    vocabulary hash (`spladerunner.integrity.vocabulary_sha256`); the runtime refuses a tokenizer whose
    vocabulary differs. Older manifests without it still load.
    """

    kind: str
    vocab_size: int
    special_token_ids: list[int]
    max_length: dict[str, int]
    encoders: dict[str, dict[str, GraphEntry]]
    pooling: str = "max"
    activation: str = "log1p_relu"
    tokenizer: str = "tokenizer.json"
    vocabulary_sha256: str | None = None
    format_version: int = FORMAT_VERSION
    # Model-family extras (SparsEmbed: k per mode, embedding dim, softmax axis), provenance and parity.
    extra: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)

    def precisions(self, mode: Mode) -> list[str]:
        return [p for p in PRECISIONS if p in self.encoders[mode]]

    def gate(self, precision: str) -> Gate | None:
        """The parity report's verdict on `precision`: the results whose path is a graph this precision
        runs (for either mode). None when the manifest records none (a folder without a parity report, a
        foreign graph's derived manifest): such a precision was never judged. A result without a boolean
        `passed` is a `ManifestError`."""
        graphs = self.parity.get("graphs")
        if not isinstance(graphs, dict):
            return None
        paths = {self.encoders[mode][precision].path for mode in MODES if precision in self.encoders[mode]}
        results = {}
        for key, report in graphs.items():
            result = report.get(precision) if isinstance(report, dict) else None
            if not isinstance(result, dict) or result.get("path") not in paths:
                continue
            if not isinstance(result.get("passed"), bool):
                raise ManifestError(f"{MANIFEST_NAME}: parity.graphs.{key}.{precision}.passed must be true or false")
            results[str(key)] = result
        if not results:
            return None
        return Gate(precision, all(result["passed"] for result in results.values()), results)

    def to_json(self) -> str:
        data = asdict(self)
        if data["vocabulary_sha256"] is None:
            del data["vocabulary_sha256"]
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
        except RecursionError:
            raise ManifestError(f"{path}: not a usable manifest (JSON nested too deeply)") from None
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or an integer of > 4300 digits
            raise ManifestError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path | str = MANIFEST_NAME) -> Manifest:
        """Check every field's type and range; a `ManifestError` names the file and the field at fault."""
        def fail(problem: str) -> ManifestError:
            return ManifestError(f"{path}: {problem}")

        if not isinstance(data, dict):
            raise fail("top level must be a JSON object")
        version = data.get("format_version")
        if not is_int(version) or version != FORMAT_VERSION:
            raise fail(f"format_version {version!r} is not supported (this runtime reads {FORMAT_VERSION})")
        for key in ("kind", "vocab_size", "special_token_ids", "max_length", "encoders"):
            if key not in data:
                raise fail(f"missing field {key!r}")
        if not isinstance(data["kind"], str) or data["kind"] not in KINDS:
            raise fail(f"kind {data['kind']!r} is not one of {KINDS}")
        vocab_size = data["vocab_size"]
        if not is_int(vocab_size) or not 0 < vocab_size <= MAX_VOCAB_SIZE:
            raise fail(f"vocab_size must be an integer in [1, {MAX_VOCAB_SIZE}], got {_short(vocab_size)}")
        for key, allowed in (("pooling", POOLINGS), ("activation", ACTIVATIONS)):
            value = data.get(key, allowed[0])
            if not isinstance(value, str) or value not in allowed:
                raise fail(f"{key} {_short(value)} is not one of {allowed}")
        specials = data["special_token_ids"]
        if not isinstance(specials, list) or not all(is_int(i) and 0 <= i < vocab_size for i in specials):
            raise fail(f"special_token_ids must be a list of token ids in [0, vocab_size={vocab_size})")
        max_length = data["max_length"]
        for mode in MODES:
            value = max_length.get(mode) if isinstance(max_length, dict) else None
            if not is_int(value) or not 2 <= value <= MAX_MAX_LENGTH:
                raise fail(f"max_length.{mode} must be an integer in [2, {MAX_MAX_LENGTH}], got {_short(value)}")
        problem = check_relative_path(data.get("tokenizer", "tokenizer.json"))
        if problem:
            raise fail(f"tokenizer: {problem}")
        vocabulary = data.get("vocabulary_sha256")
        if vocabulary is not None and not (isinstance(vocabulary, str) and _SHA256.fullmatch(vocabulary)):
            raise fail(f"vocabulary_sha256 must be 64 lowercase hex digits, got {_short(vocabulary)}")
        for key in ("extra", "source", "quantization", "exporter", "parity"):
            if not isinstance(data.get(key, {}), dict):
                raise fail(f"{key} must be a JSON object")
        encoders: dict[str, dict[str, GraphEntry]] = {}
        raw_encoders = data["encoders"]
        for mode in MODES:
            graphs = raw_encoders.get(mode) if isinstance(raw_encoders, dict) else None
            if not isinstance(graphs, dict) or not graphs:
                raise fail(f"encoders.{mode} must map a precision to a graph")
            encoders[mode] = {}
            for precision, entry in graphs.items():
                if precision not in PRECISIONS:
                    raise fail(f"encoders.{mode}: unknown precision {_short(precision)} (expected {PRECISIONS})")
                encoders[mode][precision] = _graph_entry(entry, f"encoders.{mode}.{precision}", vocab_size, fail)
        known = {f for f in cls.__dataclass_fields__}
        return cls(
            kind=data["kind"],
            vocab_size=vocab_size,
            special_token_ids=sorted(set(specials)),
            max_length={mode: max_length[mode] for mode in MODES},
            encoders=encoders,
            **{k: v for k, v in data.items() if k in known and k not in {
                "kind", "vocab_size", "special_token_ids", "max_length", "encoders"}},
        )


def _graph_entry(entry: Any, name: str, vocab_size: int, fail) -> GraphEntry:
    if not isinstance(entry, dict) or "path" not in entry:
        raise fail(f"{name} must be an object with a 'path'")
    unknown = set(entry) - {"path", "output", "top_k", "sha256"}
    if unknown:
        raise fail(f"{name}: unknown fields {sorted(unknown)}")
    problem = check_relative_path(entry["path"])
    if problem:
        raise fail(f"{name}.path: {problem}")
    output = entry.get("output", "pooled")
    if not isinstance(output, str) or output not in GRAPH_OUTPUTS:
        raise fail(f"{name}.output {_short(output)} not in {GRAPH_OUTPUTS}")
    top_k = entry.get("top_k")
    if top_k is not None and not (is_int(top_k) and 0 < top_k <= vocab_size):
        raise fail(f"{name}.top_k must be an integer in [1, vocab_size={vocab_size}], got {_short(top_k)}")
    digest = entry.get("sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        raise fail(f"{name}.sha256 must be 64 lowercase hex digits, got {_short(digest)}")
    return GraphEntry(**entry)


def _short(value: Any) -> str:
    """repr of a field value, cut short (a hostile manifest may hold a huge one)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
