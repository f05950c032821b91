"""Expansion on Ray Data, on a real local Ray cluster (2 CPUs): the same vectors as one `Expander`, in order;
Parquet back into `SparseIndex` and the engine formats; bad records; shards resumed after a failure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import ray.data
from paths import SCIFACT

from spladerunner.adapters import anserini_documents, to_qdrant, to_token_weights
from spladerunner.errors import InputError
from spladerunner.expander import Expander
from spladerunner.ray_data import (
    ExpandBatches,
    add_parquet,
    expand_corpus,
    expand_dataset,
    failed_records,
    read_vectors,
)
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch

DOCUMENTS = 40


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module: 2 CPUs, as CI's machine has; no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The test classes below travel to the workers by value: the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for _, line in zip(range(DOCUMENTS), lines)]


@pytest.fixture(scope="module")
def expander(splade_tiny_export: Path) -> Expander:
    return Expander(splade_tiny_export, precision="fp32")


def texts_of(records: list[dict]) -> list[str]:
    return [" ".join(t for t in (r.get("title"), r.get("text")) if t) for r in records]


@pytest.fixture(scope="module")
def expanded(cluster, records, splade_tiny_export) -> ray.data.Dataset:
    """The records expanded by a pool of 2 actors, 8 records per call, over 5 input blocks."""
    ds = ray.data.from_items(records, override_num_blocks=5)
    return expand_dataset(ds, splade_tiny_export, precision="fp32", actors=2, batch_size=8, tokens=True).materialize()


def assert_rows_equal(ids: list, vectors: SparseBatch, expected_ids: list, expected: SparseBatch) -> None:
    assert ids == expected_ids
    np.testing.assert_array_equal(vectors.indptr, expected.indptr)
    np.testing.assert_array_equal(vectors.indices, expected.indices)
    np.testing.assert_allclose(vectors.values, expected.values, rtol=0, atol=1e-5)


def test_expanded_rows_equal_one_expander_in_input_order(expanded, records, expander) -> None:
    rows = expanded.take_all()
    assert [r["_id"] for r in rows] == [r["_id"] for r in records]
    schema = expanded.schema()
    assert schema.names == ["_id", "ids", "weights", "tokens", "truncated", "error"]
    assert [str(t) for t in schema.types[1:4]] == ["list<item: int32>", "list<item: float>", "list<item: string>"]
    expected = expander.expand_batch(texts_of(records))
    for row, vector in zip(rows, expected):
        assert row["error"] is None
        np.testing.assert_array_equal(row["ids"], vector.ids)
        np.testing.assert_allclose(row["weights"], vector.weights, rtol=0, atol=1e-5)
        assert list(row["tokens"]) == [expander.vocab[i] for i in vector.ids]
        assert row["truncated"] == vector.truncated
    assert any(expected.truncated) and not all(expected.truncated)  # the check saw both kinds


def test_parquet_round_trip_searches_like_the_direct_index(expanded, records, expander, tmp_path) -> None:
    expanded.write_parquet(str(tmp_path))
    from_parquet = SparseIndex()
    added = add_parquet(from_parquet, tmp_path, batch_rows=7)  # the files record the vocabulary size
    direct = SparseIndex()
    direct.add_vectors(expander.expand_batch(texts_of(records)), [r["_id"] for r in records])
    assert added == len(records) == len(from_parquet)
    queries = expander.expand_batch([r["title"] for r in records[:10]] + ["cell", "brain imaging"], query=True)
    got, want = from_parquet.search(queries, k=5), direct.search(queries, k=5)
    assert got.ids == want.ids
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    with pytest.raises(InputError, match="holds vectors over a vocabulary of 30522, not 1000"):
        next(read_vectors(tmp_path, vocab_size=1000))


def test_parquet_feeds_the_engine_formats(expanded, records, expander, tmp_path) -> None:
    """Anserini lines, OpenSearch/Elasticsearch objects and Qdrant points from the shards, batch by batch,
    equal the adapters' output for the single-process vectors (keyed by id: Ray names the files)."""
    expanded.write_parquet(str(tmp_path))
    expected = expander.expand_batch(texts_of(records))
    ids = [r["_id"] for r in records]
    want_lines = dict(zip(ids, anserini_documents(ids, expected)))
    want_objects = dict(zip(ids, to_token_weights(expected)))
    want_points = dict(zip(ids, to_qdrant(expected)))
    seen = []
    for batch_ids, vectors in read_vectors(tmp_path, vocab=expander.vocab, batch_rows=16):
        for doc_id, line, obj, point in zip(batch_ids, anserini_documents(batch_ids, vectors),
                                            to_token_weights(vectors), to_qdrant(vectors)):
            assert json.loads(line)["vector"] == json.loads(want_lines[doc_id])["vector"]
            assert obj.keys() == want_objects[doc_id].keys()
            np.testing.assert_allclose(list(obj.values()), list(want_objects[doc_id].values()), atol=1e-5)
            assert point.indices == want_points[doc_id].indices
            np.testing.assert_allclose(point.values, want_points[doc_id].values, atol=1e-5)
            seen.append(doc_id)
    assert sorted(seen) == sorted(ids)


