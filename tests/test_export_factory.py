"""The test-model factory: loadable, deterministic checkpoints with realistic SPLADE sparsity."""

from __future__ import annotations

import hashlib
import json

import pytest
import transformers
from paths import TOKENIZER_DIR, TOKENIZER_JSON, scifact_passages, scifact_queries

from spladerunner_export.calibration import BUILTIN, CalibrationTexts
from spladerunner_export.cli import main
from spladerunner_export.errors import ExportError
from spladerunner_export.factory import PASSAGE_RANGE, QUERY_RANGE, measure_sparsity

# Held out from calibration (which uses queries 0-23 and passages 0-7).
HELD_OUT_QUERIES = scifact_queries(100, 48)
HELD_OUT_PASSAGES = scifact_passages(100, 16)


def in_ranges(sparsity) -> bool:
    return (QUERY_RANGE[0] <= sparsity.query <= QUERY_RANGE[1]
            and PASSAGE_RANGE[0] <= sparsity.passage <= PASSAGE_RANGE[1])


@pytest.mark.parametrize("checkpoint", ["tiny_bert", "tiny_distilbert", "tiny_bert_seed1"])
def test_tiny_sparsity_is_calibrated(request, checkpoint):
    folder = request.getfixturevalue(checkpoint)
    sparsity = measure_sparsity(folder, HELD_OUT_QUERIES, HELD_OUT_PASSAGES)
    assert in_ranges(sparsity), sparsity
    recorded = json.loads((folder / "calibration.json").read_text())["calibration"]
    assert QUERY_RANGE[0] <= recorded["query"] <= QUERY_RANGE[1]


def test_checkpoint_folder_loads_with_transformers(tiny_distilbert):
    names = {path.name for path in tiny_distilbert.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.txt"} <= names
    model = transformers.AutoModelForMaskedLM.from_pretrained(tiny_distilbert)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_distilbert)
    assert type(model).__name__ == "DistilBertForMaskedLM" and model.config.vocab_size == 30522
    assert tokenizer("do goldfish grow")["input_ids"][0] == tokenizer.cls_token_id


def test_same_seed_same_weights(tmp_path, tiny_bert, make_test_model):
    again = make_test_model(tmp_path / "again", arch="bert", size="tiny", seed=0)
    digest = [hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() for folder in (again, tiny_bert)]
    assert digest[0] == digest[1]


def test_sparse_encoder_reads_the_checkpoint(tiny_bert):
    """sentence-transformers' SparseEncoder (its own SPLADE pooling) loads the folder as a SPLADE model."""
    import sentence_transformers
    encoder = sentence_transformers.SparseEncoder(str(tiny_bert), device="cpu")
    embedding = encoder.encode(["do goldfish grow"], convert_to_tensor=True).to_dense()
    assert embedding.shape == (1, 30522)
    assert QUERY_RANGE[0] // 4 <= int((embedding > 0).sum()) <= QUERY_RANGE[1]


def test_base_size_sparsity(tmp_path, make_test_model):
    """BERT-base dimensions (768 hidden, 12 layers, 12 heads), calibrated like the tiny ones."""
    folder = make_test_model(tmp_path / "base", arch="bert", size="base")
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (768, 12, 12)
    assert in_ranges(measure_sparsity(folder, HELD_OUT_QUERIES[:16], HELD_OUT_PASSAGES[:8]))


def test_cli_with_the_built_in_calibration_texts(tmp_path, capsys):
    """The installed command's defaults need no shared data: a tokenizer folder and the built-in texts
    calibrate a model that is sparse as intended on held-out SciFact."""
    assert main(["test-model", str(tmp_path / "builtin"), "--tokenizer", str(TOKENIZER_DIR), "--seed", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["seed"] == 2 and QUERY_RANGE[0] <= record["calibration"]["query"] <= QUERY_RANGE[1]
    assert in_ranges(measure_sparsity(tmp_path / "builtin", HELD_OUT_QUERIES, HELD_OUT_PASSAGES))
    assert len(BUILTIN.queries) >= 16 and len(BUILTIN.passages) >= 6


def test_cli_calibration_texts_file(tmp_path, capsys, tiny_bert):
    """`--calibration-texts` with the fixtures' own texts makes the fixtures' model, byte for byte."""
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"queries": scifact_queries(), "passages": scifact_passages()}))
    out = tmp_path / "same"
    assert main(["test-model", str(out), "--tokenizer", str(TOKENIZER_JSON), "--calibration-texts", str(texts)]) == 0
    assert (out / "model.safetensors").read_bytes() == (tiny_bert / "model.safetensors").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": ["a"]}))
    assert main(["test-model", str(tmp_path / "bad"), "--tokenizer", str(TOKENIZER_JSON),
                 "--calibration-texts", str(bad)]) == 1
    assert "error: " in capsys.readouterr().err
    with pytest.raises(ExportError):
        CalibrationTexts((), ("a passage",))
