"""Metrics against pytrec_eval / ir-measures, BEIR loading, FLOPS and the eval command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from paths import SCIFACT, TOKENIZER_JSON

from spladerunner.cli import main
from spladerunner.evaluation import (
    active_dims,
    evaluate,
    flops,
    load_beir,
    markdown_table,
    parse_metric,
)
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch


def random_run_and_qrels(seed: int) -> tuple[dict, dict]:
    """Graded qrels, runs with tied scores, a query without relevant docs, one the run misses."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(40):
        judged = rng.choice(docs, size=rng.integers(1, 12), replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(0, 4)) for d in judged}
        retrieved = rng.choice(docs, size=rng.integers(5, 50), replace=False)
        run[f"q{q}"] = {d: float(rng.integers(0, 8)) / 2 for d in retrieved}  # many ties
    qrels["q0"] = {d: 0 for d in qrels["q0"]}
    qrels["missing"] = {"d1": 2}
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytrec_eval(seed: int) -> None:
    import pytrec_eval as pytrec_eval
    run, qrels = random_run_and_qrels(seed)
    ours = evaluate(run, qrels, ["ndcg@10", "ndcg@5", "recall@10", "recall@100", "map", "map@20", "mrr@10"])
    measures = {"ndcg_cut.5,10", "recall.10,100", "map", "map_cut.20", "recip_rank"}
    # pytrec_eval skips queries the run lacks; ours counts them as 0 (trec_eval -c). Compare on the run's
    # queries with a relevant document, then check the missing one separately.
    judged = {q: j for q, j in qrels.items() if q in run and max(j.values()) >= 1}
    theirs = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(run)
    top10 = {q: dict(sorted(d.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10]) for q, d in run.items()}
    rr10 = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    mean = {name: np.mean([v[name] for v in theirs.values()]) for name in next(iter(theirs.values()))}
    n = len(judged) + 1  # + the query missing from the run
    scale = len(judged) / n
    for ours_name, their_value in [("ndcg@10", mean["ndcg_cut_10"]), ("ndcg@5", mean["ndcg_cut_5"]),
                                   ("recall@10", mean["recall_10"]), ("recall@100", mean["recall_100"]),
                                   ("map", mean["map"]), ("map@20", mean["map_cut_20"]),
                                   ("mrr@10", np.mean([v["recip_rank"] for v in rr10.values()]))]:
        assert ours[ours_name] == pytest.approx(their_value * scale, abs=1e-9), ours_name


def test_metrics_match_ir_measures() -> None:
    import ir_measures as ir_measures
    run, qrels = random_run_and_qrels(3)
    del qrels["missing"]
    # RR@10 comes from ir-measures' MS MARCO provider, whose tie order is not trec_eval's: no ties here.
    run = {q: {d: s + int(d[1:]) * 1e-3 for d, s in docs.items()} for q, docs in run.items()}
    judged = {q: j for q, j in qrels.items() if max(j.values()) >= 2}
    ours = evaluate(run, judged, ["ndcg@10", "mrr@10", "recall@20", "map"], relevance_level=2)
    theirs = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10, ir_measures.RR(rel=2) @ 10, ir_measures.R(rel=2) @ 20, ir_measures.AP(rel=2)],
        judged, run)
    assert ours["ndcg@10"] == pytest.approx(theirs[ir_measures.nDCG @ 10], abs=1e-9)
    assert ours["mrr@10"] == pytest.approx(theirs[ir_measures.RR(rel=2) @ 10], abs=1e-9)
    assert ours["recall@20"] == pytest.approx(theirs[ir_measures.R(rel=2) @ 20], abs=1e-9)
    assert ours["map"] == pytest.approx(theirs[ir_measures.AP(rel=2)], abs=1e-9)


def test_hand_computed_metrics_and_metric_names() -> None:
    qrels = {"q": {"a": 2, "b": 1, "z": 1}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0}}
    result = evaluate(run, qrels, ["mrr@10", "mrr@1", "recall@2", "map", "ndcg@3"])
    assert result["mrr@10"] == 0.5 and result["mrr@1"] == 0.0
    assert result["recall@2"] == pytest.approx(1 / 3)
    assert result["map"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    ideal = 2 + 1 / np.log2(3) + 1 / np.log2(4)
    assert result["ndcg@3"] == pytest.approx((2 / np.log2(3) + 1 / np.log2(4)) / ideal)
    assert parse_metric("NDCG@10") == ("ndcg", 10) and parse_metric("map") == ("map", None)
    for bad in ["ndcg", "p@10", "recall@0", "mrr@x"]:
        with pytest.raises(ValueError):
            parse_metric(bad)


def test_flops_and_active_dims() -> None:
    queries = SparseBatch(np.array([0, 2, 3]), np.array([0, 1, 1], np.int32), np.ones(3, np.float32), 4)
    docs = SparseBatch(np.array([0, 1, 3, 6]), np.array([1, 0, 1, 0, 1, 3], np.int32), np.ones(6, np.float32), 4)
    # p_q = [1/2, 1, 0, 0], p_d = [2/3, 1, 0, 1/3]
    assert flops(queries, docs) == pytest.approx(0.5 * 2 / 3 + 1.0)
    index = SparseIndex()
    index.add_vectors(docs)
    assert flops(queries, index) == pytest.approx(flops(queries, docs))
    assert active_dims(queries) == 1.5 and active_dims(docs) == 2.0 and active_dims(index) == 2.0
    index.delete(["2"])
    assert active_dims(index) == 1.5


def test_load_beir_scifact() -> None:
    data = load_beir(SCIFACT)
    assert len(data.corpus) == 5183 and len(data.queries) == 300 and sum(map(len, data.qrels.values())) == 339
    ids, texts = data.judged_queries()
    assert len(ids) == 300 and texts[0] == data.queries[ids[0]]
    assert {"_id", "title", "text"} <= set(data.corpus[0])
    with pytest.raises(FileNotFoundError, match="qrels/dev.tsv"):
        load_beir(SCIFACT, "dev")


def test_markdown_table() -> None:
    table = markdown_table({"scifact": {"ndcg@10": 0.67123, "note": "bm25"}})
    assert table.splitlines() == ["| | ndcg@10 | note |", "|---|---:|---:|", "| scifact | 0.6712 | bm25 |"]


def test_eval_command_on_a_small_beir_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_beir(SCIFACT)
    qids = list(data.qrels)[:30]
    keep = {d for q in qids for d in data.qrels[q]} | {d["_id"] for d in data.corpus[:300]}
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in data.corpus if d["_id"] in keep))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": data.queries[q]}) + "\n"
                                                  for q in qids))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in qids for d, r in data.qrels[q].items()))
    args = ["eval", str(folder), "--bm25", "--tokenizer", str(TOKENIZER_JSON),
            "--index", str(tmp_path / "ix"), "--metrics", "ndcg@10", "recall@100"]
    assert main(args) == 0
    first = capsys.readouterr().out
    header, _, row = first.splitlines()
    assert header.startswith("| | encoder | model | precision | weights | ndcg@10 | recall@100 | flops |")
    assert row.split("|")[2:6] == [" bm25 ", " - ", " - ", " float32 "]
    assert float(row.split("|")[6]) > 0.8  # 30 queries against ~330 documents: easy
    assert (tmp_path / "ix" / "index.json").is_file()
    assert main(args) == 0  # second run reuses the saved index and its BM25 metadata
    again = capsys.readouterr()
    assert again.out.splitlines()[2].split("|")[:11] == row.split("|")[:11]
    assert "warning" not in again.err  # SciFact's qrels are binary
