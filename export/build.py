"""Model-folder assembly shared by `convert` and `upgrade`: logits graphs -> fused precision variants,
tokenizer, parity report and `spladerunner.json`. Imports no torch.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from export.graph import fuse_attention, fuse_pooling, untie_decoder, vocab_size
from export.parity import BATCH_SIZES, PARITY_TEXTS, Reference, Thresholds, check_parity, parity_batches
from export.provenance import exporter_versions, sha256
from export.quantize import quantize_int8, to_fp16
from spladerunner.manifest import MODES, POOLINGS, PRECISIONS, GraphEntry, Manifest
from spladerunner.tokenization import load_tokenizer, special_token_ids, vocabulary_sha256

GRAPH_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how strictly to check it (shared by both commands)."""

    pooling: str = "max"
    top_k: int | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    max_length: dict[str, int] = field(default_factory=lambda: {"query": 64, "document": 256})
    # One Attention op per layer in the fp32/int8 graphs (`export.graph.fuse_attention`): int8 queries
    # 7.31 vs 8.84 ms unfused, int8 documents 20.05 vs 21.02 docs/s (lever table, benchmarks/RESULTS.md).
    fuse_attention: bool = True
    thresholds: Thresholds = Thresholds()

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown or "fp32" not in self.precisions:
            raise ValueError(f"precisions must include fp32 and come from {PRECISIONS}, got {self.precisions}")
        if any(self.max_length.get(mode, 0) < 2 for mode in MODES):
            raise ValueError(f"max_length needs query and document lengths >= 2, got {self.max_length}")


@dataclass
class Encoder:
    """One encoder to export: its logits graph and the reference its fused graphs must match."""

    logits: onnx.ModelProto
    reference: Reference


def build(out: Path, encoders: dict[str, Encoder], modes: dict[str, str], tokenizer_json: Path, *,
          options: ExportOptions, source: dict, reference_name: str) -> Manifest:
    """Write every encoder's graphs under `out/<key>/`, check parity, and write the manifest.

    `modes` maps query/document to an `encoders` key ("" puts the graphs at the top of the folder).
    The folder is complete even when parity fails; `manifest.parity["passed"]` says whether it did.
    """
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    tokenizer = load_tokenizer(out / "tokenizer.json")
    specials = special_token_ids(tokenizer)
    vocab_sizes = {vocab_size(encoder.logits) for encoder in encoders.values()}
    if len(vocab_sizes) != 1:
        raise ValueError(f"query and document graphs disagree on the vocabulary size: {sorted(vocab_sizes)}")
    vocab = vocab_sizes.pop()
    if vocab < tokenizer.get_vocab_size(with_added_tokens=True):
        raise ValueError(f"graph vocabulary ({vocab}) is smaller than the tokenizer's")

    entries: dict[str, dict[str, GraphEntry]] = {}
    untied: dict[str, bool] = {}
    attention_layers: dict[str, int] = {}
    parity: dict[str, dict] = {}
    quantization: dict = {}
    for key, encoder in encoders.items():
        folder = out / key
        folder.mkdir(exist_ok=True)
        untied[key or "model"] = untie_decoder(encoder.logits)
        made, attention_layers[key or "model"] = _write_variants(encoder.logits, folder, options, specials)
        quantization.update(made)
        entries[key] = {precision: _entry(out, folder / GRAPH_FILES[precision], options.top_k)
                        for precision in options.precisions}
        length = max(options.max_length[mode] for mode, used in modes.items() if used == key)
        graphs = {precision: (out / entry.path, entry) for precision, entry in entries[key].items()}
        parity[key or "model"] = check_parity(
            encoder.reference, graphs, parity_batches(tokenizer, length), vocab_size=vocab,
            special_ids=specials, thresholds=options.thresholds)

    quantization["decoder_untied"] = untied
    quantization["attention_layers_fused"] = attention_layers
    passed = all(result["passed"] for report in parity.values() for result in report.values())
    manifest = Manifest(
        kind="splade", vocab_size=vocab, special_token_ids=specials, max_length=dict(options.max_length),
        encoders={mode: entries[key] for mode, key in modes.items()}, pooling=options.pooling,
        activation="log1p_relu", tokenizer="tokenizer.json", source=source, quantization=quantization,
        exporter=exporter_versions(), vocabulary_sha256=vocabulary_sha256(tokenizer),
        parity={"passed": passed, "reference": reference_name, "texts": len(PARITY_TEXTS),
                "batch_sizes": list(BATCH_SIZES), "thresholds": asdict(options.thresholds), "graphs": parity})
    manifest.write(out)
    return manifest


def _write_variants(logits: onnx.ModelProto, folder: Path, options: ExportOptions,
                    special_ids: list[int]) -> tuple[dict, int]:
    """Pool the logits graph and save each requested precision; returns how each was made and how
    many attention layers were fused.

    The fp16 graph (CUDA) keeps unfused attention: onnxruntime's CPU has no fp16 Attention kernel to
    check its parity with, and the GPU figures were measured on that layout. Attention is fused
    before pooling because onnxruntime's fusions need shape inference, which fails on pooled graphs.
    """
    def pooled(graph: onnx.ModelProto) -> onnx.ModelProto:
        return fuse_pooling(graph, pooling=options.pooling, top_k=options.top_k, special_ids=special_ids)

    made: dict = {}
    if "fp16" in options.precisions:
        plain = onnx.ModelProto()
        plain.CopyFrom(logits)
        onnx.save(to_fp16(pooled(plain)), folder / GRAPH_FILES["fp16"])
        made["fp16"] = {"method": "onnxruntime.transformers.float16", "keep_io_types": True}
    fused_layers = fuse_attention(logits) if options.fuse_attention else 0
    onnx.save(pooled(logits), folder / GRAPH_FILES["fp32"])
    if "int8" in options.precisions:
        made["int8"] = quantize_int8(folder / GRAPH_FILES["fp32"], folder / GRAPH_FILES["int8"])
    return made, fused_layers


def _entry(out: Path, path: Path, top_k: int | None) -> GraphEntry:
    return GraphEntry(path=path.relative_to(out).as_posix(), output="pooled" if top_k is None else "topk",
                      top_k=top_k, sha256=sha256(path))
