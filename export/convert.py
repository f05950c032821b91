"""torch -> ONNX: export masked-LM checkpoints with optimum into a model folder, torch as parity reference.

With `factory`, the only module that imports torch; `upgrade` never loads either.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from optimum.exporters.onnx import onnx_export_from_model
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from spladerunner.manifest import MODES, Manifest
from spladerunner.tokenization import Batch, load_tokenizer
from spladerunner_export.build import ExportOptions, SpladeExport, build
from spladerunner_export.errors import ExportError
from spladerunner_export.provenance import resolve_checkpoint


def load_masked_lm(checkpoint: Path) -> PreTrainedModel:
    """The checkpoint's masked-LM in eval mode, fp32."""
    return AutoModelForMaskedLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def export_logits(model: PreTrainedModel) -> onnx.ModelProto:
    """The model as an ONNX logits graph [batch, length, vocab] (optimum, task fill-mask).

    optimum's graphs quantise to faster int8 models than the torch dynamo exporter's.
    """
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The tracer warns about constants in HF's mask helpers (shape-independent), and torch about
        # its TorchScript exporter, which optimum still uses and whose graphs quantise best.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        onnx_export_from_model(model, tmp, task="fill-mask", do_validation=False)
        return onnx.load(Path(tmp) / "model.onnx")


def checkpoint_tokenizer(checkpoint: Path, fallback: Path) -> Path:
    """The checkpoint's `tokenizer.json`; for checkpoints that ship vocab.txt only, its fast tokenizer
    written to `fallback`."""
    if (checkpoint / "tokenizer.json").is_file():
        return checkpoint / "tokenizer.json"
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(checkpoint, use_fast=True).save_pretrained(tmp)
        fallback.write_bytes((Path(tmp) / "tokenizer.json").read_bytes())
    return fallback


class TorchReference:
    """SPLADE weights computed naively in torch: max_i (or sum_i) mask_i * log1p(relu(z_i)) on [B, L, V]."""

    def __init__(self, model: PreTrainedModel, pooling: str) -> None:
        self.model = model
        self.pooling = pooling

    def __call__(self, batch: Batch) -> np.ndarray:
        mask = torch.from_numpy(batch.attention_mask)
        with torch.no_grad():
            logits = self.model(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).logits
            weights = mask[..., None] * torch.log1p(torch.relu(logits))
            pooled = weights.amax(1) if self.pooling == "max" else weights.sum(1)
        return pooled.numpy()


def export_checkpoint(out: str | Path, checkpoint: str | Path | None = None, *,
                      query_checkpoint: str | Path | None = None, document_checkpoint: str | Path | None = None,
                      revision: str | None = None, options: ExportOptions | None = None) -> Manifest:
    """Export one checkpoint (both modes share its graphs), or a query and a document checkpoint
    (efficient SPLADE: `query/` and `document/` subfolders), to a spladerunner model folder.

    Checkpoints are local folders or hub ids. Ends with the parity check against the torch model;
    `manifest.parity["passed"]` says whether every variant stayed within the thresholds.
    """
    options = options or ExportOptions()
    if (checkpoint is None) == (query_checkpoint is None or document_checkpoint is None):
        raise ExportError("give either one checkpoint or both a query and a document checkpoint")
    names = {"": checkpoint} if checkpoint is not None else {"query": query_checkpoint,
                                                             "document": document_checkpoint}
    out = Path(out)
    encoders: dict[str, SpladeExport] = {}
    sources: dict[str, dict] = {}
    vocabularies = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, name in names.items():
            resolved = resolve_checkpoint(name, revision)
            sources[key] = resolved.record()
            tokenizer_json = checkpoint_tokenizer(resolved.path, Path(tmp) / f"{key or 'model'}-tokenizer.json")
            vocabularies.append(load_tokenizer(tokenizer_json).get_vocab(with_added_tokens=True))
            model = load_masked_lm(resolved.path)
            encoders[key] = SpladeExport(export_logits(model), TorchReference(model, options.pooling), options)
        if any(vocabulary != vocabularies[0] for vocabulary in vocabularies):
            raise ExportError("the query and document checkpoints have different tokenizers")
        modes = {mode: "" if checkpoint is not None else mode for mode in MODES}
        source = sources[""] if checkpoint is not None else sources
        return build(out, encoders, modes, tokenizer_json, options=options, source=source, reference_name="torch")
