import pytest
from paths import TOKENIZER_JSON

from spladerunner.tokenization import batches, encode, load_tokenizer, special_token_ids, vocabulary


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER_JSON)


def test_special_ids_come_from_the_tokenizer(tokenizer):
    specials = special_token_ids(tokenizer)
    vocab = vocabulary(tokenizer)
    assert {vocab[i] for i in specials} == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def test_encode_truncates_and_reports(tokenizer):
    encoded = encode(tokenizer, ["short text", "word " * 50, ""], max_length=16)
    assert encoded.lengths.tolist()[0] == 4 and encoded.lengths.tolist()[1] == 16
    assert encoded.truncated.tolist() == [False, True, False]
    assert encoded.ids[2] == [tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")]
    # Truncation is per call: the tokenizer is left without it.
    assert tokenizer.truncation is None


def test_batches_respect_the_token_budget_and_cover_every_text(tokenizer):
    texts = [("word " * n).strip() for n in [1, 30, 5, 60, 2, 2, 17, 90, 0]]
    encoded = encode(tokenizer, texts, max_length=64)
    seen = []
    for batch in batches(encoded, max_tokens=128, max_batch_size=4, pad_id=0):
        rows, width = batch.input_ids.shape
        assert rows <= 4 and (rows * width <= 128 or rows == 1)
        assert batch.attention_mask.sum(1).tolist() == encoded.lengths[batch.rows].tolist()
        for r, row in enumerate(batch.rows):
            assert batch.input_ids[r, : encoded.lengths[row]].tolist() == encoded.ids[row]
        seen.extend(batch.rows.tolist())
    assert sorted(seen) == list(range(len(texts)))


def test_bad_tokenizer_file_names_the_file(tmp_path):
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(broken)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
