"""Reliability of the encoder and its model folders (issue 11): one Expander shared by threads, model
folders from anyone (swapped graphs and vocabularies, paths out of the folder, hostile manifests,
max lengths beyond the position table), blank texts and bad arguments. Real files, onnxruntime and
tokenizers throughout."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hf_cache import populate_hf_cache
from test_expander import TEXTS, run_offline

from spladerunner import Expander, GraphError, InputError, ManifestError, ModelNotFoundError
from spladerunner.errors import InputTypeError
from spladerunner.integrity import CACHE_FILE, cache_dir
from spladerunner.manifest import MANIFEST_NAME


def copy_folder(folder: Path, tmp_path: Path, name: str = "model") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target, symlinks=True)
    return target


def edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def same(a, b) -> None:
    """Bit-identical CSR batches."""
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.truncated, b.truncated)


# --- threads -----------------------------------------------------------------------------------------

def test_one_expander_shared_by_eight_threads_gives_the_serial_results(tiny_bert_export):
    from paths import scifact_passages, scifact_queries

    texts = scifact_queries(0, 24) + scifact_passages(0, 16) + TEXTS
    rng = random.Random(0)
    calls = []
    for _ in range(48):
        size = rng.choice([1, 2, 5, 17])
        start = rng.randrange(len(texts) - size)
        calls.append((texts[start:start + size], rng.random() < 0.5, rng.choice([None, 8])))
    expander = Expander(tiny_bert_export, precision="fp32", threads=1, max_tokens=256, max_batch_size=4)
    expected = [expander.expand_batch(t, query=q, top_k=k) for t, q, k in calls]

    results: dict[int, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        for i in list(range(offset, len(calls), 8)) * 3:
            try:
                t, q, k = calls[i]
                results[(offset, i)] = (i, expander.expand_batch(t, query=q, top_k=k))
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{len(errors)} calls failed, first: {errors[0]!r}"
    assert len(results) == len(calls)
    for i, batch in results.values():
        same(batch, expected[i])


# --- graphs: hash, construction-time errors, position table -----------------------------------------

def test_a_swapped_graph_is_refused_by_its_sha256(tiny_bert_export, dual_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    shutil.copyfile(dual_export / "document" / "model.onnx", folder / "model.onnx")  # same layout, other weights
    with pytest.raises(GraphError, match=r"model\.onnx: sha256 .* does not match the manifest"):
        Expander(folder, precision="fp32")
    edit_manifest(folder, lambda m: [e.pop("sha256") for g in m["encoders"].values() for e in g.values()])
    Expander(folder, precision="fp32")  # no digest in the manifest (foreign or hand-made folders): no check


def test_verified_digests_are_cached_and_any_write_invalidates_them(tiny_bert_export, dual_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    Expander(folder, precision="fp32")
    cached = json.loads((cache_dir() / CACHE_FILE).read_text())
    graph = (folder / "model.onnx").resolve()
    assert any(key.startswith(f"{graph}|") for key in cached)
    Expander(folder, precision="fp32")  # a cache hit
    # Swap the bytes and put the old mtime back: the inode's ctime still changes, so the graph is hashed again.
    before = os.stat(graph)
    with open(graph, "r+b") as file:
        file.seek(before.st_size // 2)
        byte = file.read(1)
        file.seek(before.st_size // 2)
        file.write(bytes([byte[0] ^ 1]))
    os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(graph).st_size == before.st_size and os.stat(graph).st_mtime_ns == before.st_mtime_ns
    with pytest.raises(GraphError, match="sha256"):
        Expander(folder, precision="fp32")


def test_graph_and_provider_errors_surface_at_construction(tiny_bert_export, tiny_distilbert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    edit_manifest(folder, lambda m: [e.pop("sha256") for g in m["encoders"].values() for e in g.values()])
    (folder / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(GraphError, match=r"model\.onnx: onnxruntime cannot load"):
        Expander(folder, precision="fp32")  # no expand() needed
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        from spladerunner import ProviderError

        with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
            Expander(tiny_distilbert_export, providers=["cuda"])


def test_max_length_beyond_the_position_table_is_refused(tiny_bert_export, tiny_distilbert_export, tmp_path):
    for export in (tiny_bert_export, tiny_distilbert_export):
        assert Expander(export, precision="fp32", document_max_length=512).max_length["document"] == 512
        with pytest.raises(InputError, match=r"position table holds 512 positions, document_max_length=513"):
            Expander(export, precision="fp32", document_max_length=513)
    with pytest.raises(InputError, match="query_max_length=4096"):
        Expander(tiny_bert_export, query_max_length=4096)  # the int8 graph's table is read too
    folder = copy_folder(tiny_bert_export, tmp_path)
    edit_manifest(folder, lambda m: m["max_length"].update(document=1000))
    with pytest.raises(ManifestError, match=r"512 positions, max_length.document=1000 \(spladerunner.json\)"):
        Expander(folder, precision="fp32")


def test_foreign_graphs_are_checked_by_name_or_by_a_probe(foreign_logits_folder, tmp_path):
    import onnx

    assert Expander(foreign_logits_folder).max_length == {"query": 512, "document": 512}
    with pytest.raises(InputError, match="document_max_length=600"):
        Expander(foreign_logits_folder, document_max_length=600)
    # A graph whose position table does not carry the usual name: a max-length batch is run instead.
    folder = copy_folder(foreign_logits_folder, tmp_path)
    graph = onnx.load(folder / "model.onnx")
    [table] = [i for i in graph.graph.initializer if "position" in i.name]
    old, table.name = table.name, "weights_17"
    for node in graph.graph.node:
        node.input[:] = ["weights_17" if name == old else name for name in node.input]
    onnx.save(graph, folder / "model.onnx")
    assert Expander(folder).max_length["document"] == 512
    with pytest.raises(InputError, match="the graph fails on 600 tokens, so document_max_length=600 is too long"):
        Expander(folder, document_max_length=600)


# --- tokenizer, paths, manifest fields, missing manifest ----------------------------------------------

def test_a_tokenizer_with_the_same_size_but_other_tokens_is_refused(tiny_bert_export, tmp_path):
    manifest = json.loads((tiny_bert_export / MANIFEST_NAME).read_text())
    assert len(manifest["vocabulary_sha256"]) == 64  # the exporter records it
    folder = copy_folder(tiny_bert_export, tmp_path)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ManifestError, match=r"tokenizer\.json: the tokenizer's vocabulary is not the one"):
        Expander(folder, precision="fp32")
    edit_manifest(folder, lambda m: m.pop("vocabulary_sha256"))
    Expander(folder, precision="fp32")  # manifests written before the field still load


@pytest.mark.parametrize("field", ["graph", "tokenizer"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_paths_that_leave_the_model_folder_are_refused(tiny_bert_export, tmp_path, field, how):
    folder = copy_folder(tiny_bert_export, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    name = "model.onnx" if field == "graph" else "tokenizer.json"
    shutil.copyfile(folder / name, outside / name)
    if how == "symlink":
        (folder / name).unlink()
        (folder / name).symlink_to(outside / name)
        match = "outside the model folder"
    else:
        path = f"../outside/{name}" if how == "dotdot" else str(outside / name)
        match = "leaves the model folder" if how == "dotdot" else "absolute path"
        if field == "graph":
            edit_manifest(folder, lambda m: m["encoders"]["document"]["fp32"].update(path=path))
        else:
            edit_manifest(folder, lambda m: m.update(tokenizer=path))
    with pytest.raises(ManifestError, match=match):
        Expander(folder, precision="fp32")


def test_symlinks_within_the_folder_and_hf_snapshots_still_load(tiny_bert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    (folder / "graphs").mkdir()
    (folder / "model.onnx").rename(folder / "graphs" / "model.onnx")
    (folder / "model.onnx").symlink_to(Path("graphs") / "model.onnx")
    Expander(folder, precision="fp32")
    snapshot = populate_hf_cache(tmp_path / "hub", "acme/tiny-splade", tiny_bert_export)
    Expander(snapshot, precision="fp32")  # a snapshot folder's files link to ../../blobs


def test_hub_snapshot_links_out_of_the_repository_are_refused(tiny_bert_export, tmp_path):
    cache = tmp_path / "hub"
    snapshot = populate_hf_cache(cache, "acme/tiny-splade", tiny_bert_export)
    shutil.copyfile(tiny_bert_export / "tokenizer.json", tmp_path / "elsewhere.json")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(tmp_path / "elsewhere.json")
    result = run_offline("from spladerunner import Expander\nExpander('acme/tiny-splade', precision='fp32')", cache)
    assert result.returncode != 0
    assert "ManifestError" in result.stderr and "outside the model folder" in result.stderr


BAD_FIELDS = [
    (lambda m: m.update(special_token_ids=[0, 30522]), "special_token_ids"),
    (lambda m: m.update(special_token_ids=[-1]), "special_token_ids"),
    (lambda m: m.update(special_token_ids=[True]), "special_token_ids"),
    (lambda m: m.update(vocab_size=10**30), "vocab_size"),
    (lambda m: m.update(vocab_size="30522"), "vocab_size"),
    (lambda m: m["max_length"].update(document=10**12), "max_length.document"),
    (lambda m: m["max_length"].update(query=64.0), "max_length.query"),
    (lambda m: m["encoders"]["document"]["fp32"].update(top_k=2.5), "encoders.document.fp32.top_k"),
    (lambda m: m["encoders"]["document"]["fp32"].update(top_k=10**20), "encoders.document.fp32.top_k"),
    (lambda m: m["encoders"]["query"]["int8"].update(sha256=12), "encoders.query.int8.sha256"),
    (lambda m: m["encoders"]["query"]["int8"].update(path=["model.onnx"]), "encoders.query.int8.path"),
    (lambda m: m["encoders"]["query"]["int8"].update(output=[]), "encoders.query.int8.output"),
    (lambda m: m["encoders"].update(query=[]), "encoders.query"),
    (lambda m: m.update(pooling={"max": 1}), "pooling"),
    (lambda m: m.update(activation="gelu"), "activation"),
    (lambda m: m.update(tokenizer=None), "tokenizer"),
    (lambda m: m.update(vocabulary_sha256="abc"), "vocabulary_sha256"),
    (lambda m: m.update(extra=[1]), "extra"),
    (lambda m: m.update(format_version=True), "format_version"),
]


@pytest.mark.parametrize("edit, field", BAD_FIELDS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_FIELDS)])
def test_every_manifest_field_is_type_and_range_checked(tiny_bert_export, tmp_path, edit, field):
    folder = copy_folder(tiny_bert_export, tmp_path)
    edit_manifest(folder, edit)
    with pytest.raises(ManifestError, match=rf"spladerunner\.json: {field}"):
        Expander(folder, precision="fp32")


@pytest.mark.parametrize("text, problem", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"vocab_size": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_hostile_manifest_json_is_reported(tiny_bert_export, tmp_path, text, problem):
    folder = copy_folder(tiny_bert_export, tmp_path)
    (folder / MANIFEST_NAME).write_text(text)
    with pytest.raises(ManifestError, match=rf"spladerunner\.json: .*{problem}"):
        Expander(folder)


def test_a_folder_without_its_manifest_says_so(tiny_bert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    (folder / MANIFEST_NAME).unlink()  # model.onnx is still there, but a pooled graph, not a logits one
    with pytest.raises(ManifestError, match=r"spladerunner\.json is missing, so model\.onnx was taken for a foreign"):
        Expander(folder)
    for graph in folder.glob("*.onnx"):
        graph.unlink()
    with pytest.raises(ModelNotFoundError, match=r"spladerunner\.json is missing .*\(looked for model\.onnx"):
        Expander(folder)


# --- inputs -------------------------------------------------------------------------------------------

def test_blank_texts_give_empty_vectors_and_leave_the_others_alone(tiny_bert_export):
    expander = Expander(tiny_bert_export, precision="fp32")
    blanks = ["", " ", "\n\t  \r\n", "\u00a0\u2003", "\x00\x01\x7f"]
    assert [len(v) for v in expander.expand(blanks)] == [0] * len(blanks)
    assert [len(v) for v in expander.expand(blanks, query=True)] == [0] * len(blanks)
    mixed = ["what causes the seasons", "", "BRCA1", "   "]
    batch = expander.expand_batch(mixed)
    assert batch.nnz.tolist()[1::2] == [0, 0] and batch.truncated.tolist() == [False] * 4
    same(expander.expand_batch(mixed[0::2]).take(np.array([0, 1])), batch.take(np.array([0, 2])))
    assert len(expander.expand_batch(["", ""])) == 2 and expander.expand_batch([]).shape == (0, 30522)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"threshold": float("nan")}, InputError, "threshold must be a finite number"),
    ({"threshold": float("inf")}, InputError, "threshold must be a finite number"),
    ({"threshold": "0.5"}, InputTypeError, "threshold must be a number, got str"),
    ({"threshold": None}, InputTypeError, "threshold must be a number"),
    ({"top_k": 2.5}, InputTypeError, "top_k must be an integer, got float"),
    ({"top_k": True}, InputTypeError, "top_k must be an integer, got bool"),
    ({"top_k": 0}, InputError, "top_k must be an integer >= 1"),
    ({"top_k": -3}, InputError, "top_k must be an integer >= 1"),
])
def test_bad_arguments_name_the_argument(tiny_bert_export, kwargs, error, match):
    expander = Expander(tiny_bert_export, precision="fp32")
    with pytest.raises(error, match=match):
        expander.expand(["a", "b"], **kwargs)
    assert len(expander.expand(TEXTS[3], top_k=np.int64(3))) == 3  # numpy integers are integers


def test_lone_surrogates_are_named_by_position(tiny_bert_export):
    expander = Expander(tiny_bert_export, precision="fp32")
    with pytest.raises(InputError, match=r"texts\[3\] holds a lone surrogate U\+D800 at character 2"):
        expander.expand(["a", "b", "c", "ab\ud800cd"])
    with pytest.raises(InputError, match=r"^text holds a lone surrogate U\+DFFF"):
        expander.expand("\udfff")
    assert isinstance(InputTypeError("x"), TypeError) and isinstance(InputTypeError("x"), ValueError)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_tokens": 0}, "max_tokens"), ({"max_batch_size": 2.0}, "max_batch_size"),
    ({"document_max_length": 1}, "document_max_length"), ({"query_max_length": 10**12}, "query_max_length"),
    ({"threads": 0}, "threads"), ({"precision": "bf16"}, "precision 'bf16' not exported"),
])
def test_bad_constructor_arguments(tiny_bert_export, kwargs, match):
    with pytest.raises(InputError, match=match):
        Expander(tiny_bert_export, **kwargs)
