"""Where the shared test inputs live: `../shared` beside the checkout (CI clones elsewhere).

The only place the tests know that layout; the export toolkit takes these inputs as arguments.
"""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOKENIZER_DIR = SHARED / "tokenizers" / "bert-base-uncased"
TOKENIZER_JSON = TOKENIZER_DIR / "tokenizer.json"
SCIFACT = SHARED / "data" / "beir-scifact"
# A BEIR-layout subset of TREC DL 2019 (MS MARCO passages): graded qrels, relevance 1-3.
DL19 = SHARED / "data" / "msmarco-dl19-subset"
SPLADE_QUERIES = SHARED / "data" / "splade-queries"
# rasyosef/splade-tiny: a real trained SPLADE (BERT-Tiny, 2 layers, hidden 128), Hugging Face masked-LM folder.
SPLADE_TINY = SHARED / "models" / "splade-tiny"


def _jsonl(path: Path, start: int, count: int) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shared data not found (expected ../shared beside the repository)")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for i, line in enumerate(lines) if start <= i < start + count]


def scifact_queries(start: int = 0, count: int = 24) -> list[str]:
    """SciFact query texts [start, start+count): the first 24 calibrate the test models."""
    return [row["text"] for row in _jsonl(SCIFACT / "queries.jsonl", start, count)]


def scifact_passages(start: int = 0, count: int = 8) -> list[str]:
    """SciFact passages (title + abstract) [start, start+count): the first 8 calibrate the test models."""
    return [f"{row['title']} {row['text']}" for row in _jsonl(SCIFACT / "corpus.jsonl", start, count)]
