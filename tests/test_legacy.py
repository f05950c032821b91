"""SPLADERunner 0.1.6 code runs unchanged: its README's usage verbatim, its keywords, its output shapes.

The 0.1.6 model name resolves through a real Hugging Face cache layout holding a foreign logits graph
(tiny BERT) under `Qdrant/Splade_PP_en_v1`; no network is needed, the snapshot is cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hf_cache import populate_hf_cache
from paths import REPO

from spladerunner import Expander, InputError
from spladerunner.legacy import MODELS

# SPLADERunner 0.1.6's README "Usage" block, verbatim.
README_0_1_6 = '''
# One-time only init
from spladerunner import Expander
expander = Expander('Splade_PP_en_v1', 128) #pass model, max_seq_len

# Sample passage expansion
sparse_rep = expander.expand("The Manhattan Project and its atomic bomb helped bring an end to World War II. Its legacy of peaceful uses of atomic energy continues to have an impact on history and science.")


# For solr or elastic or vanilla lucene stores.
sparse_rep = expander.expand("The Manhattan Project and its atomic bomb helped bring an end to World War II. Its legacy of peaceful uses of atomic energy continues to have an impact on history and science.", outformat="lucene")

print(sparse_rep)
'''  # noqa: E501
PASSAGE = ("The Manhattan Project and its atomic bomb helped bring an end to World War II. Its legacy of peaceful "
           "uses of atomic energy continues to have an impact on history and science.")
LONG = " ".join(["The seasons are caused by the tilt of the axis of the earth relative to its orbit."] * 20)


@pytest.fixture(scope="module")
def legacy_cache(tmp_path_factory, foreign_logits_folder):
    cache = tmp_path_factory.mktemp("legacy") / "hub"
    populate_hf_cache(cache, MODELS["Splade_PP_en_v1"], foreign_logits_folder)
    return cache


def test_the_0_1_6_readme_usage_runs_unchanged(legacy_cache, foreign_logits_folder):
    check = f"\nimport json\nprint(json.dumps([sparse_rep, expander.expand({PASSAGE!r}), expander.source.name]))\n"
    env = {**os.environ, "HF_HUB_CACHE": str(legacy_cache), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", README_0_1_6 + check],
                            capture_output=True, text=True, env=env, cwd=legacy_cache, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning" in result.stderr and "Coming from SPLADERunner 0.1.6" in result.stderr
    assert "max_length=128 is ignored" in result.stderr
    lucene, hybrid, source = json.loads(result.stdout.splitlines()[-1])
    assert source == "Qdrant/Splade_PP_en_v1"

    expected = Expander(foreign_logits_folder).expand(PASSAGE)
    assert isinstance(hybrid, list) and len(hybrid) == 1 and isinstance(lucene, list) and len(lucene) == 1
    assert hybrid[0] == {"indices": expected.ids.tolist(), "values": expected.weights.tolist()}
    assert hybrid[0]["indices"] == sorted(hybrid[0]["indices"])
    assert list(lucene[0].items()) == [(token, round(weight, 2)) for token, weight in expected.to_dict().items()]
    weights = list(lucene[0].values())
    assert weights == sorted(weights, reverse=True) and weights[0] > 0


def test_0_1_6_keywords_and_shapes(legacy_cache, foreign_logits_folder):
    with pytest.warns(DeprecationWarning, match="max_length=64 is ignored"):
        expander = Expander(model_name="Splade_PP_en_v1", max_length=64, cache_dir=str(legacy_cache))
    assert expander.source.name == "Qdrant/Splade_PP_en_v1" and "snapshots" in str(expander.source.snapshot)
    new = Expander(foreign_logits_folder)
    with pytest.warns(DeprecationWarning, match="outformat='hybrid'"):
        [one] = expander.expand(PASSAGE)  # a str still gives a list, "hybrid" by default
    assert isinstance(one["indices"][0], int) and isinstance(one["values"][0], float)
    with pytest.warns(DeprecationWarning):
        many = expander.expand([PASSAGE, LONG], outformat="hybrid")
    assert many[0] == one and len(many) == 2
    # 0.1.6 cut documents at max_length (64 by default): here they keep the document max length.
    full, cut = new.expand(LONG), Expander(foreign_logits_folder, document_max_length=64).expand(LONG)
    assert not full.truncated and cut.truncated and cut.ids.tolist() != full.ids.tolist()
    assert many[1] == {"indices": full.ids.tolist(), "values": full.weights.tolist()}


def test_outformat_on_the_new_api_and_bad_arguments(legacy_cache, foreign_logits_folder):
    new = Expander(foreign_logits_folder)
    with pytest.warns(DeprecationWarning, match=r"vector.to_dict\(\) for 'lucene'"):
        [lucene] = new.expand(PASSAGE, outformat="lucene")
    assert lucene == {token: round(weight, 2) for token, weight in new.expand(PASSAGE).to_dict().items()}
    with pytest.raises(InputError, match="outformat must be one of 'hybrid', 'lucene'"):
        new.expand(PASSAGE, outformat="json")
    with pytest.raises(InputError, match="not both"):
        Expander(foreign_logits_folder, model_name="Splade_PP_en_v1")
    with pytest.raises(InputError, match="max_length must be an int"):
        Expander(foreign_logits_folder, max_length="64")
