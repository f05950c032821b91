"""SparsEmbed (Kong et al., SIGIR 2023) checkpoints -> spladerunner model folders, and random test checkpoints.

A SparsEmbed checkpoint is a masked-LM folder plus `linear.pt` (the projection `weight` [d', d], no
bias) and `metadata.json` (neural-cherche layout: `max_length_query`, `max_length_document`,
`query_prefix`, `document_prefix`; we add optional `query_mask_tokens`/`document_mask_tokens`,
the [MASK] tokens appended to each text, and `softmax_axis`).

The whole formula runs in the graph, exported from a torch wrapper with the TorchScript exporter
(dynamic batch and length, TopK in graph): SPLADE-max weights s = log1p(relu(max_i z_i)) with
special tokens zeroed, the top-k terms A, attention over positions P[i, t] = softmax_i(z[i, a_t])
(or, `softmax_axis="terms"` as in later neural-cherche, softmax over the active selected terms),
E_t = sum_i P[i, t] H[i] over unpadded positions, and e_t = relu(W E_t). Selected terms of weight 0
(texts with fewer than k active terms) are not terms: the runtime drops them, and the "terms"
softmax leaves them out, so ties among zeros never change an embedding.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel

from spladerunner.manifest import (
    DEFAULT_MAX_LENGTH,
    MODES,
    TOPK_EMBEDDINGS_OUTPUT,
    TOPK_IDS_OUTPUT,
    TOPK_WEIGHTS_OUTPUT,
    GraphEntry,
    Manifest,
)
from spladerunner.sparsembed import SOFTMAX_AXES, marked_texts
from spladerunner.tokenization import Batch
from spladerunner_export.build import GRAPH_FILES, Variants, assemble
from spladerunner_export.convert import checkpoint_tokenizer, load_masked_lm
from spladerunner_export.errors import ExportError
from spladerunner_export.parity import (
    PARITY_TEXTS,
    RetrievalBatches,
    Thresholds,
    check_parity,
    feeds,
    parity_batches,
    retrieval_batches,
)
from spladerunner_export.provenance import resolve_checkpoint
from spladerunner_export.quantize import quantize_int8
from spladerunner_export.retrieval_set import DOCUMENTS, QUERIES

LINEAR_FILE = "linear.pt"
METADATA_FILE = "metadata.json"
SPARSEMBED_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class EmbeddingThresholds:
    """Pass bounds of the term embeddings: fp32 max abs diff, int8 min cosine per text (shared terms)."""

    fp32_max_abs_diff: float = 1e-4
    int8_min_cosine: float = 0.98


@dataclass(frozen=True)
class CheckpointSettings:
    """Tokenisation and model settings of one checkpoint, per mode; written to the manifest's `extra`."""

    max_length: dict[str, int]
    k: dict[str, int]
    prefix: dict[str, str]
    mask_tokens: dict[str, int]
    softmax_axis: str = "positions"

    def extra(self, embedding_dim: int) -> dict:
        return {"k": self.k, "embedding_dim": embedding_dim, "softmax_axis": self.softmax_axis,
                "prefix": self.prefix, "mask_tokens": self.mask_tokens}


def read_settings(checkpoint: Path, *, k: dict[str, int] | None = None, softmax_axis: str | None = None,
                  max_length: dict[str, int] | None = None) -> CheckpointSettings:
    """Settings from `metadata.json` (when present), overridden by the arguments (`k` may give one mode only).

    k defaults to the max length per mode, neural-cherche's convention; the softmax axis to the paper's.
    """
    path = checkpoint / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    lengths = max_length or {mode: int(metadata.get(f"max_length_{mode}", DEFAULT_MAX_LENGTH[mode])) for mode in MODES}
    settings = CheckpointSettings(
        max_length=lengths, k={**lengths, **(k or {})},
        prefix={mode: str(metadata.get(f"{mode}_prefix", "")) for mode in MODES},
        mask_tokens={mode: int(metadata.get(f"{mode}_mask_tokens", 0)) for mode in MODES},
        softmax_axis=softmax_axis or metadata.get("softmax_axis", "positions"))
    if settings.softmax_axis not in SOFTMAX_AXES:
        raise ExportError(f"softmax_axis must be one of {SOFTMAX_AXES}, got {settings.softmax_axis!r}")
    for mode in MODES:
        if settings.k[mode] < 1 or settings.max_length[mode] - settings.mask_tokens[mode] < 2:
            raise ExportError(f"{mode}: k must be >= 1 and the max length leave 2 tokens beside the [MASK]s")
    return settings


def load_projection(checkpoint: Path) -> torch.Tensor:
    """The projection W [d', d] from `linear.pt` (a state dict with `weight`)."""
    path = checkpoint / LINEAR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SparsEmbed projection not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight = state.get("weight") if isinstance(state, dict) else None
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ExportError(f"{path}: expected a state dict with a 2-D 'weight' [embedding_dim, hidden]")
    return weight.to(torch.float32)


