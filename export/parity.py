"""Parity check: exported graphs vs a reference on fixed texts of mixed lengths in mixed batches.

The reference is the torch model with the SPLADE formula (`convert`) or, for `upgrade`, the foreign
logits graph pooled in numpy (`LogitsReference`). Each variant gets max abs diff, active-set Jaccard,
min cosine and top-50 overlap; `check_parity` applies the thresholds and says whether export passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from spladerunner.manifest import POOLED_OUTPUT, TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT, GraphEntry
from spladerunner.tokenization import Batch, encode

# Mixed lengths: one word to past the document limit (truncated), with rare words and numbers.
_LONG = " ".join([
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect",
    "cortical development and result in functional disabilities. A line scan diffusion-weighted magnetic",
    "resonance imaging sequence with diffusion tensor analysis was applied to measure the apparent",
    "diffusion coefficient, to calculate relative anisotropy, and to delineate three-dimensional fiber",
    "architecture in cerebral white matter in preterm (n = 17) and full-term infants (n = 7).",
] * 4)
PARITY_TEXTS: tuple[str, ...] = (
    "goldfish",
    "do goldfish grow",
    "what is the daily recommended intake of vitamin D for adults over 50?",
    "0-dimensional biomaterials show inductive properties.",
    "The Manhattan Project was a research and development undertaking during World War II that produced "
    "the first nuclear weapons. It was led by the United States with the support of the United Kingdom "
    "and Canada.",
    _LONG,
    "how long does it take to boil an egg",
    "Aspirin (acetylsalicylic acid) reduces the risk of myocardial infarction in patients with stable angina, "
    "according to a 1992 randomised trial.",
    "covid-19 transmission rates in schools",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
)
BATCH_SIZES = (1, 5)
TOP_OVERLAP = 50

Reference = Callable[[Batch], np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    """Pass bounds: fp32 max abs diff, and min cosine for int8 and fp16 (fp16 is looser)."""

    fp32_max_abs_diff: float = 1e-4
    int8_min_cosine: float = 0.999
    fp16_min_cosine: float = 0.99


@dataclass(frozen=True)
class Metrics:
    """Worst case over the parity texts of one graph against the reference."""

    max_abs_diff: float
    min_cosine: float
    min_jaccard: float
    min_top50_overlap: float
    mean_active: float


def parity_batches(tokenizer: Tokenizer, max_length: int, texts: Sequence[str] = PARITY_TEXTS) -> list[Batch]:
    """Every text alone (batch 1), then again in unsorted batches of 5 so that padding is exercised."""
    encoded = encode(tokenizer, texts, max_length)
    rows = np.arange(len(texts))
    groups = [rows[i:i + size] for size in BATCH_SIZES for i in range(0, len(rows), size)]
    return [_pad([encoded.ids[r] for r in group], group) for group in groups]


def _pad(ids: list[list[int]], rows: np.ndarray) -> Batch:
    width = max(len(i) for i in ids)
    # Padding is masked out, so the pad id is arbitrary.
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
    return Batch(rows, input_ids, mask)


def feeds(session: ort.InferenceSession, batch: Batch) -> dict[str, np.ndarray]:
    """The batch as inputs of the session (token_type_ids only where the graph has them)."""
    available = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}
    return {i.name: available[i.name] for i in session.get_inputs()}


def pool_logits(logits: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """The SPLADE formula in numpy on [B, L, V] logits: max_i (or sum_i) mask_i * log1p(relu(z_i))."""
    weights = mask[..., None] * np.log1p(np.maximum(logits.astype(np.float32), 0))
    return weights.max(1) if pooling == "max" else weights.sum(1)


class LogitsReference:
    """A logits graph run by onnxruntime and pooled in numpy: the reference when torch is absent."""

    def __init__(self, path: Path, output: str, pooling: str) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.output = output
        self.pooling = pooling

    def __call__(self, batch: Batch) -> np.ndarray:
        (logits,) = self.session.run([self.output], feeds(self.session, batch))
        return pool_logits(logits, batch.attention_mask, self.pooling)


def run_graph(session: ort.InferenceSession, entry: GraphEntry, batch: Batch, vocab_size: int) -> np.ndarray:
    """A fused graph's weights for the batch as dense [B, V] float32 (top-k outputs scattered)."""
    if entry.output == "pooled":
        (weights,) = session.run([POOLED_OUTPUT], feeds(session, batch))
        return weights.astype(np.float32)
    ids, weights = session.run([TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT], feeds(session, batch))
    dense = np.zeros((len(ids), vocab_size), dtype=np.float32)
    np.put_along_axis(dense, ids, weights.astype(np.float32), axis=1)
    return dense


