"""`spladerunner index`, `search` and `eval` through the CLI entry point `main()`, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from paths import DL19, SHARED, TOKENIZER_JSON

from spladerunner.cli import main
from spladerunner.evaluation import evaluate, load_beir
from spladerunner.retrieval import SparseIndex

IDF = SHARED / "idf" / "opensearch-neural-sparse-v1" / "idf.json"

CORPUS = [{"_id": "cats", "title": "Cats", "text": "Cats purr when they are content."},
          {"_id": "dogs", "title": "Dogs", "text": "Dogs bark at strangers and chase balls."},
          {"_id": "fish", "text": "Goldfish grow to fit their pond."}]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS) + "\n")
    return path


def test_index_then_search(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "index"
    assert main(["index", str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
                                                 "--weights", "impact"]) == 0
    assert "indexed 3 documents" in capsys.readouterr().err
    index = SparseIndex.load(out)
    assert index.ids == ["cats", "dogs", "fish"] and index.precision == "impact"
    assert index.metadata["encoder"] == "bm25" and index.metadata["n_docs"] == 3

    # The query encoder comes back from the index's metadata: no --bm25 needed.
    assert main(["search", str(out), "why do dogs bark", "goldfish", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["0", "Q0", "dogs", "1"] and lines[-1].split()[:3] == ["1", "Q0", "fish"]

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q7", "text": "purring cats"}) + "\n")
    assert main(["search", str(out), "--queries-file", str(queries),
                 "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["qid"] == "q7" and record["hits"][0]["id"] == "cats"


def test_inference_free_queries_and_custom_fields(corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "index"
    main(["index", str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
          "--text-field", "text", "--idf-queries", str(IDF)])
    assert SparseIndex.load(out).metadata["idf_queries"] == str(IDF.resolve())
    lines_file = tmp_path / "queries.txt"
    lines_file.write_text("chase balls\n\ncontent cats\n")
    main(["search", str(out), "--queries-file", str(lines_file), "-k", "1"])
    assert [line.split()[:3] for line in capsys.readouterr().out.splitlines()] == [["0", "Q0", "dogs"],
                                                                                   ["1", "Q0", "cats"]]


def test_errors_are_one_line_messages_naming_file_and_line(corpus: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def error(*argv: str) -> str:
        assert main(list(argv)) == 1
        return capsys.readouterr().err

    assert "--tokenizer" in error("index", str(corpus), str(tmp_path / "x"), "--bm25")
    bm25 = ["--bm25", "--tokenizer", str(TOKENIZER_JSON)]
    assert "corpus.jsonl:1: no id field 'docid'" in error(
        "index", str(corpus), str(tmp_path / "x"), *bm25, "--id-field", "docid")
    bad = tmp_path / "bad.jsonl"
    for line, message in [("not json", "bad.jsonl:2: not valid JSON"),
                          ("[" * 100_000 + "]" * 100_000, "bad.jsonl:2: JSON nested too deeply"),
                          ('{"_id": ' + "9" * 5000 + ', "text": "x"}', "bad.jsonl:2: unreadable JSON value"),
                          ('{"_id": 1e999, "text": "x"}', "bad.jsonl:2: unreadable JSON value"),
                          ('{"_id": NaN, "text": "x"}', "bad.jsonl:2: unreadable JSON value"),
                          ('{"_id": 2.5, "text": "x"}', "bad.jsonl:2: id 2.5 must be a string or an integer"),
                          ('["a list"]', "bad.jsonl:2: expected a JSON object"),
                          ('{"_id": "b", "text": 7}', "bad.jsonl:2: field 'text' must be a string")]:
        bad.write_text('{"_id": "a", "text": "ok"}\n' + line + "\n")
        assert message in error("index", str(bad), str(tmp_path / "x"), *bm25), line[:30]
    assert not (tmp_path / "x").exists()
    assert "no queries" in error("search", str(tmp_path / "x"))
    assert "not an index folder" in error("search", str(tmp_path), "query")


def test_index_uses_titles_by_default(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`index` joins title and text unless --text-field says otherwise (main() once forced `text` only)."""
    out = tmp_path / "index"
    assert main(["index", str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON)]) == 0
    assert main(["search", str(out), "dogs", "-k", "3", "--format", "jsonl"]) == 0
    # "Dogs" appears in the dogs title and text: BM25 over title + text weighs it more than text alone would.
    with_title = json.loads(capsys.readouterr().out.splitlines()[-1])["hits"][0]
    assert main(["index", str(corpus), str(out), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
                 "--text-field", "text"]) == 0
    assert main(["search", str(out), "dogs", "-k", "3", "--format", "jsonl"]) == 0
    text_only = json.loads(capsys.readouterr().out.splitlines()[-1])["hits"][0]
    assert with_title["id"] == text_only["id"] == "dogs" and with_title["score"] > text_only["score"]
    assert main(["search", str(out), "cats", "-k", "3"]) == 0
    capsys.readouterr()


