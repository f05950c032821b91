"""The index and search command functions (the lead wires them into `spladerunner`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED, TOKENIZER_JSON

from spladerunner.retrieval import SparseIndex, add_index_arguments, add_search_arguments, run_index, run_search

IDF = SHARED / "idf" / "opensearch-neural-sparse-v1" / "idf.json"

CORPUS = [{"_id": "cats", "title": "Cats", "text": "Cats purr when they are content."},
          {"_id": "dogs", "title": "Dogs", "text": "Dogs bark at strangers and chase balls."},
          {"_id": "fish", "text": "Goldfish grow to fit their pond."}]


def parse(add_arguments, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS) + "\n")
    return path


def test_index_then_search(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "index"
    assert run_index(parse(add_index_arguments, [str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
                                                 "--weights", "impact"])) == 0
    assert "indexed 3 documents" in capsys.readouterr().err
    index = SparseIndex.load(out)
    assert index.ids == ["cats", "dogs", "fish"] and index.precision == "impact"
    assert index.metadata["encoder"] == "bm25" and index.metadata["n_docs"] == 3

    # The query encoder comes back from the index's metadata: no --bm25 needed.
    assert run_search(parse(add_search_arguments, [str(out), "why do dogs bark", "goldfish", "-k", "2"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["0", "Q0", "dogs", "1"] and lines[-1].split()[:3] == ["1", "Q0", "fish"]

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q7", "text": "purring cats"}) + "\n")
    assert run_search(parse(add_search_arguments, [str(out), "--queries-file", str(queries),
                                                   "--format", "jsonl"])) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["qid"] == "q7" and record["hits"][0]["id"] == "cats"


def test_inference_free_queries_and_custom_fields(corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "index"
    run_index(parse(add_index_arguments, [str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
                                          "--text-field", "text", "--idf-queries", str(IDF)]))
    assert SparseIndex.load(out).metadata["idf_queries"] == str(IDF.resolve())
    lines_file = tmp_path / "queries.txt"
    lines_file.write_text("chase balls\n\ncontent cats\n")
    run_search(parse(add_search_arguments, [str(out), "--queries-file", str(lines_file), "-k", "1"]))
    assert [line.split()[:3] for line in capsys.readouterr().out.splitlines()] == [["0", "Q0", "dogs"],
                                                                                   ["1", "Q0", "cats"]]


def test_errors_are_clear(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--tokenizer"):
        run_index(parse(add_index_arguments, [str(corpus), str(tmp_path / "x"), "--bm25"]))
    with pytest.raises(ValueError, match="no id field"):
        run_index(parse(add_index_arguments, [str(corpus), str(tmp_path / "x"), "--bm25", "--tokenizer",
                                              str(TOKENIZER_JSON), "--id-field", "docid"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        run_index(parse(add_index_arguments, [str(bad), str(tmp_path / "x"), "--bm25", "--tokenizer",
                                              str(TOKENIZER_JSON)]))


def test_a_model_index_searches_like_its_expander(tiny_bert_export: Path, corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spladerunner.expander import Expander

    out = tmp_path / "index"
    run_index(parse(add_index_arguments, [str(corpus), str(out), "--model", str(tiny_bert_export),
                                          "--precision", "fp32"]))
    assert SparseIndex.load(out).metadata == {"encoder": "model", "model": str(tiny_bert_export.resolve()),
                                              "precision": "fp32"}
    expander = Expander(tiny_bert_export, precision="fp32")
    docs = expander.expand_batch([" ".join(filter(None, [d.get("title"), d["text"]])) for d in CORPUS])
    queries = ["why do dogs bark", "goldfish pond"]
    scores = expander.expand_batch(queries, query=True).to_dense() @ docs.to_dense().T
    expected = [[CORPUS[d]["_id"] for d in np.argsort(-row, kind="stable") if row[d] > 0] for row in scores]
    run_search(parse(add_search_arguments, [str(out), *queries]))  # model and precision come from the index
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [[doc for qid, _, doc, *_ in lines if qid == str(q)] for q in range(2)] == expected
