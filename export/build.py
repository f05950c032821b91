"""Model-folder assembly, the one code path of every export: each encoder's graph variants, the
tokenizer, the parity report and `spladerunner.json`. Imports no torch.

`assemble` writes a folder from `EncoderExport`s (anything that writes its graphs and checks them);
`build` is SPLADE's use of it (`convert`, `upgrade`) with `SpladeExport`s, and `sparsembed` has its own
encoder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import onnx
from tokenizers import Tokenizer

from spladerunner.manifest import DEFAULT_MAX_LENGTH, MODES, POOLINGS, PRECISIONS, GraphEntry, Manifest
from spladerunner.tokenization import load_tokenizer, special_token_ids, vocabulary_sha256
from spladerunner_export.errors import ExportError
from spladerunner_export.graph import fuse_attention, fuse_pooling, untie_decoder, vocab_size
from spladerunner_export.parity import (
    BATCH_SIZES,
    PARITY_TEXTS,
    RANK_DEPTH,
    Reference,
    Thresholds,
    check_parity,
    parity_batches,
    retrieval_batches,
)
from spladerunner_export.provenance import exporter_versions, sha256
from spladerunner_export.quantize import quantize_int8, to_fp16
from spladerunner_export.retrieval_set import DOCUMENTS, QUERIES

GRAPH_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how strictly to check it (shared by both commands)."""

    pooling: str = "max"
    top_k: int | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    max_length: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_LENGTH))
    # One Attention op per layer in the fp32/int8 graphs (`spladerunner_export.graph.fuse_attention`): faster int8
    # queries, slightly slower int8 documents; the graph lever of benchmarks/RESULTS.md measures both.
    fuse_attention: bool = True
    thresholds: Thresholds = Thresholds()
    # Precisions kept in the folder (None: all built). The others are still built, since int8 and fp16 are made
    # from the fp32 graph, and judged in the parity report, then removed: a folder meant to be small (the
    # package's built-in model) ships int8 alone.
    ship: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ExportError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown or "fp32" not in self.precisions:
            raise ExportError(f"precisions must include fp32 and come from {PRECISIONS}, got {self.precisions}")
        if self.ship is not None and (not self.ship or set(self.ship) - set(self.precisions)):
            raise ExportError(f"ship must name some of the built precisions {self.precisions}, got {self.ship}")
        if any(self.max_length.get(mode, 0) < 2 for mode in MODES):
            raise ExportError(f"max_length needs query and document lengths >= 2, got {self.max_length}")


@dataclass(frozen=True)
class Variants:
    """What writing one encoder's graphs made: how each precision was made (the manifest's
    `quantization[precision]`), and facts about this encoder's graphs (`quantization[fact][key]`)."""

    made: dict
    facts: dict = field(default_factory=dict)


class EncoderExport(Protocol):
    """One encoder of a model folder, as `assemble` uses it."""

    output: str  # the GraphEntry output layout of its graphs
    top_k: int | None
    vocab_size: int

    def write(self, folder: Path, precisions: Sequence[str], special_ids: list[int]) -> Variants:
        """Save `GRAPH_FILES[precision]` under `folder` for every precision."""
        ...

    def check(self, graphs: dict[str, tuple[Path, GraphEntry]], tokenizer: Tokenizer, modes: list[str],
              special_ids: list[int], vocab_size: int) -> dict:
        """The parity report {precision: result with "passed"} of its graphs, for the modes they serve."""
        ...


def assemble(out: Path, encoders: dict[str, EncoderExport], modes: dict[str, str], tokenizer_json: Path, *,
             kind: str, precisions: Sequence[str], max_length: dict[str, int], source: dict, reference_name: str,
             thresholds: dict, pooling: str = "max", extra: dict | None = None,
             exporter: dict | None = None, ship: Sequence[str] | None = None) -> Manifest:
    """Write every encoder's graphs under `out/<key>/`, check parity, and write the manifest.

    `modes` maps query/document to an `encoders` key ("" puts the graphs at the top of the folder).
    `ship` keeps only those precisions' graphs in the folder and its encoders (the parity report still judges
    every precision built).
    `thresholds` and `exporter` (beside the exporting packages' versions) are recorded as given.
    The folder is complete even when parity fails; `manifest.parity["passed"]` says whether it did.
    """
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    tokenizer = load_tokenizer(out / "tokenizer.json")
    specials = special_token_ids(tokenizer)
    vocab_sizes = {encoder.vocab_size for encoder in encoders.values()}
    if len(vocab_sizes) != 1:
        raise ExportError(f"query and document graphs disagree on the vocabulary size: {sorted(vocab_sizes)}")
    vocab = vocab_sizes.pop()
    if vocab < tokenizer.get_vocab_size(with_added_tokens=True):
        raise ExportError(f"graph vocabulary ({vocab}) is smaller than the tokenizer's")

    entries: dict[str, dict[str, GraphEntry]] = {}
    parity: dict[str, dict] = {}
    quantization: dict = {}
    for key, encoder in encoders.items():
        folder = out / key
        folder.mkdir(exist_ok=True)
        variants = encoder.write(folder, precisions, specials)
        quantization.update(variants.made)
        for fact, value in variants.facts.items():
            quantization.setdefault(fact, {})[key or "model"] = value
        entries[key] = {precision: _entry(out, folder / GRAPH_FILES[precision], encoder.output, encoder.top_k)
                        for precision in precisions}
        graphs = {precision: (out / entry.path, entry) for precision, entry in entries[key].items()}
        served = [mode for mode in MODES if modes[mode] == key]
        parity[key or "model"] = encoder.check(graphs, tokenizer, served, specials, vocab)

    passed = all(result["passed"] for report in parity.values() for result in report.values())
    if ship is not None:
        _drop_unshipped(out, entries, set(ship))
    manifest = Manifest(
        kind=kind, vocab_size=vocab, special_token_ids=specials, max_length=dict(max_length),
        encoders={mode: entries[key] for mode, key in modes.items()}, pooling=pooling, activation="log1p_relu",
        tokenizer="tokenizer.json", extra=dict(extra or {}), source=source, quantization=quantization,
        exporter={**exporter_versions(), **(exporter or {})}, vocabulary_sha256=vocabulary_sha256(tokenizer),
        parity={"passed": passed, "reference": reference_name, "texts": len(PARITY_TEXTS),
                "batch_sizes": list(BATCH_SIZES),
                "retrieval_set": {"queries": len(QUERIES), "documents": len(DOCUMENTS), "depth": RANK_DEPTH},
                "thresholds": thresholds, "graphs": parity})
    manifest.write(out)
    return manifest