def test_a_model_index_searches_like_its_expander(tiny_bert_export: Path, corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spladerunner.expander import Expander

    out = tmp_path / "index"
    main(["index", str(corpus), str(out), "--model", str(tiny_bert_export), "--precision", "fp32"])
    assert SparseIndex.load(out).metadata == {"encoder": "model", "model": str(tiny_bert_export.resolve()),
                                              "precision": "fp32"}
    expander = Expander(tiny_bert_export, precision="fp32")
    docs = expander.expand_batch([" ".join(filter(None, [d.get("title"), d["text"]])) for d in CORPUS])
    queries = ["why do dogs bark", "goldfish pond"]
    scores = expander.expand_batch(queries, query=True).to_dense() @ docs.to_dense().T
    expected = [[CORPUS[d]["_id"] for d in np.argsort(-row, kind="stable") if row[d] > 0] for row in scores]
    main(["search", str(out), *queries])  # model and precision come from the index
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [[doc for qid, _, doc, *_ in lines if qid == str(q)] for q in range(2)] == expected


def test_other_json_inputs_name_the_file_and_line(tmp_path: Path) -> None:
    from spladerunner.adapters import read_impact_queries
    from spladerunner.errors import InputError
    from spladerunner.evaluation import load_beir
    from spladerunner.idf_queries import load_idf

    idf = tmp_path / "idf.json"
    for text, message in [("[" * 100_000, "idf.json: JSON nested too deeply"),
                          ('{"a": ' + "9" * 5000 + "}", "idf.json: unreadable JSON value"),
                          ('{"a": true}', "token 'a' has weight True"), ("[]", "expected a JSON object")]:
        idf.write_text(text)
        with pytest.raises(InputError, match=message):
            load_idf(idf)
    queries = tmp_path / "impacts.jsonl"
    queries.write_text('{"qid": 1, "text": "a", "impacts": {"a": 3}}\n\n{"qid": 2, "text": "b", "impacts": [1]}\n')
    with pytest.raises(InputError, match="impacts.jsonl:3: 'impacts' must be an object"):
        read_impact_queries(queries, ["[PAD]", "a", "b"])
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n\n{"text": "no id"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(InputError, match="queries.jsonl:3: no id field '_id'"):
        load_beir(beir)
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    with pytest.raises(InputError, match="test.tsv:2: relevance 'high' is not an integer"):
        load_beir(beir)


@pytest.fixture(scope="module")
def mini_dl19(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 DL19 queries with their graded qrels (1-3), their judged passages and 60 others: a BEIR folder."""
    data = load_beir(DL19)
    qids = list(data.qrels)[:12]
    keep = {d for q in qids for d in data.qrels[q]} | {d["_id"] for d in data.corpus[:60]}
    folder = tmp_path_factory.mktemp("mini-dl19")
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in data.corpus if d["_id"] in keep))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": data.queries[q]}) + "\n"
                                                  for q in qids))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in qids for d, r in data.qrels[q].items()))
    return folder


def table_row(out: str) -> dict[str, str]:
    """The one row of `eval`'s markdown table as {column: cell}."""
    header, _, row = (line.strip("|").split("|") for line in out.splitlines())
    return {h.strip(): c.strip() for h, c in zip(header[1:], row[1:])}


def test_eval_names_the_system_and_writes_json_and_a_trec_run(
        tiny_bert_export: Path, mini_dl19: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spladerunner.expander import Expander

    results, run_file, index = tmp_path / "results.json", tmp_path / "run.trec", tmp_path / "index"
    assert main(["eval", str(mini_dl19), "--model", str(tiny_bert_export), "--relevance-level", "2",
                 "--index", str(index), "--output", str(results), "--run", str(run_file)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # graded qrels, but the level was chosen
    row = table_row(captured.out)
    chosen = Expander(tiny_bert_export).precision  # the default the row must report, not "None"
    assert chosen == "int8"
    assert (row["encoder"], row["model"], row["precision"], row["weights"]) == (
        "model", str(tiny_bert_export.resolve()), chosen, "float32")
    record = json.loads(results.read_text())
    assert {k: record[k] for k in ("dataset", "split", "top_k", "relevance_level", "encoder", "model", "precision")} \
        == {"dataset": str(mini_dl19), "split": "test", "top_k": 100, "relevance_level": 2, "encoder": "model",
            "model": str(tiny_bert_export.resolve()), "precision": "int8"}
    n_docs = sum(1 for _ in (mini_dl19 / "corpus.jsonl").open())
    assert record["index s"] > 0 and record["index docs/s"] == pytest.approx(n_docs / record["index s"], rel=0.01)
    assert float(row["ndcg@10"]) == pytest.approx(record["ndcg@10"], abs=5e-5)

    # The run file holds the ranking that was scored: read back, it gives the same metrics.
    lines = [line.split() for line in run_file.read_text().splitlines()]
    assert all(len(f) == 6 and f[1] == "Q0" and f[5] == "spladerunner" for f in lines)
    run: dict[str, dict[str, float]] = {}
    for qid, _, doc, rank, score, _ in lines:
        assert int(rank) == len(run.setdefault(qid, {})) + 1
        run[qid][doc] = float(score)
    assert list(run) == list(load_beir(mini_dl19).queries)[:len(run)] and 1 <= max(map(len, run.values())) <= 100
    metrics = evaluate(run, load_beir(mini_dl19).qrels, ["ndcg@10", "mrr@10", "recall@100", "map"],
                       relevance_level=2)
    assert metrics == {m: pytest.approx(record[m], abs=1e-12) for m in metrics}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "results.json", "run.trec"]  # no temporaries
    assert "query precision" not in row

    # The saved index searched with fp32 queries: the row says so beside the index's int8.
    assert main(["eval", str(mini_dl19), "--index", str(index), "--precision", "fp32", "--relevance-level", "2"]) == 0
    row = table_row(capsys.readouterr().out)
    assert (row["precision"], row["query model"], row["query precision"]) == (
        "int8", str(tiny_bert_export.resolve()), "fp32")


def test_eval_warns_when_graded_qrels_meet_the_default_level(mini_dl19: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bm25 = ["eval", str(mini_dl19), "--bm25", "--tokenizer", str(TOKENIZER_JSON), "--metrics", "mrr@10", "map"]
    assert main([*bm25, "--index", str(tmp_path / "ix")]) == 0
    default = capsys.readouterr()
    assert "graded relevance (grades up to 3)" in default.err and "--relevance-level 2" in default.err
    row = table_row(default.out)
    assert (row["encoder"], row["model"], row["precision"]) == ("bm25", "-", "-") and float(row["index s"]) > 0
    assert main([*bm25, "--relevance-level", "1"]) == 0  # asked for: no warning
    explicit = capsys.readouterr()
    assert explicit.err == "" and table_row(explicit.out)["mrr@10"] == row["mrr@10"]
    assert main([*bm25, "--relevance-level", "2"]) == 0
    assert table_row(capsys.readouterr().out)["mrr@10"] != row["mrr@10"]  # the level matters on these qrels

    # A reused index was not built here: no time to index, said as "-" and null, never a made-up figure.
    assert main([*bm25, "--index", str(tmp_path / "ix"), "--output", str(tmp_path / "r.json")]) == 0
    assert table_row(capsys.readouterr().out)["index s"] == "-"
    assert json.loads((tmp_path / "r.json").read_text())["index docs/s"] is None
