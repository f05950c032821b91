"""Every README example runs as written: python blocks in one interpreter, bash blocks line by line.

The default model id resolves through a Hugging Face cache folder holding a tiny foreign logits model
under `Qdrant/Splade_PP_en_v1` (and the shared BERT tokenizer under `google-bert/bert-base-uncased`,
the test-model factory's default), in offline mode: the same code path a user's first run takes, minus
the download. `pip install ... &&` prefixes are set-up, not examples: the rest of such a line runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from hf_cache import populate_hf_cache
from paths import REPO, TOKENIZER_DIR

from spladerunner_export.calibration import DEFAULT_TOKENIZER

README = REPO / "README.md"
TEST_COMMAND = "python -m pytest -q"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def readme_blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


def bash_commands() -> list[str]:
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"^pip install [^&]*&&\s*", "", line.strip())
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def example_env(workdir: Path, foreign_logits_folder: Path) -> dict[str, str]:
    cache = workdir / "hf-cache"
    populate_hf_cache(cache, "Qdrant/Splade_PP_en_v1", foreign_logits_folder)
    populate_hf_cache(cache, DEFAULT_TOKENIZER, TOKENIZER_DIR)
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def test_readme_starts_with_the_two_setup_commands():
    first, second = readme_blocks("bash")[:2]
    assert "spladerunner expand" in first
    assert TEST_COMMAND in second
    ci_script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci_script  # CI runs exactly the README's test command
    install = second.split("&&")[0].removeprefix("pip install").strip()
    assert install in ci_script  # ... after installing exactly what the README installs


def test_python_examples_run(tmp_path, foreign_logits_folder, tiny_bert_export):
    shutil.copytree(tiny_bert_export, tmp_path / "my-model")
    script = "\n\n".join(readme_blocks("python"))
    assert "Expander" in script
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env=example_env(tmp_path, foreign_logits_folder), timeout=600)
    assert result.returncode == 0, f"README python examples failed:\n{result.stderr[-3000:]}"
    assert "True" in result.stdout  # the ranking example


def test_bash_examples_run(tmp_path, foreign_logits_folder):
    env = example_env(tmp_path, foreign_logits_folder)
    commands = [c for c in bash_commands() if TEST_COMMAND not in c]
    assert any(c.startswith("spladerunner-export") for c in commands)
    for command in commands:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, capture_output=True,
                                text=True, env=env, timeout=600)
        assert result.returncode == 0, f"README command failed: {command}\n{result.stderr[-3000:]}"
