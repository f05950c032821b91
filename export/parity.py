"""Parity check: exported graphs vs a reference, on fixed texts of mixed lengths in mixed batches and on
a fixed built-in retrieval set.

The reference is the torch model with the SPLADE formula (`convert`) or, for `upgrade`, the foreign
logits graph pooled in numpy (`LogitsReference`). Each variant gets, on the parity texts, max abs diff,
active-set Jaccard, min cosine and top-50 overlap, and, on the retrieval set (`retrieval_set`: 30 queries,
200 documents), how well its dot-product rankings agree with the reference's: mean top-10 overlap and
mean per-query correlation of the scores (Pearson, gated; Spearman, reported). `check_parity` applies the
thresholds (`passes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from spladerunner.manifest import MODES, POOLED_OUTPUT, TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT, GraphEntry
from spladerunner.tokenization import Batch, encode
from spladerunner_export.retrieval_set import DOCUMENTS, QUERIES

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
RANK_DEPTH = 10  # the ranking overlap is measured at this depth
TIE_TOLERANCE = 0.01  # relative to the reference's 10th score: closer scores count as ties (`Agreement`)
RETRIEVAL_BATCH = 16

Reference = Callable[[Batch], np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    """Pass bounds. Retrieval agreement on the built-in set is the main criterion, for every precision:
    tolerant top-10 overlap and mean per-query Pearson correlation of the scores (`Agreement`). fp32 must also match
    the reference numerically (max abs diff). int8 and fp16 must keep a min cosine on the parity texts:
    a loose sanity bound, not a judge of quantisation noise, which covers what the short retrieval
    documents do not (texts up to the document max length, batches of 5).

    Set from measurements (README, Exporting models, has the table). Good graphs: the real splade-tiny's
    dynamic int8 has tolerant overlap 0.96, Pearson 0.997, min cosine 0.996; the random-init test models'
    int8 0.95-1.0, 0.9997-1.0, 0.9997; fp16 1.0, 0.999999, 0.999999. Broken graphs edited from splade-tiny's
    fp32 export: sum or mean pooling 0.18-0.24, 0.20-0.25, 0; 8 of the decoder's 128 input rows zeroed 0.83,
    0.95, 0.93; decoder weights plus noise of 0.3 (0.1) times their std 0.78 (0.93), 0.91 (0.992), 0.80
    (0.977). Spearman is reported but not gated: it mostly judges the order of the many documents scored
    near 0, near-ties on random-init models (SparsEmbed test model's int8: Spearman 0.64, Pearson 1.0,
    tolerant overlap 1.0).
    """

    fp32_max_abs_diff: float = 1e-4
    int8_min_cosine: float = 0.98
    fp16_min_cosine: float = 0.99
    min_tolerant_overlap_at_10: float = 0.9
    min_score_pearson: float = 0.98

@dataclass(frozen=True)
class Metrics:
    """Worst case over the parity texts of one graph against the reference."""

    max_abs_diff: float
    min_cosine: float
    min_jaccard: float
    min_top50_overlap: float
    mean_active: float


@dataclass(frozen=True)
class Agreement:
    """Retrieval agreement of a graph with the reference on the built-in set: all documents ranked by dot
    product for each query; means over queries (and the worst query's plain overlap).

    `overlap_at_10` is the plain |top-10 ∩ top-10| / 10. `tolerant_overlap_at_10`, which the gate uses,
    also counts a document of the graph's top 10 that the reference scores within `TIE_TOLERANCE` of its
    own 10th score: swapping documents the reference cannot tell apart is no disagreement. Rankings of
    random-init test models are full of such near-ties (median gap between the 10th and 11th score 0.07%,
    vs 4% on splade-tiny), where the plain overlap of an int8 graph with cosine 0.9997 is 0.84.
    """

    overlap_at_10: float
    worst_overlap_at_10: float
    tolerant_overlap_at_10: float
    score_spearman: float
    score_pearson: float


@dataclass(frozen=True)
class RetrievalBatches:
    """The built-in queries (at the query max length) and documents (at the document max length), batched."""

    queries: list[Batch]
    documents: list[Batch]


def parity_batches(tokenizer: Tokenizer, max_length: int, texts: Sequence[str] = PARITY_TEXTS) -> list[Batch]:
    """Every text alone (batch 1), then again in unsorted batches of 5 so that padding is exercised."""
    encoded = encode(tokenizer, texts, max_length)
    rows = np.arange(len(texts))
    groups = [rows[i:i + size] for size in BATCH_SIZES for i in range(0, len(rows), size)]
    return [_pad([encoded.ids[r] for r in group], group) for group in groups]


def retrieval_batches(tokenizer: Tokenizer, max_length: dict[str, int], queries: Sequence[str] = QUERIES,
                      documents: Sequence[str] = DOCUMENTS) -> RetrievalBatches:
    """The retrieval set in batches of `RETRIEVAL_BATCH` texts, in order (padding exercised again)."""
    def batched(texts: Sequence[str], length: int) -> list[Batch]:
        encoded = encode(tokenizer, texts, length)
        return [_pad(encoded.ids[i:i + RETRIEVAL_BATCH], np.arange(i, min(i + RETRIEVAL_BATCH, len(texts))))
                for i in range(0, len(texts), RETRIEVAL_BATCH)]

    return RetrievalBatches(batched(queries, max_length["query"]), batched(documents, max_length["document"]))


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


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their mean rank (what Spearman's correlation needs)."""
    order = np.argsort(scores, axis=-1, kind="stable")
    ranks = np.empty(scores.shape, dtype=np.float64)
    for row, (values, sort) in enumerate(zip(scores, order)):
        sorted_values = values[sort]
        starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
        ends = np.r_[starts[1:], len(values)]
        ranks[row, sort] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b (1 where both rows are constant)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = ~a.any(1) & ~b.any(1)
    return np.where(same, 1.0, (a * b).sum(1) / np.maximum(norms, np.finfo(np.float64).tiny))


def retrieval_agreement(reference_queries: np.ndarray, reference_documents: np.ndarray, queries: np.ndarray,
                        documents: np.ndarray, depth: int = RANK_DEPTH, tolerance: float = TIE_TOLERANCE) -> Agreement:
    """How the graph's rankings of the documents for each query agree with the reference's (`Agreement`).

    The reference's top counts only documents it scores above 0 (ties at 0 have no order to agree on),
    so a query matching k < depth documents is judged at depth k; one that matches none agrees when the
    graph's scores match none either. Correlations are of the [queries, documents] score matrices row by
    row: Spearman on ranks (mean ranks for ties), Pearson on the scores.
    """
    expected = reference_queries.astype(np.float64) @ reference_documents.astype(np.float64).T
    got = queries.astype(np.float64) @ documents.astype(np.float64).T
    plain, tolerant = [], []
    for ref_row, got_row in zip(expected, got):
        k = min(depth, int((ref_row > 0).sum()))
        if k == 0:
            plain.append(float(not (got_row > 0).any()))
            tolerant.append(plain[-1])
            continue
        top_ref = np.argsort(-ref_row, kind="stable")[:k]
        top_got = np.argsort(-got_row, kind="stable")[:k]
        plain.append(len(np.intersect1d(top_ref, top_got)) / k)
        cut = ref_row[top_ref[-1]] * (1 - tolerance)
        tolerant.append(float(np.mean(ref_row[top_got] >= cut)))
    spearman = _row_correlation(_ranks(expected), _ranks(got))
    pearson = _row_correlation(expected, got)
    return Agreement(overlap_at_10=float(np.mean(plain)), worst_overlap_at_10=float(min(plain)),
                     tolerant_overlap_at_10=float(np.mean(tolerant)), score_spearman=float(spearman.mean()),
                     score_pearson=float(pearson.mean()))


def passes(precision: str, metrics: Metrics, thresholds: Thresholds, agreement: Agreement | None = None) -> bool:
    """The gate: retrieval agreement (when measured) for every precision, then max abs diff for fp32 and
    the cosine sanity bound for int8 and fp16."""
    if agreement is not None and (agreement.tolerant_overlap_at_10 < thresholds.min_tolerant_overlap_at_10
                                  or agreement.score_pearson < thresholds.min_score_pearson):
        return False
    if precision == "fp32":
        return metrics.max_abs_diff <= thresholds.fp32_max_abs_diff
    bound = thresholds.int8_min_cosine if precision == "int8" else thresholds.fp16_min_cosine
    return metrics.min_cosine >= bound


def _weights(reference: Reference, batches: list[Batch], specials: list[int]) -> np.ndarray:
    weights = np.concatenate([reference(batch) for batch in batches])
    weights[:, specials] = 0.0
    return weights


def check_parity(reference: Reference, graphs: dict[str, tuple[Path, GraphEntry]], batches: list[Batch], *,
                 vocab_size: int, special_ids: Sequence[int], thresholds: Thresholds,
                 retrieval: RetrievalBatches | None = None, modes: Sequence[str] = MODES) -> dict:
    """Compare each precision's graph with the reference on the batches (and on the retrieval set when
    given); the report says what passed.

    Special tokens are zeroed on both sides (the runtime drops them). On the retrieval set a graph encodes
    the side(s) it serves (`modes`: queries, documents); the reference encodes the other side. A graph that
    onnxruntime cannot run here (fp16 on CPU, say) is recorded with its error and does not fail the check.
    """
    specials = list(special_ids)
    expected = _weights(reference, batches, specials)
    if retrieval is not None:
        expected_queries = _weights(reference, retrieval.queries, specials)
        expected_documents = _weights(reference, retrieval.documents, specials)
    report: dict = {}
    for precision, (path, entry) in graphs.items():
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def run(group: list[Batch], session=session, entry=entry) -> np.ndarray:
                got = np.concatenate([run_graph(session, entry, batch, vocab_size) for batch in group])
                got[:, specials] = 0.0
                return got

            got = run(batches)
            if retrieval is not None:
                got_queries = run(retrieval.queries) if "query" in modes else None
                got_documents = run(retrieval.documents) if "document" in modes else None
        except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses per failure kind
            report[precision] = {"path": entry.path, "ran": False, "error": f"{type(exc).__name__}: {exc}",
                                 "passed": precision == "fp16"}
            continue

        def target(weights: np.ndarray, entry=entry) -> np.ndarray:
            return weights if entry.top_k is None else keep_top_k(weights, entry.top_k)

        metrics = compare(target(expected), got)
        agreement = None
        if retrieval is not None:
            ref_queries, ref_documents = target(expected_queries), target(expected_documents)
            agreement = retrieval_agreement(ref_queries, ref_documents,
                                            ref_queries if got_queries is None else got_queries,
                                            ref_documents if got_documents is None else got_documents)
        report[precision] = {"path": entry.path, "ran": True, **asdict(metrics),
                             **(asdict(agreement) if agreement is not None else {}),
                             "passed": passes(precision, metrics, thresholds, agreement)}
    return report