def _log1p(x: torch.Tensor) -> torch.Tensor:
    """log(1 + x) that survives export: torch's log1p exports as Log(1 + x), which rounds x < 6e-8 to 0."""
    u = 1 + x
    d = u - 1
    return torch.where(d == 0, x, x * torch.log(u) / torch.where(d == 0, torch.ones_like(d), d))


class SparsEmbedGraph(torch.nn.Module):
    """The exported module: (input_ids, attention_mask) -> top_ids [B, k], top_weights [B, k], top_embeddings."""

    def __init__(self, model: PreTrainedModel, projection: torch.Tensor, k: int, softmax_axis: str,
                 special_ids: list[int]) -> None:
        super().__init__()
        self.model = model
        self.projection = torch.nn.Parameter(projection, requires_grad=False)
        self.k = k
        self.softmax_axis = softmax_axis
        keep = torch.ones(model.config.vocab_size)
        keep[special_ids] = 0.0
        self.register_buffer("keep", keep)
        # Export restores the wrapper's training flag on every submodule afterwards: dropout would stay on.
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        logits, hidden = out.logits, out.hidden_states[-1]
        mask = attention_mask.bool().unsqueeze(-1)  # [B, L, 1]
        # Padding set to 0 before the max is exact because relu follows.
        weights = _log1p(torch.relu(logits.masked_fill(~mask, 0.0).amax(1))) * self.keep
        top_weights, top_ids = weights.topk(self.k, dim=1)
        selected = logits.gather(2, top_ids.unsqueeze(1).expand(-1, logits.shape[1], -1))  # [B, L, k]
        lowest = torch.finfo(selected.dtype).min
        if self.softmax_axis == "positions":
            attention = selected.masked_fill(~mask, lowest).softmax(1)
        else:
            active = (top_weights > 0).unsqueeze(1)
            attention = selected.masked_fill(~active, lowest).softmax(2) * active * mask
        embeddings = torch.relu(attention.transpose(1, 2) @ hidden @ self.projection.T)
        return top_ids, top_weights, embeddings


