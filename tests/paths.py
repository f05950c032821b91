"""Where the shared test inputs live: `../shared` beside the checkout (CI clones elsewhere)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOKENIZER_DIR = SHARED / "tokenizers" / "bert-base-uncased"
TOKENIZER_JSON = TOKENIZER_DIR / "tokenizer.json"
SCIFACT = SHARED / "data" / "beir-scifact"
SPLADE_QUERIES = SHARED / "data" / "splade-queries"
