"""Expander end to end on real exported graphs: parity with torch, batching, loading, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hf_cache import populate_hf_cache
from paths import REPO, TOKENIZER_JSON

from spladerunner import Expander, GraphError, ManifestError, ModelNotFoundError, ProviderError
from spladerunner.manifest import Manifest
from spladerunner.tokenization import encode, load_tokenizer

TEXTS = [
    "what causes the seasons on earth",
    "",
    "   ",
    "Microstructural development of human newborn cerebral white matter assessed in vivo by diffusion "
    "tensor magnetic resonance imaging. Alterations of the architecture of cerebral white matter in the "
    "developing human brain can affect cortical development and result in functional disabilities.",
    "BRCA1",
    "the the the the",
    "A line with punctuation: (parentheses), [brackets]; and numbers 12345!",
]


def torch_reference(checkpoint: Path, texts: list[str], max_length: int) -> np.ndarray:
    """SPLADE-max straight from the formula, one text at a time (no padding at all)."""
    import torch
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(checkpoint).eval()
    tokenizer = load_tokenizer(TOKENIZER_JSON)
    rows = []
    for text, ids in zip(texts, encode(tokenizer, texts, max_length).ids):
        if not text.strip():  # blank texts carry no content: an empty vector, never a model run
            rows.append(np.zeros(model.config.vocab_size, np.float32))
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        rows.append(torch.log1p(torch.relu(logits)).amax(0).numpy())
    weights = np.stack(rows)
    weights[:, [0, 100, 101, 102, 103]] = 0.0  # bert-base-uncased specials, as the tokenizer lists them
    return weights


def dense(expander: Expander, texts: list[str], **kwargs) -> np.ndarray:
    return expander.expand_batch(texts, **kwargs).to_dense()


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_fp32_matches_torch_reference(model, request):
    checkpoint = request.getfixturevalue(model)
    folder = request.getfixturevalue(f"{model}_export")
    expander = Expander(folder, precision="fp32")
    ours = dense(expander, TEXTS)
    reference = torch_reference(checkpoint, TEXTS, expander.max_length["document"])
    assert np.abs(ours - reference).max() <= 1e-4
    np.testing.assert_array_equal(ours > 0, reference > 0)
    active = (ours > 0).sum(1)
    assert active[0] > 5  # realistic sparsity, not the 29,000 terms of an uncalibrated model
    assert active.max() < 1000


def test_int8_stays_close_to_fp32(tiny_bert_export):
    fp32 = dense(Expander(tiny_bert_export, precision="fp32"), TEXTS)
    int8_expander = Expander(tiny_bert_export)
    assert int8_expander.precision == "int8"  # the CPU default when the folder has it
    int8 = dense(int8_expander, TEXTS)
    for a, b in zip(fp32, int8):
        if a.any():
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999


def test_outputs_do_not_depend_on_batching(tiny_bert_export):
    texts = TEXTS * 3
    together = dense(Expander(tiny_bert_export, precision="fp32"), texts)
    one_by_one = np.stack([dense(Expander(tiny_bert_export, precision="fp32"), [t])[0] for t in texts])
    small_batches = dense(Expander(tiny_bert_export, precision="fp32", max_tokens=64, max_batch_size=2), texts)
    assert np.abs(together - one_by_one).max() <= 1e-5
    assert np.abs(together - small_batches).max() <= 1e-5


def test_expand_shapes_and_order(tiny_bert_export):
    expander = Expander(tiny_bert_export, precision="fp32")
    single = expander.expand("what causes the seasons on earth", query=True)
    many = expander.expand(TEXTS, query=True)
    assert isinstance(many, list) and len(many) == len(TEXTS)
    np.testing.assert_array_equal(single.ids, many[0].ids)
    np.testing.assert_allclose(single.weights, many[0].weights, atol=1e-5)
    assert all(np.all(np.diff(v.ids) > 0) and np.all(v.weights > 0) for v in many)
    tokens = single.to_dict()
    assert not {"[CLS]", "[SEP]", "[PAD]"} & set(tokens)
    assert list(tokens.values()) == sorted(tokens.values(), reverse=True)
    top = expander.expand(TEXTS[3], top_k=5)
    assert len(top) == 5
    full = expander.expand(TEXTS[3])
    assert set(top.ids) <= set(full.ids) and top.weights.min() >= np.sort(full.weights)[-5]
    assert np.all(expander.expand(TEXTS[3], threshold=0.5).weights > 0.5)


def test_truncation_is_reported(tiny_bert_export):
    expander = Expander(tiny_bert_export, precision="fp32", document_max_length=16)
    batch = expander.expand_batch(["short", "word " * 40, "word " * 14])
    assert batch.truncated.tolist() == [False, True, False]
    assert expander.expand("word " * 40).truncated


def test_in_graph_top_k_equals_top_k_of_pooled(tiny_bert_export, tiny_bert_topk_export):
    pooled = Expander(tiny_bert_export, precision="fp32").expand_batch(TEXTS, top_k=20)
    topk_expander = Expander(tiny_bert_topk_export, precision="fp32")
    from_graph = topk_expander.expand_batch(TEXTS, top_k=20)
    np.testing.assert_array_equal(pooled.indptr, from_graph.indptr)
    np.testing.assert_array_equal(pooled.indices, from_graph.indices)
    np.testing.assert_allclose(pooled.values, from_graph.values, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds the 64 terms"):
        topk_expander.expand("x", top_k=100)


def test_foreign_logits_graph_gives_the_fused_vectors(tiny_bert_export, foreign_logits_folder):
    fused = dense(Expander(tiny_bert_export, precision="fp32"), TEXTS)
    foreign = Expander(foreign_logits_folder)
    assert foreign.graph("document").output == "logits"
    assert np.abs(dense(foreign, TEXTS) - fused).max() <= 1e-4


def test_dual_encoder_uses_the_query_graph_for_queries(dual_export, tiny_bert_export):
    dual = Expander(dual_export, precision="fp32")
    single = Expander(tiny_bert_export, precision="fp32")  # same weights as the dual query encoder
    assert dual.graph("query").path != dual.graph("document").path
    queries = dense(dual, TEXTS, query=True)
    assert np.abs(queries - dense(single, TEXTS, query=True)).max() <= 1e-5
    assert np.abs(dense(dual, TEXTS) - queries).max() > 1e-2


def test_bad_texts(tiny_bert_export):
    expander = Expander(tiny_bert_export, precision="fp32")
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        expander.expand(["a", "b", 3])
    with pytest.raises(TypeError, match="bytes"):
        expander.expand(b"bytes")
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        expander.expand([None])
    with pytest.raises(ValueError, match="top_k"):
        expander.expand("a", top_k=0)
    with pytest.raises(ValueError, match="threshold"):
        expander.expand("a", threshold=-1)
    assert expander.expand([]) == []
    assert len(expander.expand("")) == 0  # blank texts carry no content: empty vectors


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def test_missing_and_corrupt_files_are_named(tiny_bert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    (folder / "model.onnx").write_bytes(b"this is not an onnx graph")
    with pytest.raises(GraphError, match="model.onnx"):
        Expander(folder, precision="fp32").expand("a")
    (folder / "model_int8.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="model_int8.onnx"):
        Expander(folder, precision="int8").expand("a")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer.json"):
        Expander(folder)
    (folder / "spladerunner.json").write_text("{broken")
    with pytest.raises(ManifestError, match="spladerunner.json"):
        Expander(folder)
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        Expander(tmp_path / "nowhere")


def test_manifest_that_does_not_match_the_graph(tiny_bert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    manifest = json.loads((folder / "spladerunner.json").read_text())
    manifest["encoders"]["document"]["fp32"]["output"] = "topk"
    (folder / "spladerunner.json").write_text(json.dumps(manifest))
    with pytest.raises(GraphError, match="manifest says output layout 'topk'"):
        Expander(folder, precision="fp32").expand("a")
    manifest["encoders"]["document"]["fp32"]["output"] = "pooled"
    manifest["format_version"] = 99
    (folder / "spladerunner.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="format_version 99"):
        Expander(folder)


def test_tokenizer_vocabulary_must_match_the_graph(tiny_bert_export, tmp_path):
    folder = copy_folder(tiny_bert_export, tmp_path)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    for token in [t for t, i in vocab.items() if i >= 30000]:
        del vocab[token]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ManifestError, match="tokenizer has 30000 tokens but the model outputs a vocabulary of 30522"):
        Expander(folder)


def test_unknown_precision_and_unavailable_provider(tiny_distilbert_export):
    with pytest.raises(ValueError, match="precision 'fp16' not exported"):
        Expander(tiny_distilbert_export, precision="fp16")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.fail("this test expects a CPU-only onnxruntime build (CI); run the CUDA check on a GPU machine")
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        Expander(tiny_distilbert_export, providers=["cuda"]).expand("a")


def run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=cache)


def test_hub_ids_load_from_the_hf_cache_offline(tiny_bert_export, foreign_logits_folder, tmp_path):
    cache = tmp_path / "hub"
    populate_hf_cache(cache, "acme/tiny-splade", tiny_bert_export)
    populate_hf_cache(cache, "Qdrant/Splade_PP_en_v1", foreign_logits_folder)
    local = Expander(tiny_bert_export, precision="fp32").expand(TEXTS[0]).to_id_dict()
    result = run_offline(
        "import json\nfrom spladerunner import Expander\n"
        "e = Expander('acme/tiny-splade', precision='fp32')\n"
        "assert 'snapshots' in str(e.source.fetch('model.onnx'))\n"
        f"print(json.dumps(e.expand({TEXTS[0]!r}).to_id_dict()))\n"
        "d = Expander()\n"  # the default model id, foreign logits layout
        "print(d.graph('document').output)\n",
        cache,
    )
    assert result.returncode == 0, result.stderr
    hub_line, default_layout = result.stdout.splitlines()
    hub = {int(k): v for k, v in json.loads(hub_line).items()}
    assert hub.keys() == local.keys()
    assert max(abs(hub[k] - local[k]) for k in hub) <= 1e-6
    assert default_layout == "logits"
    missing = run_offline("from spladerunner import Expander\nExpander('acme/not-cached')", cache)
    assert missing.returncode != 0 and "acme/not-cached" in missing.stderr and "NotCachedOfflineError" in missing.stderr


def test_overlapped_batches_give_the_same_vectors(tiny_bert_export):
    """The GPU path (next batch running while this one is sparsified) changes timing, never results."""
    from spladerunner.tokenization import batches

    expander = Expander(tiny_bert_export, precision="fp32", max_tokens=64, max_batch_size=2)
    session = expander.session("document")
    encoded = encode(expander.tokenizer, TEXTS * 2, 64)
    plain = list(session.run_all(batches(encoded, max_tokens=64, max_batch_size=2, pad_id=0), overlap=False))
    overlapped = list(session.run_all(batches(encoded, max_tokens=64, max_batch_size=2, pad_id=0), overlap=True))
    assert len(plain) == len(overlapped) > 3
    for (batch_a, out_a), (batch_b, out_b) in zip(plain, overlapped):
        np.testing.assert_array_equal(batch_a.rows, batch_b.rows)
        np.testing.assert_array_equal(out_a["sparse_weights"], out_b["sparse_weights"])


def with_parity(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of the folder whose manifest's parity report `edit` changed in place."""
    target = copy_folder(folder, tmp_path)
    manifest = json.loads((target / "spladerunner.json").read_text())
    edit(manifest["parity"])
    (target / "spladerunner.json").write_text(json.dumps(manifest))
    return target