def export_graph(graph: SparsEmbedGraph, path: Path) -> None:
    """TorchScript export with dynamic batch and length (opset 17)."""
    example = (torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    sequence = {0: "batch_size", 1: "sequence_length"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on HF's shape-independent mask helpers
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"],
                          output_names=[TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT, TOPK_EMBEDDINGS_OUTPUT],
                          dynamic_axes={"input_ids": sequence, "attention_mask": sequence,
                                        TOPK_IDS_OUTPUT: {0: "batch_size"}, TOPK_WEIGHTS_OUTPUT: {0: "batch_size"},
                                        TOPK_EMBEDDINGS_OUTPUT: {0: "batch_size"}})


@dataclass(frozen=True)
class Terms:
    """One text's active terms, heaviest first: ids, weights and embeddings [n, d']."""

    ids: np.ndarray
    weights: np.ndarray
    embeddings: np.ndarray


class SparsEmbedReference:
    """The formula in plain torch, one text at a time on its unpadded positions: the parity reference."""

    def __init__(self, model: PreTrainedModel, projection: torch.Tensor, k: int, softmax_axis: str,
                 special_ids: list[int]) -> None:
        self.model, self.projection, self.k, self.softmax_axis = model, projection, k, softmax_axis
        self.special_ids = special_ids

    def terms(self, batch: Batch) -> list[Terms]:
        with torch.no_grad():
            mask = torch.from_numpy(batch.attention_mask)
            out = self.model(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask,
                             output_hidden_states=True)
            rows = []
            for logits, hidden, length in zip(out.logits, out.hidden_states[-1], mask.sum(1).tolist()):
                logits, hidden = logits[:length], hidden[:length]
                weights = torch.log1p(torch.relu(logits)).amax(0)
                weights[self.special_ids] = 0.0
                top_weights, top_ids = weights.topk(self.k)
                active = top_weights > 0
                top_ids, top_weights = top_ids[active], top_weights[active]
                attention = logits[:, top_ids].softmax(0 if self.softmax_axis == "positions" else 1)  # [L, n]
                embeddings = torch.relu(self.projection @ (attention.T @ hidden).T).T
                rows.append(Terms(top_ids.numpy(), top_weights.numpy(), embeddings.numpy()))
        return rows

    def __call__(self, batch: Batch) -> np.ndarray:
        """Dense SPLADE-max weights [B, V] (what `check_parity` compares), specials zeroed."""
        with torch.no_grad():
            mask = torch.from_numpy(batch.attention_mask)
            logits = self.model(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).logits
            weights = (torch.log1p(torch.relu(logits)) * mask[..., None]).amax(1)
        weights[:, self.special_ids] = 0.0
        return weights.numpy()


def graph_terms(session: ort.InferenceSession, batch: Batch) -> list[Terms]:
    """A graph's active terms per row (weight > 0), in the reference's layout."""
    ids, weights, embeddings = session.run(None, feeds(session, batch))
    return [Terms(i[w > 0], w[w > 0], e[w > 0]) for i, w, e in zip(ids, weights, embeddings)]


def compare_embeddings(reference: list[Terms], graph: list[Terms]) -> dict:
    """Worst case over texts: do the active ids agree, and how far apart are the shared terms' embeddings.

    `unmatched_max_weight` is the heaviest term only one side keeps: fp32 noise flips terms of weight ~0.
    """
    same_ids, unmatched, max_diff, min_cosine, jaccard = True, 0.0, 0.0, 1.0, 1.0
    for ref, got in zip(reference, graph):
        same_ids &= np.array_equal(ref.ids, got.ids)
        only = np.concatenate([ref.weights[~np.isin(ref.ids, got.ids)], got.weights[~np.isin(got.ids, ref.ids)]])
        unmatched = max(unmatched, float(only.max(initial=0.0)))
        shared, a, b = np.intersect1d(ref.ids, got.ids, return_indices=True)
        union = len(np.union1d(ref.ids, got.ids))
        jaccard = min(jaccard, len(shared) / union if union else 1.0)
        if not len(shared):
            continue
        x, y = ref.embeddings[a].astype(np.float64), got.embeddings[b].astype(np.float64)
        max_diff = max(max_diff, float(np.abs(x - y).max()))
        # Per text over all shared terms: a lone term with a near-zero embedding makes a per-term cosine noise.
        norms = np.linalg.norm(x) * np.linalg.norm(y)
        min_cosine = min(min_cosine, float((x * y).sum() / norms) if norms else float(not x.any() and not y.any()))
    return {"ids_identical": bool(same_ids), "ids_min_jaccard": jaccard, "unmatched_max_weight": unmatched,
            "embedding_max_abs_diff": max_diff, "embedding_min_cosine": min_cosine}


def check_sparsembed_parity(reference: SparsEmbedReference, graphs: dict[str, tuple[Path, GraphEntry]],
                            batches: list[Batch], *, vocab_size: int, special_ids: list[int], thresholds: Thresholds,
                            embedding_thresholds: EmbeddingThresholds, retrieval: RetrievalBatches | None = None,
                            modes: Sequence[str] = MODES) -> dict:
    """`check_parity` on the SPLADE weights, extended per graph with the active ids and their embeddings.

    fp32 passes when the ids only one side keeps weigh at most the weight bound and the shared terms'
    embeddings are within the max abs diff; int8 on the embeddings' cosine.
    """
    report = check_parity(reference, graphs, batches, vocab_size=vocab_size, special_ids=special_ids,
                          thresholds=thresholds, retrieval=retrieval, modes=modes)
    expected = [row for batch in batches for row in reference.terms(batch)]
    for precision, (path, _) in graphs.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metrics = compare_embeddings(expected, [row for batch in batches for row in graph_terms(session, batch)])
        bounds = embedding_thresholds
        ok = (metrics["unmatched_max_weight"] <= thresholds.fp32_max_abs_diff
              and metrics["embedding_max_abs_diff"] <= bounds.fp32_max_abs_diff
              if precision == "fp32" else metrics["embedding_min_cosine"] >= bounds.int8_min_cosine)
        report[precision].update(metrics, passed=report[precision]["passed"] and ok)
    return report


@dataclass
class SparsEmbedExport:
    """One SparsEmbed graph (one k) for `build.assemble`: exported from torch, checked against `SparsEmbedReference`."""

    model: PreTrainedModel
    projection: torch.Tensor
    k: int
    settings: CheckpointSettings
    thresholds: Thresholds
    embedding_thresholds: EmbeddingThresholds
    output = "sparsembed"

    @property
    def top_k(self) -> int:
        return self.k

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def write(self, folder: Path, precisions: Sequence[str], special_ids: list[int]) -> Variants:
        export_graph(SparsEmbedGraph(self.model, self.projection, self.k, self.settings.softmax_axis, special_ids),
                     folder / GRAPH_FILES["fp32"])
        made = {}
        if "int8" in precisions:
            made["int8"] = quantize_int8(folder / GRAPH_FILES["fp32"], folder / GRAPH_FILES["int8"])
        return Variants(made)

    def check(self, graphs: dict[str, tuple[Path, GraphEntry]], tokenizer: Tokenizer, modes: list[str],
              special_ids: list[int], vocab_size: int) -> dict:
        # Parity texts carry the mode's prefix and [MASK]s (the documents' when both modes share the graph).
        mode = modes[-1]
        texts = marked_texts(PARITY_TEXTS, self.settings.prefix[mode], self.settings.mask_tokens[mode])
        reference = SparsEmbedReference(self.model, self.projection, self.k, self.settings.softmax_axis, special_ids)
        settings = self.settings
        retrieval = retrieval_batches(
            tokenizer, settings.max_length,
            marked_texts(QUERIES, settings.prefix["query"], settings.mask_tokens["query"]),
            marked_texts(DOCUMENTS, settings.prefix["document"], settings.mask_tokens["document"]))
        return check_sparsembed_parity(
            reference, graphs, parity_batches(tokenizer, self.settings.max_length[mode], texts), vocab_size=vocab_size,
            special_ids=special_ids, thresholds=self.thresholds, embedding_thresholds=self.embedding_thresholds,
            retrieval=retrieval, modes=modes)


def export_sparsembed(out: str | Path, checkpoint: str | Path, *, revision: str | None = None,
                      k: dict[str, int] | None = None, softmax_axis: str | None = None,
                      max_length: dict[str, int] | None = None,
                      precisions: tuple[str, ...] = SPARSEMBED_PRECISIONS, thresholds: Thresholds | None = None,
                      embedding_thresholds: EmbeddingThresholds | None = None) -> Manifest:
    """Export a SparsEmbed checkpoint (local folder or hub id) to a spladerunner model folder (kind "sparsembed").

    One graph per distinct k: both modes share it when their k is equal, else `query/` and `document/`.
    Ends with the parity check against `SparsEmbedReference`: the SPLADE weights as `check_parity` does,
    then the active ids and embeddings; `manifest.parity["passed"]` says whether every graph passed.
    """
    if "fp32" not in precisions or set(precisions) - set(SPARSEMBED_PRECISIONS):
        raise ExportError(f"precisions must include fp32 and come from {SPARSEMBED_PRECISIONS}, got {precisions}")
    thresholds, embedding_thresholds = thresholds or Thresholds(), embedding_thresholds or EmbeddingThresholds()
    resolved = resolve_checkpoint(checkpoint, revision)
    settings = read_settings(resolved.path, k=k, softmax_axis=softmax_axis, max_length=max_length)
    projection = load_projection(resolved.path)
    model = load_masked_lm(resolved.path)
    # A decoder tied to the word embeddings would reach the int8 graph as a dequantised Gather initializer.
    output_embeddings = model.get_output_embeddings()
    output_embeddings.weight = torch.nn.Parameter(output_embeddings.weight.detach().clone(), requires_grad=False)
    if projection.shape[1] != model.config.hidden_size:
        raise ExportError(f"linear.pt projects {projection.shape[1]} features, "
                          f"the model has {model.config.hidden_size}")

    shared = settings.k["query"] == settings.k["document"]
    modes = {mode: "" if shared else mode for mode in MODES}
    encoders = {key: SparsEmbedExport(model, projection, settings.k[mode], settings, thresholds, embedding_thresholds)
                for mode, key in modes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_json = checkpoint_tokenizer(resolved.path, Path(tmp) / "tokenizer.json")
        return assemble(
            Path(out), encoders, modes, tokenizer_json, kind="sparsembed", precisions=precisions,
            max_length=settings.max_length, source=resolved.record(), reference_name="torch",
            thresholds={**asdict(thresholds), "embeddings": asdict(embedding_thresholds)},
            extra=settings.extra(int(projection.shape[0])), exporter={"graph": "torch.onnx.export(dynamo=False)"})


def add_sparsembed_head(folder: str | Path, *, seed: int = 0, embedding_dim: int = 64,
                        max_length: dict[str, int] | None = None, prefix: dict[str, str] | None = None,
                        mask_tokens: dict[str, int] | None = None, softmax_axis: str | None = None) -> Path:
    """Write a seeded `linear.pt` and `metadata.json` into a masked-LM folder, making it a SparsEmbed checkpoint.

    W is Gaussian with variance 1/d, so W E_t has unit-scale entries and relu keeps about half of them.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hidden_size = config.get("hidden_size", config.get("dim"))
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(embedding_dim, hidden_size, generator=generator) / math.sqrt(hidden_size)
    torch.save({"weight": weight}, folder / LINEAR_FILE)
    lengths = max_length or DEFAULT_MAX_LENGTH
    metadata: dict[str, Any] = {f"max_length_{mode}": lengths[mode] for mode in MODES}
    metadata.update({f"{mode}_prefix": (prefix or {}).get(mode, "") for mode in MODES})
    metadata.update({f"{mode}_mask_tokens": (mask_tokens or {}).get(mode, 0) for mode in MODES})
    if softmax_axis is not None:
        metadata["softmax_axis"] = softmax_axis
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")
    return folder
