"""`import spladerunner` must stay light: serverless cold starts pay for every module it loads."""

import subprocess
import sys

HEAVY = ["torch", "transformers", "optimum", "onnx", "onnxruntime", "numpy", "tokenizers", "huggingface_hub"]


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_loads_nothing_heavy():
    loaded = run_python(
        "import sys, spladerunner\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    ).split()
    assert loaded == []


def test_expander_import_does_not_pull_the_export_toolkit():
    loaded = run_python(
        "import sys\nfrom spladerunner import Expander, SparseBatch\n"
        "print(' '.join(m for m in ['torch', 'transformers', 'optimum', 'onnx', 'export'] if m in sys.modules))"
    ).split()
    assert loaded == []


def test_unknown_attribute_is_an_attribute_error():
    out = run_python("import spladerunner\ntry:\n    spladerunner.nope\nexcept AttributeError as e:\n    print(e)")
    assert "nope" in out
