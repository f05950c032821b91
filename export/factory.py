"""Random-init SPLADE test checkpoints (BERT and DistilBERT masked-LMs) with realistic sparsity.

A freshly initialised masked-LM activates ~29,000 of 30,522 terms per text, which makes every
sparse code path (CSR sizes, top-k, index build) look nothing like production. The factory fixes
that without training: the MLM head's transform starts at the identity and position embeddings
start small, so the tied decoder scores each position's own token far above the rest (as a trained
MLM does); one scalar output bias is bisected on calibration texts (`calibration.BUILTIN`, or the
caller's) until queries keep ~20-60 terms and passages ~100-300 after SPLADE max pooling; the head's
LayerNorm gain scales the logits so a query's top weight is ~2.7, as in SPLADE++. Own tokens only
~1 sigma above the rest would leave active weights so close to the threshold that int8 noise drops
the cosine to 0.997.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertTokenizerFast,
    PreTrainedModel,
)

from spladerunner.loading import open_source
from spladerunner.manifest import DEFAULT_MAX_LENGTH
from spladerunner.tokenization import batches, encode, load_tokenizer, special_token_ids
from spladerunner_export.calibration import BUILTIN, DEFAULT_TOKENIZER, CalibrationTexts
from spladerunner_export.errors import ExportError

Arch = Literal["bert", "distilbert"]
Size = Literal["tiny", "base"]

# (hidden, layers, heads, intermediate): "base" is BERT-base.
SIZES: dict[str, tuple[int, int, int, int]] = {"tiny": (64, 2, 2, 128), "base": (768, 12, 12, 3072)}
QUERY_RANGE = (20, 60)
PASSAGE_RANGE = (100, 300)
# Median top weight of a SPLADE++ ED query (shared splade-queries, impacts / 1000).
QUERY_TOP_WEIGHT = 2.7
# Position and token-type embeddings start this much smaller, so each position's hidden state is
# mostly its own word embedding and the tied decoder puts that token far above the rest.
CONTEXT_SHRINK = 0.1
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Sparsity:
    """Mean active terms (weight > 0, special tokens excluded) per query and per passage."""

    query: float
    passage: float


def tokenizer_json(tokenizer: str | Path) -> Path:
    """The `tokenizer.json` a tokenizer argument names: the file itself, a folder's, or a hub id's (HF cache)."""
    path = Path(tokenizer).expanduser()
    if path.is_file():
        return path
    return open_source(tokenizer).fetch("tokenizer.json")


def make_test_model(folder: str | Path, arch: Arch = "bert", size: Size = "tiny", seed: int = 0, *,
                    tokenizer: str | Path = DEFAULT_TOKENIZER, calibration: CalibrationTexts = BUILTIN) -> Path:
    """Write a seeded, sparsity-calibrated masked-LM checkpoint with a BERT WordPiece tokenizer to `folder`.

    `tokenizer` is a tokenizer.json file, a folder holding one, or a hub id; its vocabulary sizes the
    model. `calibration` holds the texts the output bias is calibrated on. The folder loads with
    `AutoModelForMaskedLM.from_pretrained` (and so sentence-transformers' `SparseEncoder`);
    `calibration.json` records the bias and the measured sparsity.
    """
    folder = Path(folder)
    tokenizer_file = tokenizer_json(tokenizer)
    wordpiece = load_tokenizer(tokenizer_file)
    vocab = wordpiece.get_vocab_size(with_added_tokens=True)
    hidden, layers, heads, intermediate = SIZES[size]
    torch.manual_seed(seed)
    if arch == "bert":
        model: PreTrainedModel = BertForMaskedLM(BertConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate))
        head = model.cls.predictions
        context = [model.bert.embeddings.position_embeddings, model.bert.embeddings.token_type_embeddings]
        transform, gain, bias = head.transform.dense, head.transform.LayerNorm.weight, head.bias
        tokenizer_class = BertTokenizerFast
    elif arch == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(
            vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=intermediate))
        context = [model.distilbert.embeddings.position_embeddings]
        transform, gain, bias = model.vocab_transform, model.vocab_layer_norm.weight, model.vocab_projector.bias
        tokenizer_class = DistilBertTokenizerFast
    else:
        raise ExportError(f"arch must be 'bert' or 'distilbert', got {arch!r}")
    model.eval()
    with torch.no_grad():
        transform.weight.copy_(torch.eye(hidden))
        transform.bias.zero_()
        for embedding in context:
            embedding.weight.mul_(CONTEXT_SHRINK)
        queries = _max_logits(model, wordpiece, list(calibration.queries), DEFAULT_MAX_LENGTH["query"])
        passages = _max_logits(model, wordpiece, list(calibration.passages), DEFAULT_MAX_LENGTH["document"])
        threshold = _calibrate(queries, passages)
        # Logits are linear in the gain (the LayerNorm bias is 0 and the output bias is still 0).
        scale = math.expm1(QUERY_TOP_WEIGHT) / float(np.median(queries.max(1) - threshold))
        gain.mul_(scale)
        bias.fill_(-scale * threshold)
    sparsity = Sparsity(float((queries > threshold).sum(1).mean()), float((passages > threshold).sum(1).mean()))
    model.save_pretrained(folder)
    # vocab.txt is written from tokenizer.json's WordPiece vocabulary.
    tokenizer_class(tokenizer_file=str(tokenizer_file), model_max_length=512).save_pretrained(folder)
    record = {"arch": arch, "size": size, "seed": seed, "logit_scale": scale, "bias": -scale * threshold,
              "calibration": asdict(sparsity)}
    (folder / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return folder


def _max_logits(model: PreTrainedModel, tokenizer: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Per text, the max over its positions of each term's logit [texts, vocab]; specials at -inf."""
    encoded = encode(tokenizer, texts, max_length)
    pooled = np.empty((len(texts), model.config.vocab_size), dtype=np.float32)
    # Padding is masked, so the pad id is arbitrary.
    for batch in batches(encoded, max_tokens=2048, max_batch_size=32, pad_id=0):
        mask = torch.from_numpy(batch.attention_mask)
        logits = model(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).logits
        pooled[batch.rows] = logits.masked_fill(mask[..., None] == 0, -math.inf).amax(1).numpy()
    pooled[:, special_token_ids(tokenizer)] = -np.inf
    return pooled


def _calibrate(queries: np.ndarray, passages: np.ndarray) -> float:
    """The logit threshold whose active counts sit at the (geometric) middle of both target ranges.

    Counts fall as the threshold rises, so bisect on log(query count) + log(passage count).
    """
    target = math.log(math.sqrt(QUERY_RANGE[0] * QUERY_RANGE[1]) * math.sqrt(PASSAGE_RANGE[0] * PASSAGE_RANGE[1]))
    finite = np.concatenate([queries[np.isfinite(queries)], passages[np.isfinite(passages)]])
    low, high = float(finite.min()), float(finite.max())
    for _ in range(60):
        middle = (low + high) / 2
        counts = (queries > middle).sum(1).mean() * (passages > middle).sum(1).mean()
        if math.log(max(counts, 1e-9)) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def measure_sparsity(folder: str | Path, queries: list[str], passages: list[str]) -> Sparsity:
    """Mean active terms of a saved checkpoint on the given texts (SPLADE max pooling)."""
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    tokenizer = load_tokenizer(Path(folder) / "tokenizer.json")
    with torch.no_grad():
        query, passage = (_max_logits(model, tokenizer, texts, length) for texts, length in
                          ((queries, DEFAULT_MAX_LENGTH["query"]), (passages, DEFAULT_MAX_LENGTH["document"])))
    return Sparsity(float((query > 0).sum(1).mean()), float((passage > 0).sum(1).mean()))
