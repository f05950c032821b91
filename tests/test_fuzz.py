"""Property-based tests (hypothesis) of tokenisation and `expand` on a real exported model folder: random
unicode (control characters, lone surrogates, emoji, whitespace, very long texts) never raises anything
but the documented `InputError`, and every text expands alike alone or in a batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import TOKENIZER_JSON

from spladerunner import Expander, InputError
from spladerunner.tokenization import encode, load_tokenizer

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])

# Every code point, surrogates (category Cs) included; plus the texts that stress the tokenizer and batching.
ANY_CHAR = st.characters(codec=None, categories=None)
WORDS = st.sampled_from(["the", "seasons", "BRCA1", "naïve", "東京", "🙂", "x" * 40, "\u200b", "[SEP]", "[MASK]"])
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000\x00\x1f\x7f"), max_size=12),  # blank ones
    st.lists(WORDS, max_size=12).map(" ".join),
    st.builds(lambda word, n: (word + " ") * n, WORDS, st.integers(50, 400)),  # past the max length
    st.text(st.sampled_from("🙂👍🏽👩‍👩‍👧é\u0301\U0001f1fa\U0001f1f8\ufeff"), max_size=30),
)
# Both precisions are checked bit for bit: int8 graphs quantise activations per token
# (spladerunner_export.quantize), so a row's weights cannot depend on its batch mates.


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER_JSON)


@SETTINGS
@given(texts=st.lists(TEXTS.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)), max_size=6),
       max_length=st.integers(2, 80))
def test_encode_equals_the_tokenizers_own_truncation(tokenizer, texts, max_length):
    tokenizer.enable_truncation(max_length)
    try:
        reference = tokenizer.encode_batch(texts, add_special_tokens=True)
    finally:
        tokenizer.no_truncation()
    ours = encode(tokenizer, texts, max_length)
    assert ours.ids == [e.ids for e in reference]
    assert ours.truncated.tolist() == [bool(e.overflowing) for e in reference]
    assert ours.blank.tolist() == [len(e.ids) == 2 for e in tokenizer.encode_batch(texts)]  # [CLS] [SEP] only


@pytest.fixture(scope="module", params=["fp32", "int8"])
def expander(request, tiny_bert_export):
    return Expander(tiny_bert_export, precision=request.param, max_tokens=512, max_batch_size=8)


@SETTINGS
@given(texts=st.lists(TEXTS, min_size=1, max_size=6), query=st.booleans())
def test_expand_never_fails_but_on_surrogates_and_is_batch_invariant(expander, texts, query):
    surrogates = [i for i, t in enumerate(texts) if any("\ud800" <= c <= "\udfff" for c in t)]
    if surrogates:
        with pytest.raises(InputError, match=rf"texts\[{surrogates[0]}\] holds a lone surrogate"):
            expander.expand(texts, query=query)
        return
    together = expander.expand_batch(texts, query=query)
    assert len(together) == len(texts)
    for i, text in enumerate(texts):
        alone = expander.expand_batch([text], query=query)
        row = together[i]
        assert row.truncated == alone.truncated[0]
        if not text.strip() and not row.ids.size:
            assert alone.nnz[0] == 0
        np.testing.assert_array_equal(row.ids, alone.indices)
        np.testing.assert_array_equal(row.weights, alone.values)