def keep_top_k(weights: np.ndarray, k: int) -> np.ndarray:
    """Zero all but each row's k largest weights (what an in-graph TopK keeps)."""
    cut = np.argpartition(-weights, k - 1, axis=1)[:, k:]
    kept = weights.copy()
    np.put_along_axis(kept, cut, 0.0, axis=1)
    return kept


def compare(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """Worst-case agreement over rows of two dense [N, V] weight matrices."""
    dot = (reference.astype(np.float64) * candidate).sum(1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    # Two empty vectors agree; one empty vector against a non-empty one has cosine 0 (dot is 0).
    both_empty = ~reference.any(1) & ~candidate.any(1)
    cosine = np.where(both_empty, 1.0, dot / np.maximum(norms, np.finfo(np.float64).tiny))
    ref_active, cand_active = reference > 0, candidate > 0
    union = (ref_active | cand_active).sum(1)
    jaccard = np.where(union > 0, (ref_active & cand_active).sum(1) / np.maximum(union, 1), 1.0)
    overlaps = []
    for ref_row, cand_row, active in zip(reference, candidate, ref_active.sum(1)):
        k = min(TOP_OVERLAP, int(active))
        if k == 0:
            overlaps.append(1.0)
            continue
        top_ref = np.argpartition(-ref_row, k - 1)[:k]
        top_cand = np.argpartition(-cand_row, k - 1)[:k]
        top_cand = top_cand[cand_row[top_cand] > 0]
        overlaps.append(len(np.intersect1d(top_ref, top_cand)) / k)
    return Metrics(max_abs_diff=float(np.abs(reference - candidate).max()), min_cosine=float(cosine.min()),
                   min_jaccard=float(jaccard.min()), min_top50_overlap=float(min(overlaps)),
                   mean_active=float(cand_active.sum(1).mean()))


def passes(precision: str, metrics: Metrics, thresholds: Thresholds) -> bool:
    if precision == "fp32":
        return metrics.max_abs_diff <= thresholds.fp32_max_abs_diff
    bound = thresholds.int8_min_cosine if precision == "int8" else thresholds.fp16_min_cosine
    return metrics.min_cosine >= bound


def check_parity(reference: Reference, graphs: dict[str, tuple[Path, GraphEntry]], batches: list[Batch], *,
                 vocab_size: int, special_ids: Sequence[int], thresholds: Thresholds) -> dict:
    """Compare each precision's graph with the reference on the batches; the report says what passed.

    Special tokens are zeroed on both sides (the runtime drops them). A graph that onnxruntime cannot
    run here (fp16 on CPU, say) is recorded with its error and does not fail the check.
    """
    specials = list(special_ids)
    expected = np.concatenate([reference(batch) for batch in batches])
    expected[:, specials] = 0.0
    report: dict = {}
    for precision, (path, entry) in graphs.items():
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = np.concatenate([run_graph(session, entry, batch, vocab_size) for batch in batches])
        except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses per failure kind
            report[precision] = {"path": entry.path, "ran": False, "error": f"{type(exc).__name__}: {exc}",
                                 "passed": precision == "fp16"}
            continue
        got[:, specials] = 0.0
        target = expected if entry.top_k is None else keep_top_k(expected, entry.top_k)
        metrics = compare(target, got)
        report[precision] = {"path": entry.path, "ran": True, **asdict(metrics),
                             "passed": passes(precision, metrics, thresholds)}
    return report