@dataclass
class SpladeExport:
    """A SPLADE encoder to export: its MLM logits graph and the reference its fused graphs must match."""

    logits: onnx.ModelProto
    reference: Reference
    options: ExportOptions

    @property
    def output(self) -> str:
        return "pooled" if self.options.top_k is None else "topk"

    @property
    def top_k(self) -> int | None:
        return self.options.top_k

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.logits)

    def write(self, folder: Path, precisions: Sequence[str], special_ids: list[int]) -> Variants:
        """Untie the decoder, then pool the logits graph and save each precision.

        The fp16 graph (CUDA) keeps unfused attention: onnxruntime's CPU has no fp16 Attention kernel to
        check its parity with, and the GPU figures were measured on that layout. Attention is fused
        before pooling because onnxruntime's fusions need shape inference, which fails on pooled graphs.
        """
        options = self.options
        untied = untie_decoder(self.logits)

        def pooled(graph: onnx.ModelProto) -> onnx.ModelProto:
            return fuse_pooling(graph, pooling=options.pooling, top_k=options.top_k, special_ids=special_ids)

        made: dict = {}
        if "fp16" in precisions:
            plain = onnx.ModelProto()
            plain.CopyFrom(self.logits)
            onnx.save(to_fp16(pooled(plain)), folder / GRAPH_FILES["fp16"])
            made["fp16"] = {"method": "onnxruntime.transformers.float16", "keep_io_types": True}
        fused_layers = fuse_attention(self.logits) if options.fuse_attention else 0
        onnx.save(pooled(self.logits), folder / GRAPH_FILES["fp32"])
        if "int8" in precisions:
            made["int8"] = quantize_int8(folder / GRAPH_FILES["fp32"], folder / GRAPH_FILES["int8"])
        return Variants(made, {"decoder_untied": untied, "attention_layers_fused": fused_layers})

    def check(self, graphs: dict[str, tuple[Path, GraphEntry]], tokenizer: Tokenizer, modes: list[str],
              special_ids: list[int], vocab_size: int) -> dict:
        length = max(self.options.max_length[mode] for mode in modes)
        return check_parity(self.reference, graphs, parity_batches(tokenizer, length), vocab_size=vocab_size,
                            special_ids=special_ids, thresholds=self.options.thresholds,
                            retrieval=retrieval_batches(tokenizer, self.options.max_length), modes=modes)


def build(out: Path, encoders: dict[str, SpladeExport], modes: dict[str, str], tokenizer_json: Path, *,
          options: ExportOptions, source: dict, reference_name: str) -> Manifest:
    """A SPLADE model folder (`assemble` with the options' precisions, lengths, pooling and thresholds)."""
    return assemble(out, encoders, modes, tokenizer_json, kind="splade", precisions=options.precisions,
                    max_length=options.max_length, source=source, reference_name=reference_name,
                    thresholds=asdict(options.thresholds), pooling=options.pooling, ship=options.ship)


def _drop_unshipped(out: Path, entries: dict[str, dict[str, GraphEntry]], ship: set[str]) -> None:
    """Remove the graphs of precisions not shipped, from `entries` and from disk."""
    for variants in entries.values():
        for precision in [p for p in variants if p not in ship]:
            (out / variants.pop(precision).path).unlink()


def _entry(out: Path, path: Path, output: str, top_k: int | None) -> GraphEntry:
    return GraphEntry(path=path.relative_to(out).as_posix(), output=output, top_k=top_k, sha256=sha256(path))
