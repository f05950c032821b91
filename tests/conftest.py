"""Shared session fixtures: tiny random-init SPLADE checkpoints and the model folders exported from them,
and the real splade-tiny exported by the toolkit.

Everything is built once per session under pytest's tmp dir with the real tokenizer, optimum,
onnx and onnxruntime (no mocks), calibrated on SciFact texts from the shared data. Fixtures import
torch only when first used.
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

import pytest
from paths import SPLADE_TINY, TOKENIZER_JSON, scifact_passages, scifact_queries

# Files of a fastembed/Qdrant-style folder: a logits graph beside the tokenizer files.
FOREIGN_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="session", autouse=True)
def verified_digest_cache(tmp_path_factory) -> Path:
    """The cache of verified graph digests (`spladerunner.integrity`) lives in the session's tmp dir, not ~/.cache."""
    folder = tmp_path_factory.mktemp("spladerunner-cache")
    previous = os.environ.get("SPLADERUNNER_CACHE")
    os.environ["SPLADERUNNER_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SPLADERUNNER_CACHE", None)
    else:
        os.environ["SPLADERUNNER_CACHE"] = previous



@pytest.fixture(scope="session")
def make_test_model():
    """The factory's `make_test_model` with the shared tokenizer and calibrated on SciFact queries 0-23
    and passages 0-7 (imported when a fixture first needs it: torch loads only then)."""
    from spladerunner_export.calibration import CalibrationTexts
    from spladerunner_export.factory import make_test_model

    texts = CalibrationTexts(tuple(scifact_queries()), tuple(scifact_passages()))
    return partial(make_test_model, tokenizer=TOKENIZER_JSON, calibration=texts)


def _convert():
    from spladerunner_export import convert

    return convert


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, make_test_model) -> Path:
    """Tiny BERT masked-LM checkpoint (seed 0), sparsity-calibrated."""
    return make_test_model(tmp_path_factory.mktemp("tiny-bert"), arch="bert")


@pytest.fixture(scope="session")
def tiny_bert_seed1(tmp_path_factory, make_test_model) -> Path:
    """A second tiny BERT (seed 1): the document encoder of the efficient-SPLADE export."""
    return make_test_model(tmp_path_factory.mktemp("tiny-bert-seed1"), arch="bert", seed=1)


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, make_test_model) -> Path:
    """Tiny DistilBERT masked-LM checkpoint (no token_type_ids input)."""
    return make_test_model(tmp_path_factory.mktemp("tiny-distilbert"), arch="distilbert")


@pytest.fixture(scope="session")
def base_bert_export(tmp_path_factory, make_test_model) -> Path:
    """A BERT-base-sized test model (random init, calibrated sparsity: production shapes), fp32 and int8."""
    checkpoint = make_test_model(tmp_path_factory.mktemp("base-bert"), arch="bert", size="base")
    out = tmp_path_factory.mktemp("base-bert-export")
    _convert().export_checkpoint(out, checkpoint)
    return out


@pytest.fixture(scope="session")
def tiny_bert_export(tmp_path_factory, tiny_bert) -> Path:
    """Model folder of tiny BERT: pooled fp32, int8 and fp16 graphs."""
    convert = _convert()
    out = tmp_path_factory.mktemp("tiny-bert-export")
    convert.export_checkpoint(out, tiny_bert, options=convert.ExportOptions(precisions=("fp32", "int8", "fp16")))
    return out


@pytest.fixture(scope="session")
def tiny_distilbert_export(tmp_path_factory, tiny_distilbert) -> Path:
    """Model folder of tiny DistilBERT: pooled fp32 and int8 graphs."""
    convert = _convert()
    out = tmp_path_factory.mktemp("tiny-distilbert-export")
    convert.export_checkpoint(out, tiny_distilbert)
    return out


@pytest.fixture(scope="session")
def tiny_bert_topk_export(tmp_path_factory, tiny_bert) -> Path:
    """Model folder of tiny BERT with in-graph top-k (K=64): `top_ids`/`top_weights`, fp32 and int8."""
    convert = _convert()
    out = tmp_path_factory.mktemp("tiny-bert-topk-export")
    convert.export_checkpoint(out, tiny_bert, options=convert.ExportOptions(top_k=64))
    return out


@pytest.fixture(scope="session")
def dual_export(tmp_path_factory, tiny_bert, tiny_bert_seed1) -> Path:
    """Efficient-SPLADE folder: query encoder = tiny BERT seed 0, document encoder = seed 1."""
    convert = _convert()
    out = tmp_path_factory.mktemp("dual-export")
    convert.export_checkpoint(out, query_checkpoint=tiny_bert, document_checkpoint=tiny_bert_seed1)
    return out


@pytest.fixture(scope="session")
def foreign_logits_folder(tmp_path_factory, tiny_bert) -> Path:
    """fastembed layout: a plain optimum logits graph `model.onnx` [B, L, V] beside tokenizer.json."""
    convert = _convert()
    import onnx

    out = tmp_path_factory.mktemp("foreign-logits")
    onnx.save(convert.export_logits(convert.load_masked_lm(tiny_bert)), out / "model.onnx")
    for name in FOREIGN_FILES:
        shutil.copyfile(tiny_bert / name, out / name)
    return out


@pytest.fixture(scope="session")
def splade_tiny_export(tmp_path_factory) -> Path:
    """The real rasyosef/splade-tiny (shared models folder) exported by our toolkit: fp32 and int8, default
    options and gate."""
    if not (SPLADE_TINY / "model.safetensors").is_file():
        raise FileNotFoundError(f"{SPLADE_TINY}: shared model not found (expected ../shared beside the repository)")
    convert = _convert()
    out = tmp_path_factory.mktemp("splade-tiny-export")
    convert.export_checkpoint(out, SPLADE_TINY)
    return out
