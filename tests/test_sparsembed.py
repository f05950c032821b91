"""SparsEmbed: export parity against the torch formula (both softmax axes), the runtime encoder
(prefixes, [MASK]s, int8, batch invariance) and the retriever end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from spladerunner.errors import InputError  # noqa: E402
from spladerunner.expander import Expander  # noqa: E402
from spladerunner.manifest import Manifest, ManifestError  # noqa: E402
from spladerunner.sparsembed import SparsEmbedEncoder, SparsEmbedSettings, encode_marked  # noqa: E402
from spladerunner.sparsembed_index import SparsEmbedIndex  # noqa: E402
from spladerunner.tokenization import Encoded, batches, special_token_ids  # noqa: E402
from spladerunner_export.convert import load_masked_lm  # noqa: E402
from spladerunner_export.sparsembed import (  # noqa: E402
    SparsEmbedReference,
    add_sparsembed_head,
    export_sparsembed,
    load_projection,
    read_settings,
)

TEXTS = [
    "do goldfish grow",
    "what is the daily recommended intake of vitamin D for adults over 50?",
    "The Manhattan Project was a research and development undertaking during World War II that produced "
    "the first nuclear weapons.",
    "",
    "Photosynthesis converts light energy into chemical energy stored in glucose. " * 8,  # truncated
    "covid-19 transmission rates in schools",
]
PREFIX = {"query": "[Q] ", "document": "[D] "}
MASKS = {"query": 2, "document": 0}
LENGTHS = {"query": 32, "document": 96}


@pytest.fixture(scope="session")
def sparsembed_checkpoint(tmp_path_factory, tiny_bert) -> Path:
    """tiny BERT plus a random `linear.pt` (d' = 32) and neural-cherche style `metadata.json`."""
    folder = tmp_path_factory.mktemp("sparsembed-checkpoint") / "model"
    shutil.copytree(tiny_bert, folder)
    return add_sparsembed_head(folder, embedding_dim=32, max_length=LENGTHS, prefix=PREFIX, mask_tokens=MASKS)


@pytest.fixture(scope="session")
def positions_export(tmp_path_factory, sparsembed_checkpoint) -> Path:
    """The paper's softmax over positions; k differs per mode (two graphs), fp32 and int8."""
    out = tmp_path_factory.mktemp("sparsembed-positions")
    export_sparsembed(out, sparsembed_checkpoint, k={"query": 12, "document": 40})
    return out


@pytest.fixture(scope="session")
def terms_export(tmp_path_factory, sparsembed_checkpoint) -> Path:
    """neural-cherche's softmax over the selected terms; one k, so one graph shared by both modes; fp32."""
    out = tmp_path_factory.mktemp("sparsembed-terms")
    export_sparsembed(out, sparsembed_checkpoint, k={"query": 24, "document": 24}, softmax_axis="terms",
                      precisions=("fp32",))
    return out


def reference_rows(checkpoint: Path, encoder: SparsEmbedEncoder, texts: list[str], mode: str, axis: str):
    """The torch formula on the runtime's own tokenisation (prefix, [MASK]s), each text alone."""
    model = load_masked_lm(checkpoint)
    k = encoder.settings.k[mode]
    reference = SparsEmbedReference(model, load_projection(checkpoint), k, axis, special_token_ids(encoder.tokenizer))
    encoded = encode_marked(encoder.tokenizer, texts, encoder.max_length[mode], prefix=PREFIX[mode],
                            mask_tokens=MASKS[mode], mask_id=encoder.mask_id)
    rows = {}
    for batch in batches(encoded, max_tokens=4096, max_batch_size=1, pad_id=0):
        rows[int(batch.rows[0])] = reference.terms(batch)[0]
    return [rows[i] for i in range(len(texts))]


def test_manifest_records_the_family_fields(positions_export, terms_export):
    manifest = Manifest.read(positions_export)
    assert manifest.kind == "sparsembed" and manifest.parity["passed"]
    assert manifest.extra == {"k": {"query": 12, "document": 40}, "embedding_dim": 32, "softmax_axis": "positions",
                              "prefix": PREFIX, "mask_tokens": MASKS}
    assert manifest.max_length == LENGTHS
    graphs = {(mode, p): (e.path, e.output, e.top_k) for mode, entries in manifest.encoders.items()
              for p, e in entries.items()}
    assert graphs == {("query", "fp32"): ("query/model.onnx", "sparsembed", 12),
                      ("query", "int8"): ("query/model_int8.onnx", "sparsembed", 12),
                      ("document", "fp32"): ("document/model.onnx", "sparsembed", 40),
                      ("document", "int8"): ("document/model_int8.onnx", "sparsembed", 40)}
    fp32 = manifest.parity["graphs"]["query"]["fp32"]
    assert fp32["ids_identical"] and fp32["embedding_max_abs_diff"] <= 1e-4 and fp32["max_abs_diff"] <= 1e-4
    shared = Manifest.read(terms_export)
    assert shared.extra["softmax_axis"] == "terms" and shared.parity["passed"]
    assert shared.encoders["query"] == shared.encoders["document"]


@pytest.mark.parametrize("axis", ["positions", "terms"])
def test_runtime_equals_the_torch_formula(request, sparsembed_checkpoint, axis):
    """ids identical, weights and embeddings within 1e-4; the other axis's formula gives other embeddings."""
    encoder = SparsEmbedEncoder(request.getfixturevalue(f"{axis}_export"), precision="fp32")
    other = "terms" if axis == "positions" else "positions"
    for mode in ("query", "document"):
        got = encoder.encode_batch(TEXTS, query=mode == "query")
        assert got.terms.truncated.tolist() == [False, False, False, False, True, False]
        expected = reference_rows(sparsembed_checkpoint, encoder, TEXTS, mode, axis)
        for text, vector, ref in zip(TEXTS, got, expected):
            if not text:  # blank: an empty vector, never run through the graph
                assert len(vector) == 0 and vector.embeddings.shape == (0, 32)
                continue
            order = np.argsort(ref.ids)
            np.testing.assert_array_equal(vector.terms.ids, ref.ids[order])
            np.testing.assert_allclose(vector.terms.weights, ref.weights[order], atol=1e-4, rtol=0)
            np.testing.assert_allclose(vector.embeddings, ref.embeddings[order], atol=1e-4, rtol=0)
        wrong = reference_rows(sparsembed_checkpoint, encoder, TEXTS[:2], mode, other)
        assert max(np.abs(v.embeddings - np.asarray(r.embeddings)[np.argsort(r.ids)]).max()
                   for v, r in zip(got, wrong)) > 1e-2


def test_int8_stays_close_to_fp32(positions_export):
    fp32, int8 = (SparsEmbedEncoder(positions_export, precision=p) for p in ("fp32", "int8"))
    for query in (True, False):
        for a, b in zip(fp32.encode_batch(TEXTS, query=query), int8.encode_batch(TEXTS, query=query)):
            if len(a) == len(b) == 0:  # the blank text
                continue
            shared, i, j = np.intersect1d(a.terms.ids, b.terms.ids, return_indices=True)
            assert len(shared) >= 0.8 * max(len(a), len(b))
            x, y = a.embeddings[i].ravel(), b.embeddings[j].ravel()
            assert x @ y / np.linalg.norm(x) / np.linalg.norm(y) > 0.99


def test_batch_invariance_and_input_order(positions_export):
    together = SparsEmbedEncoder(positions_export, precision="fp32").encode_batch(TEXTS)
    alone = SparsEmbedEncoder(positions_export, precision="fp32", max_batch_size=1)
    reversed_batch = alone.encode_batch(TEXTS[::-1])
    for i, vector in enumerate(together):
        again = reversed_batch[len(TEXTS) - 1 - i]
        np.testing.assert_array_equal(vector.terms.ids, again.terms.ids)
        np.testing.assert_allclose(vector.embeddings, again.embeddings, atol=1e-5)
        np.testing.assert_allclose(vector.terms.weights, again.terms.weights, atol=1e-5)
    assert len(alone.encode_batch([])) == 0
    assert np.array_equal(alone.expand_batch(TEXTS[:2]).indices, together.terms.take(np.arange(2)).indices)


def test_prefix_and_masks_survive_truncation(positions_export):
    encoder = SparsEmbedEncoder(positions_export)
    encoded = encode_marked(encoder.tokenizer, [TEXTS[0], TEXTS[4]], 32, prefix="[Q] ", mask_tokens=2,
                            mask_id=encoder.mask_id)
    cls, sep, mask = (encoder.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
    prefix = encoder.tokenizer.encode("[Q]", add_special_tokens=False).ids
    for ids in encoded.ids:
        assert ids[0] == cls and ids[1:1 + len(prefix)] == prefix and ids[-3:] == [mask, mask, sep]
    assert len(encoded.ids[1]) == 32 and encoded.truncated.tolist() == [False, True]
    assert isinstance(encoded, Encoded)


def test_checkpoint_metadata_and_bad_manifests(sparsembed_checkpoint, positions_export):
    settings = read_settings(sparsembed_checkpoint)
    assert (settings.max_length, settings.k, settings.prefix, settings.mask_tokens, settings.softmax_axis) == (
        LENGTHS, LENGTHS, PREFIX, MASKS, "positions")
    manifest = Manifest.read(positions_export)
    for bad in ({"softmax_axis": "rows"}, {"embedding_dim": 0}, {"k": {"query": 4}}, {"mask_tokens": {
            "query": 40, "document": 0}}):
        manifest.extra = {**Manifest.read(positions_export).extra, **bad}
        with pytest.raises(ManifestError):
            SparsEmbedSettings.from_manifest(manifest, "m")
    with pytest.raises(ManifestError, match="'sparsembed' is not a 'splade' model"):
        Expander(positions_export)


def test_retriever_end_to_end(positions_export, tmp_path):
    encoder = SparsEmbedEncoder(positions_export, precision="fp32")
    documents = [{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)]
    index = SparsEmbedIndex(encoder)
    index.add(documents, batch_size=4)
    queries = ["goldfish", "vitamin D intake", "nuclear weapons project", ""]
    results = SparsEmbedIndex.load(index.save(tmp_path / "index"), encoder).search(queries, k=3)
    docs, qs = encoder.encode(TEXTS), encoder.encode(queries, query=True)
    for q, hits in zip(qs, results.ids):
        scores = np.array([q.score(d) for d in docs])
        assert hits == [f"d{i}" for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:3]


def test_export_cli(sparsembed_checkpoint, tmp_path):
    from spladerunner_export.cli import main

    out = tmp_path / "cli"
    assert main(["sparsembed", str(sparsembed_checkpoint), str(out), "--query-k", "8", "--document-k", "8",
                 "--softmax-axis", "terms", "--precisions", "fp32"]) == 0
    manifest = Manifest.read(out)
    assert manifest.extra["k"] == {"query": 8, "document": 8} and manifest.extra["softmax_axis"] == "terms"
    assert manifest.encoders["query"]["fp32"].path == "model.onnx" == manifest.encoders["document"]["fp32"].path


def test_blank_texts_and_bad_arguments(positions_export):
    from spladerunner import InputError, InputTypeError

    encoder = SparsEmbedEncoder(positions_export, precision="fp32")
    for query in (False, True):  # "[Q] " + "" is the prefix alone: still blank
        batch = encoder.encode_batch(["", " \t", TEXTS[0], "\x00"], query=query)
        assert batch.terms.nnz.tolist()[:2] == [0, 0] and batch.terms.nnz[2] > 0 and batch.terms.nnz[3] == 0
        assert batch.embeddings.shape[0] == batch.terms.nnz.sum()
        alone = encoder.encode_batch([TEXTS[0]], query=query)
        np.testing.assert_array_equal(batch[2].terms.ids, alone[0].terms.ids)
    with pytest.raises(InputError, match="threshold must be a finite number"):
        encoder.encode_batch(["a"], threshold=float("nan"))
    with pytest.raises(InputTypeError, match="top_k must be an integer, got float"):
        encoder.expand_batch(["a"], top_k=2.5)
    with pytest.raises(InputError, match=r"texts\[1\] holds a lone surrogate"):
        encoder.encode(["a", "\ud800"])


def test_windows_are_refused_until_supported(positions_export):
    with pytest.raises(InputError, match="long_documents='windows' is not supported for SparsEmbed models yet"):
        SparsEmbedEncoder(positions_export, long_documents="windows")
    encoder = SparsEmbedEncoder(positions_export)
    with pytest.raises(InputError, match="not supported for SparsEmbed models yet"):
        encoder.encode_batch(["a document"], long_documents="windows")
    assert len(encoder.encode_batch(["a query"], query=True, long_documents="truncate")) == 1
