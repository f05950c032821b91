"""Benchmark texts: SciFact documents and queries, and synthetic texts of an exact token length.

`SHARED` is the one place the benchmarks know where the shared data lives (`../shared` beside the checkout).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCIFACT = SHARED / "data" / "beir-scifact"
TOKENIZER = SHARED / "tokenizers" / "bert-base-uncased" / "tokenizer.json"
# The real trained model (rasyosef/splade-tiny): the second benchmark model, and the quality benchmark's.
SPLADE_TINY = SHARED / "models" / "splade-tiny"


def _rows(path: Path, count: int) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shared data not found (expected ../shared beside the repository)")
    rows: list[dict] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if len(rows) == count:
                break
            rows.append(json.loads(line))
    return rows


def documents(count: int) -> list[str]:
    """The first `count` SciFact documents, title + " " + abstract."""
    return [f"{row['title']} {row['text']}" for row in _rows(SCIFACT / "corpus.jsonl", count)]


def queries(count: int) -> list[str]:
    """The first `count` SciFact queries."""
    return [row["text"] for row in _rows(SCIFACT / "queries.jsonl", count)]


@lru_cache(maxsize=1)
def _single_token_words() -> tuple[str, ...]:
    """Lower-case whole words that the BERT tokenizer keeps as one token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    candidates = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and w.isascii() and len(w) > 3)
    encoded = tokenizer.encode_batch(candidates, add_special_tokens=False)
    return tuple(w for w, e in zip(candidates, encoded) if len(e.ids) == 1)


def calibration_texts():
    """What the benchmark model is calibrated on: SciFact queries 0-23 and documents 0-7 (as the tests' models)."""
    from spladerunner_export.calibration import CalibrationTexts

    return CalibrationTexts(tuple(queries(24)), tuple(documents(8)))


def fixed_length(count: int, tokens: int, seed: int = 0) -> list[str]:
    """`count` texts of random single-token words that encode to exactly `tokens` ids ([CLS] and [SEP] included)."""
    if tokens < 3:
        raise ValueError("a fixed-length text needs at least 3 tokens (two are [CLS] and [SEP])")
    words = _single_token_words()
    generator = random.Random(seed * 100_003 + tokens)
    return [" ".join(generator.choices(words, k=tokens - 2)) for _ in range(count)]


def load(spec: dict) -> list[str]:
    """Texts from a JSON spec: {"kind": "documents"|"queries", "count"} or {"kind": "fixed", "count", "tokens"}."""
    if spec["kind"] == "fixed":
        return fixed_length(spec["count"], spec["tokens"], spec.get("seed", 0))
    return {"documents": documents, "queries": queries}[spec["kind"]](spec["count"])