class PoisonedExpandBatches(ExpandBatches):
    """A model that fails on texts holding "POISON" (a stand-in for a record onnxruntime cannot run)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        expand_batch = self.expander.expand_batch

        def failing(texts, **options):
            if any("POISON" in t for t in texts):
                raise RuntimeError("poisoned text")
            return expand_batch(texts, **options)

        self.expander.expand_batch = failing


def test_bad_records_fail_alone_and_are_reported(cluster, records, splade_tiny_export, expander, tmp_path) -> None:
    texts = ["A fine text.", 5, None, "", "POISON pill", "café \ud800", "Another fine one.", float("nan")]
    frame = pd.DataFrame({"_id": [f"d{i}" for i in range(len(texts))], "text": pd.Series(texts, dtype=object)})
    ds = ray.data.from_pandas(frame).map_batches(
        PoisonedExpandBatches, fn_constructor_args=(splade_tiny_export,),
        fn_constructor_kwargs={"text_columns": ["text"], "precision": "fp32"}, batch_format="numpy",
        batch_size=len(texts), compute=ray.data.ActorPoolStrategy(size=1))
    rows = ds.take_all()
    errors = {r["_id"]: r["error"] for r in rows if r["error"] is not None}
    assert errors.keys() == {"d1", "d4", "d5"}
    assert "column 'text' holds int, expected str" in errors["d1"]
    assert errors["d4"] == "RuntimeError: poisoned text"
    assert "lone surrogate" in errors["d5"]
    good = expander.expand_batch(["A fine text.", "Another fine one."])
    for row in rows:
        if row["_id"] in ("d0", "d6"):
            vector = good[0 if row["_id"] == "d0" else 1]
            np.testing.assert_array_equal(row["ids"], vector.ids)
            np.testing.assert_allclose(row["weights"], vector.weights, atol=1e-5)
        else:  # failed, missing (None, pandas' NaN) and empty texts: empty vectors
            assert len(row["ids"]) == len(row["weights"]) == 0

    ds.write_parquet(str(tmp_path))
    assert sorted(failed_records(tmp_path)) == sorted(errors.items())
    with pytest.raises(InputError, match=r"3 record\(s\) failed expansion.*errors='skip'"):
        next(read_vectors(tmp_path, vocab_size=expander.manifest.vocab_size))
    kept = [i for batch_ids, _ in read_vectors(tmp_path, vocab_size=expander.manifest.vocab_size, errors="skip")
            for i in batch_ids]
    assert sorted(kept) == ["d0", "d2", "d3", "d6", "d7"]


def write_corpus(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_a_corpus_resumes_at_shard_granularity(cluster, records, splade_tiny_export, expander, tmp_path) -> None:
    """A run that fails in its third shard (a broken line) keeps the two before; the re-run after the fix
    computes only the third; a deleted shard is the only one a later run recomputes."""
    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "out"
    lines = [json.dumps(r) for r in records[:30]]
    corpus.write_text("\n".join(lines[:24] + ['{"_id": "broken", "text": '] + lines[25:]) + "\n", encoding="utf-8")
    options = {"shard_size": 10, "actors": 2, "batch_size": 4, "precision": "fp32"}
    with pytest.raises(InputError, match=r"corpus\.jsonl:25: not valid JSON"):
        expand_corpus(corpus, out, splade_tiny_export, **options)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.json", "shard-00000.parquet",
                                                     "shard-00001.json", "shard-00001.parquet"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    write_corpus(corpus, records[:30])
    run = expand_corpus(corpus, out, splade_tiny_export, **options)
    assert (run.shards, run.computed, run.skipped, run.records, run.failed) == (3, [2], [0, 1], 30, [])
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in before.items())

    (out / "shard-00001.parquet").unlink()
    run = expand_corpus(corpus, out, splade_tiny_export, **options)
    assert (run.computed, run.skipped) == ([1], [0, 2])
    vectors = list(read_vectors(out, vocab_size=expander.manifest.vocab_size))
    assert_rows_equal([i for ids, _ in vectors for i in ids], SparseBatch.concat([v for _, v in vectors]),
                      [r["_id"] for r in records[:30]], expander.expand_batch(texts_of(records[:30])))

    # A changed line makes its shard stale; a shorter input drops the shards past its end.
    write_corpus(corpus, [{**records[0], "text": "changed"}] + records[1:12])
    run = expand_corpus(corpus, out, splade_tiny_export, **options)
    assert (run.shards, run.computed, run.skipped, run.records) == (2, [0, 1], [], 12)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.json", "shard-00000.parquet",
                                                           "shard-00001.json", "shard-00001.parquet"]


def test_windowed_shards_hold_the_expanders_vectors_and_record_the_norm(cluster, records, splade_tiny_export,
                                                                       tmp_path) -> None:
    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "out"
    write_corpus(corpus, records[:8])
    options = {"precision": "fp32", "document_max_length": 64, "long_documents": "windows"}
    expand_corpus(corpus, out, splade_tiny_export, shard_size=8, batch_size=4, **options)
    expander = Expander(splade_tiny_export, **options)
    expected = expander.expand_batch(texts_of(records[:8]))
    assert expected.windows.min() > 1
    ids, vectors = next(read_vectors(out, vocab_size=expander.manifest.vocab_size))
    assert_rows_equal(ids, vectors, [r["_id"] for r in records[:8]], expected)
    marker = json.loads((out / "shard-00000.json").read_text())
    assert marker["options"]["expander_options"]["window_norm"] == "0.25"  # the default, recorded


def test_the_command_expands_a_corpus_and_reports_bad_records(cluster, records, splade_tiny_export, expander,
                                                               tmp_path, capsys) -> None:
    from spladerunner.cli import main

    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "out"
    rows = [dict(r, _id=f"x{i}") for i, r in enumerate(records[:12])]
    rows[5]["text"] = 5
    write_corpus(corpus, rows)
    argv = ["expand", "--ray", "--address", cluster, str(corpus), "-o", str(out), "--model", str(splade_tiny_export),
            "--precision", "fp32", "--shard-size", "8", "--actors", "2", "--batch-size", "4",
            "--text-field", "title", "--text-field", "text", "--keys", "ids"]
    assert main(argv) == 1
    stderr = capsys.readouterr().err
    assert "12 records in 2 shards (2 expanded now, 0 already complete)" in stderr
    assert "error: 1 record(s) failed" in stderr and "x5: column 'text' holds int, expected str" in stderr
    good = [r for i, r in enumerate(rows) if i != 5]
    vectors = list(read_vectors(out, vocab_size=expander.manifest.vocab_size, errors="skip"))
    assert_rows_equal([i for ids, _ in vectors for i in ids], SparseBatch.concat([v for _, v in vectors]),
                      [r["_id"] for r in good], expander.expand_batch(texts_of(good)))
    assert main(argv) == 1  # the failed record stays reported; nothing is expanded again
    assert "(0 expanded now, 2 already complete)" in capsys.readouterr().err


def test_a_killed_command_resumes(cluster, records, splade_tiny_export, expander, tmp_path) -> None:
    """SIGKILL the command once its first shard is complete: the re-run keeps that shard and does the rest."""
    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "out"
    write_corpus(corpus, records[:20])
    argv = ["expand", "--ray", "--address", cluster, str(corpus), "-o", str(out), "--model", str(splade_tiny_export),
            "--precision", "fp32", "--shard-size", "10", "--text-field", "title", "--text-field", "text"]
    command = subprocess.Popen([sys.executable, "-m", "spladerunner", *argv], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "shard-00000.json").exists() and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    command.kill()
    command.wait()
    assert (out / "shard-00000.json").exists() and not (out / "shard-00001.json").exists()
    run = expand_corpus(corpus, out, splade_tiny_export, shard_size=10, precision="fp32", id_field="id", tokens=True)
    assert (run.computed, run.skipped) == ([1], [0])
    assert not list(out.glob(".*"))  # no temporary file of the killed run is left
    vectors = list(read_vectors(out, vocab_size=expander.manifest.vocab_size))
    assert_rows_equal([i for ids, _ in vectors for i in ids], SparseBatch.concat([v for _, v in vectors]),
                      [r["_id"] for r in records[:20]], expander.expand_batch(texts_of(records[:20])))


def test_text_lines_are_texts_numbered_from_zero(cluster, splade_tiny_export, expander, tmp_path) -> None:
    lines = ["what causes the seasons", "", "why is the sky blue", "  ", "penguins"]
    corpus = tmp_path / "queries.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = expand_corpus(corpus, tmp_path / "out", splade_tiny_export, query=True, top_k=8, precision="fp32")
    assert (run.shards, run.records, run.failed) == (1, 5, [])
    [(ids, vectors)] = read_vectors(tmp_path / "out")
    assert_rows_equal(ids, vectors, ["0", "1", "2", "3", "4"], expander.expand_batch(lines, query=True, top_k=8))
    assert list(vectors.nnz[[1, 3]]) == [0, 0]
