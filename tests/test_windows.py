"""Long documents as overlapping token windows, max-aggregated (`Expander(long_documents="windows")`):
exact against the windows run one by one, whatever the batching, on splade-tiny and the test models;
documents that fit unchanged; memory bounded by the token budget, not by the document's windows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from paths import TOKENIZER_JSON, scifact_passages, scifact_queries

from spladerunner import Expander, InputError, InputTypeError, tokenization
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch
from spladerunner.tokenization import Batch, encode, load_tokenizer, piece_ids, special_frame, window_starts

LONG = scifact_passages(0, 9)  # 150-400 tokens each: several windows at 64 or 128 tokens
TEXTS = LONG + ["", "a short document", "BRCA1 " * 30]


def one_by_one(expander: Expander, texts: list[str], stride: int) -> np.ndarray:
    """The reference: every window of every text run alone (a batch of one, no padding), then the max, times
    (text tokens / window text tokens) ** -window_norm for a text of several windows."""
    encoded = encode(expander.tokenizer, texts, expander.max_length["document"], stride=stride)
    dense = np.zeros((len(texts), expander.manifest.vocab_size), np.float32)
    for ids, owner, blank in zip(encoded.ids, encoded.owner, encoded.blank):
        if blank:
            continue
        ids = np.asarray(ids, dtype=np.int64)[None]
        outputs = expander.session("document").run(Batch(np.zeros(1, np.int64), ids, np.ones_like(ids)))
        row = expander._collect(outputs, top_k=None, threshold=0.0, truncated=np.zeros(1, bool)).to_dense()[0]
        dense[owner] = np.maximum(dense[owner], row)
    room = expander.max_length["document"] - 2
    for text, windows in enumerate(np.bincount(encoded.owner, minlength=len(texts))):
        if windows > 1:
            tokens = len(expander.tokenizer.encode(texts[text], add_special_tokens=False).ids)
            dense[text] *= np.float32((tokens / room) ** -expander.window_norm)
    return dense


@pytest.mark.parametrize("max_length, stride", [(128, 63), (64, 20), (64, 62)])
def test_windows_tile_each_text(max_length, stride):
    tokenizer = load_tokenizer(TOKENIZER_JSON)
    prefix, suffix = special_frame(tokenizer)
    assert prefix.tolist() == [101] and suffix.tolist() == [102]  # [CLS] ... [SEP]
    room = max_length - 2
    windowed = encode(tokenizer, TEXTS, max_length, stride=stride)
    cut = encode(tokenizer, TEXTS, max_length)
    for text, tokens in enumerate(tokenizer.encode_batch(TEXTS, add_special_tokens=False)):
        rows = np.flatnonzero(windowed.owner == text)
        windows = [list(windowed.ids[r]) for r in rows]
        assert windows[0] == list(cut.ids[text])  # the first window is the truncated text, specials included
        assert all(len(w) <= max_length and w[0] == 101 and w[-1] == 102 for w in windows)
        starts = window_starts(len(tokens.ids), room, stride)
        assert [w[1:-1] for w in windows] == [tokens.ids[s:s + room] for s in starts]
        assert starts[-1] + room >= len(tokens.ids) and all(b - a <= stride for a, b in zip(starts, starts[1:]))
        assert not windowed.truncated[rows].any()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("max_tokens, max_batch_size, norm", [(1024, 64, None), (200, 3, 0.0), (64, 1, 0.6)])
def test_splade_tiny_windows_equal_the_max_over_windows_one_by_one(splade_tiny_export, precision, max_tokens,
                                                                     max_batch_size, norm):
    expander = Expander(splade_tiny_export, precision=precision, document_max_length=128, long_documents="windows",
                        window_stride=50, max_tokens=max_tokens, max_batch_size=max_batch_size, window_norm=norm)
    assert expander.window_norm == (0.25 if norm is None else norm)
    batch = expander.expand_batch(TEXTS)
    np.testing.assert_allclose(batch.to_dense(), one_by_one(expander, TEXTS, 50), rtol=0, atol=1e-5)
    assert batch.windows[:len(LONG)].min() > 1 and batch.windows[len(LONG):].tolist() == [1, 1, 1]
    assert not batch.truncated.any()


@pytest.mark.parametrize("model", ["tiny_bert_export", "tiny_distilbert_export", "tiny_bert_topk_export",
                                   "dual_export"])
def test_test_models_windows_equal_the_max_over_windows_one_by_one(request, model):
    expander = Expander(request.getfixturevalue(model), precision="fp32", document_max_length=64,
                        long_documents="windows", max_tokens=300, max_batch_size=5)
    stride = expander.window_stride
    assert stride == 31  # half of the 62 text tokens of a 64-token window
    np.testing.assert_allclose(expander.expand_batch(TEXTS).to_dense(), one_by_one(expander, TEXTS, stride), rtol=0,
                               atol=1e-5)


def test_documents_that_fit_are_unchanged_and_queries_are_cut(splade_tiny_export):
    windows = Expander(splade_tiny_export, precision="fp32", long_documents="windows")
    cut = Expander(splade_tiny_export, precision="fp32")
    short = scifact_passages(10, 30)
    fits = ~cut.expand_batch(short).truncated
    assert 0 < fits.sum() < len(short)  # some fit in 256 tokens, some do not
    got, expected = windows.expand_batch(short), cut.expand_batch(short)
    for row in np.flatnonzero(fits):
        np.testing.assert_array_equal(got[row].ids, expected[row].ids)
        np.testing.assert_allclose(got[row].weights, expected[row].weights, rtol=0, atol=1e-6)
    assert (got.windows[fits] == 1).all() and (got.windows[~fits] > 1).all()
    long_queries = [q + " " + LONG[0] for q in scifact_queries(0, 3)]
    np.testing.assert_array_equal(windows.expand_batch(long_queries, query=True).to_dense(),
                                  cut.expand_batch(long_queries, query=True).to_dense())
    assert windows.expand_batch(long_queries, query=True).truncated.all()
    # Per call, both ways.
    np.testing.assert_array_equal(windows.expand_batch(short, long_documents="truncate").truncated, ~fits)
    assert (cut.expand_batch(short, long_documents="windows").windows == got.windows).all()


def test_top_k_threshold_and_streams_apply_to_the_aggregate(splade_tiny_export):
    expander = Expander(splade_tiny_export, precision="fp32", document_max_length=64, long_documents="windows")
    full = expander.expand_batch(TEXTS)
    top = expander.expand_batch(TEXTS, top_k=12)
    assert top.nnz.max() == 12
    for got, vector in zip(top, full):
        assert got.decode() == vector.decode(top_k=12)
    dense = full.to_dense()
    above = expander.expand_batch(TEXTS, threshold=0.5).to_dense()
    np.testing.assert_array_equal(above, np.where(dense > 0.5, dense, 0))
    streamed = SparseBatch.from_vectors(list(expander.expand_iter(iter(TEXTS), batch_size=4)), full.vocab_size)
    np.testing.assert_allclose(streamed.to_dense(), dense, rtol=0, atol=1e-6)
    assert streamed.windows.tolist() == full.windows.tolist()


def test_window_options_are_checked(splade_tiny_export, tiny_bert_export, tmp_path):
    with pytest.raises(InputError, match="long_documents must be one of"):
        Expander(splade_tiny_export, long_documents="chunks")
    with pytest.raises(InputError, match="window_stride=255 exceeds the 254 text tokens of a 256-token window"):
        Expander(splade_tiny_export, long_documents="windows", window_stride=255)
    with pytest.raises(InputError, match="window_stride applies to long_documents='windows' only"):
        Expander(splade_tiny_export, window_stride=10)
    with pytest.raises(InputError, match="window_norm applies to long_documents='windows' only"):
        Expander(splade_tiny_export, window_norm=0.5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="window_norm must be a finite number >= 0"):
            Expander(splade_tiny_export, long_documents="windows", window_norm=bad)
    with pytest.raises(InputTypeError, match="window_norm must be a number, got str"):
        Expander(splade_tiny_export, long_documents="windows", window_norm="0.5")
    expander = Expander(splade_tiny_export)
    with pytest.raises(InputError, match="window_stride must be an integer >= 1"):
        expander.expand("text", long_documents="windows", window_stride=0)
    with pytest.raises(InputError, match="long_documents must be one of"):
        expander.expand_iter(["text"], long_documents="window")
    summed = tmp_path / "sum-pooling"
    shutil.copytree(tiny_bert_export, summed)
    manifest = json.loads((summed / "spladerunner.json").read_text())
    (summed / "spladerunner.json").write_text(json.dumps({**manifest, "pooling": "sum"}))
    with pytest.raises(InputError, match="pools by 'sum', so windows are not supported"):
        Expander(summed, long_documents="windows")


def test_index_add_takes_the_windowed_vectors(splade_tiny_export):
    expander = Expander(splade_tiny_export, precision="fp32", document_max_length=64, long_documents="windows")
    index = SparseIndex(expander)
    index.add(LONG, batch_size=4)
    expected = expander.expand_batch(LONG)
    np.testing.assert_allclose(index.to_batch().to_dense(), expected.to_dense(), rtol=0, atol=1e-6)


def test_a_long_document_takes_memory_bounded_by_the_token_budget(tiny_bert_export):
    """A 100,000-token document (3,400 windows of 64): holding every window's [vocab] output would take 420 MB;
    the windows stream through batches of max_tokens and are merged as they come."""
    expander = Expander(tiny_bert_export, precision="fp32", document_max_length=64, long_documents="windows",
                        window_stride=31, max_tokens=512)
    words = scifact_passages(0, 40)
    document = " ".join(words * 8)
    tokens = len(expander.tokenizer.encode(document, add_special_tokens=False).ids)
    assert tokens > 100_000
    expander.expand(LONG[:2])  # warm up onnxruntime's arenas before measuring
    tracemalloc.start()
    try:
        vector = expander.expand(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    windows_outputs = vector.windows * expander.manifest.vocab_size * 4
    budget = 4 * (512 // 64) * expander.manifest.vocab_size * 4  # a few copies of one batch's [rows, vocab] outputs
    print(f"{tokens} tokens, {vector.windows} windows: peak {peak / 1e6:.1f} MB traced "
          f"(all windows' outputs {windows_outputs / 1e6:.0f} MB)")
    assert vector.windows > tokens // 31 - 2
    assert peak < tokens * 100 + budget  # the document's own ids and text, plus a batch's outputs
    assert peak < windows_outputs / 8


def test_cli_expand_index_and_eval_take_windows(splade_tiny_export, tmp_path, capsys):
    from spladerunner.cli import main

    model = ["--model", str(splade_tiny_export), "--precision", "fp32"]
    expander = Expander(splade_tiny_export, precision="fp32", long_documents="windows", window_stride=100)
    expected = expander.expand_batch(LONG)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(LONG) + "\n")
    assert main(["expand", str(texts), "-o", str(tmp_path / "out.jsonl"), *model, "--windows", "--window-stride",
                 "100"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["windows"] for r in rows] == expected.windows.tolist() and max(r["windows"] for r in rows) > 1
    assert [r["vector"] == pytest.approx(v.to_dict(), abs=1e-6) for r, v in zip(rows, expected)] == [True] * len(LONG)

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(LONG)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                for i, q in enumerate(scifact_queries(0, 3))))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\nq2\td2\t1\n")
    assert main(["index", str(beir / "corpus.jsonl"), str(tmp_path / "index"), *model, "--windows",
                 "--window-stride", "100", "--window-norm", "0"]) == 0
    index = SparseIndex.load(tmp_path / "index")
    assert index.metadata["long_documents"] == "windows" and index.metadata["window_stride"] == 100
    assert index.metadata["window_norm"] == 0.0
    plain_max = Expander(splade_tiny_export, precision="fp32", long_documents="windows", window_stride=100,
                         window_norm=0)
    np.testing.assert_allclose(index.to_batch().to_dense(), plain_max.expand_batch(LONG).to_dense(), rtol=0, atol=1e-6)
    capsys.readouterr()
    assert main(["eval", str(beir), *model, "--windows", "--index", str(tmp_path / "eval-index")]) == 0
    assert "| windows, stride 127, norm 0.25 |" in capsys.readouterr().out
    assert SparseIndex.load(tmp_path / "eval-index").metadata["window_stride"] == 127  # the default: 254 // 2
    for option in ("--window-stride", "--window-norm"):
        assert main(["expand", str(texts), *model, option, "1"]) == 1
        assert f"{option} needs --windows" in capsys.readouterr().err


def test_very_long_texts_are_tokenised_in_pieces_to_the_same_ids(monkeypatch):
    tokenizer = load_tokenizer(TOKENIZER_JSON)
    assert tokenization.cuts_at_spaces(tokenizer)
    text = " ".join(scifact_passages(0, 40)) + " " + "x" * 3000 + " tail\u00e9 words"  # a piece with no space
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 1000)
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    assert piece_ids(tokenizer, text).tolist() == whole
    texts = [text, "short", "   " * 500, text[:5000]]
    pieced = encode(tokenizer, texts, 128, stride=60)
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 10**9)
    together = encode(tokenizer, texts, 128, stride=60)
    assert [list(i) for i in pieced.ids] == [list(i) for i in together.ids]
    assert pieced.owner.tolist() == together.owner.tolist() and pieced.blank.tolist() == together.blank.tolist()


def test_tokenising_a_million_token_document_takes_bounded_memory():
    """Tokenised in pieces, a million-token document costs its ids and windows, not the tokenizer's whole output."""
    probe = f"""
import resource
from spladerunner.tokenization import encode, load_tokenizer
tokenizer = load_tokenizer({str(TOKENIZER_JSON)!r})
text = "The tilt of Earth's axis causes the seasons on our planet. " * 80000
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
encoded = encode(tokenizer, [text], 256, stride=127)
print(len(encoded.ids), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    windows, grown_mb = map(int, done.stdout.split())
    print(f"{windows} windows, peak RSS +{grown_mb} MB")
    assert windows == 8818  # 1,120,000 tokens
    assert grown_mb < 100  # ids (9 MB) and windows (18 MB), not the tokenizer's whole output
