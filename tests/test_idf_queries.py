"""Inference-free queries: tokenizer + IDF table, and no onnxruntime anywhere near it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED, TOKENIZER_JSON

from spladerunner.idf_queries import IdfQueryEncoder, load_idf

IDF = SHARED / "idf" / "opensearch-neural-sparse-v1" / "idf.json"


@pytest.fixture(scope="module")
def encoder() -> IdfQueryEncoder:
    return IdfQueryEncoder(TOKENIZER_JSON, IDF)


def test_weights_are_the_table_values_of_distinct_tokens(encoder: IdfQueryEncoder) -> None:
    table = json.loads(IDF.read_text())
    batch = encoder.expand_batch(["What do goldfish eat? Goldfish eat flakes.", "", "[CLS] [SEP]"])
    assert batch.nnz[1:].tolist() == [0, 0]  # empty text; special tokens only
    vector = batch[0]
    tokens = encoder.tokenizer.encode("What do goldfish eat? Goldfish eat flakes.", add_special_tokens=False).tokens
    assert set(vector.to_dict()) == set(tokens)
    for token, weight in vector.to_dict().items():
        assert weight == pytest.approx(table[token])
    assert vector.ids.tolist() == sorted(set(vector.ids.tolist()))


def test_missing_token_policy() -> None:
    table = {"cat": 3.0, "dog": 0.0}
    default = IdfQueryEncoder(TOKENIZER_JSON, table).expand_batch(["cat dog bird"])[0].to_dict()
    assert default == {"cat": 3.0, "bird": 1.0}  # dog's 0 weight drops it; bird is missing -> 1.0
    dropped = IdfQueryEncoder(TOKENIZER_JSON, table, missing_weight=None).expand_batch(["cat dog bird"])[0].to_dict()
    assert dropped == {"cat": 3.0}
    custom = IdfQueryEncoder(TOKENIZER_JSON, table, missing_weight=0.5).expand_batch(["bird"])[0].to_dict()
    assert custom == {"bird": 0.5}


def test_documents_and_bad_tables_are_refused(encoder: IdfQueryEncoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queries only"):
        encoder.expand_batch(["a document"], query=False)
    (tmp_path / "bad.json").write_text(json.dumps({"cat": -1}))
    with pytest.raises(ValueError, match="'cat'"):
        load_idf(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_idf(tmp_path / "missing.json")


def test_retrieves_through_an_index(encoder: IdfQueryEncoder) -> None:
    from spladerunner.retrieval import SparseIndex

    docs = encoder.expand_batch(["goldfish grow in ponds", "the bluetooth standard", "wifi networks"])
    index = SparseIndex(encoder)
    index.add_vectors(docs, ["fish", "bt", "wifi"])
    assert index.search(["do goldfish grow", "what is wifi"]).ids == [["fish"], ["wifi"]]
    assert np.all(docs.values > 0)


def test_never_imports_onnxruntime() -> None:
    script = f"""
import sys
from spladerunner.idf_queries import IdfQueryEncoder
from spladerunner.retrieval import SparseIndex
encoder = IdfQueryEncoder({str(TOKENIZER_JSON)!r}, {str(IDF)!r})
batch = encoder.expand_batch(["inference free query"])
assert len(batch[0]) > 0
index = SparseIndex(encoder, kernel="numpy")  # numba (the [fast] kernel) imports scipy itself
index.add_vectors(batch)
index.search(["free query"])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("onnxruntime", "torch", "scipy")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