def fail(*precisions: str, graph: str = "model"):
    def edit(parity: dict) -> None:
        for precision in precisions:
            parity["graphs"][graph][precision]["passed"] = False
        parity["passed"] = False
    return edit


def test_default_precision_is_the_fastest_that_passed_the_gate(tiny_bert_export, tmp_path, caplog):
    assert Manifest.read(tiny_bert_export).gate("int8").passed
    folder = with_parity(tiny_bert_export, tmp_path, fail("int8"))
    with caplog.at_level(logging.INFO, logger="spladerunner"):
        expander = Expander(folder)
    assert expander.precision == "fp32"
    assert "'int8' failed the export's parity gate" in caplog.text and "tolerant_overlap_at_10=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spladerunner"):
        assert Expander(folder, precision="fp32").precision == "fp32"
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="spladerunner"):
        asked = Expander(folder, precision="int8")
    assert asked.precision == "int8" and len(asked.expand("do goldfish grow")) > 0
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.name == "spladerunner"
    message = record.getMessage()
    assert "running precision 'int8' as asked" in message and "model: FAILED" in message
    for figure in ("tolerant_overlap_at_10=", "score_pearson=", "min_cosine=", "max_abs_diff="):
        assert figure in message


def test_cuda_prefers_fp16_then_fp32(tiny_bert_export, tmp_path):
    """The CUDA order without a GPU: the choice reads the providers, not the device."""
    expander = Expander(tiny_bert_export, precision="fp32")
    expander.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert expander._choose_precision(None) == "fp16"
    failed = Expander(with_parity(tiny_bert_export, tmp_path, fail("fp16")), precision="fp32")
    failed.providers = ["CUDAExecutionProvider"]
    assert failed._choose_precision(None) == "fp32"


def test_nothing_passed_needs_an_explicit_precision(tiny_bert_export, tmp_path, caplog):
    folder = with_parity(tiny_bert_export, tmp_path, fail("fp32", "int8", "fp16"))
    with pytest.raises(ManifestError, match="every exported precision failed the export's parity gate"):
        Expander(folder)
    with caplog.at_level(logging.WARNING, logger="spladerunner"):
        assert Expander(folder, precision="fp32").precision == "fp32"
    assert "failed the export's parity gate" in caplog.text


def test_folders_without_a_parity_report_keep_the_old_default(tiny_bert_export, foreign_logits_folder, tmp_path):
    folder = with_parity(tiny_bert_export, tmp_path, lambda parity: parity.clear())
    assert Manifest.read(folder).gate("int8") is None
    assert Expander(folder).precision == "int8"
    assert Expander(foreign_logits_folder).precision == "fp32"  # a derived manifest: one graph, never judged


def test_malformed_verdict_is_a_manifest_error(tiny_bert_export, tmp_path):
    def edit(parity: dict) -> None:
        parity["graphs"]["model"]["int8"]["passed"] = "yes"
    with pytest.raises(ManifestError, match=r"parity.graphs.model.int8.passed must be true or false"):
        Expander(with_parity(tiny_bert_export, tmp_path, edit))


def test_gate_of_a_dual_folder_covers_both_encoders(dual_export, tmp_path):
    assert Expander(dual_export).precision == "int8"
    folder = with_parity(dual_export, tmp_path, fail("int8", graph="document"))
    gate = Manifest.read(folder).gate("int8")
    assert set(gate.results) == {"query", "document"} and not gate.passed
    assert Expander(folder).precision == "fp32"
