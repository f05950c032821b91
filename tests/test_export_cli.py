"""spladerunner-export on a runtime-only install: the install hint, not an ImportError; one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import REPO

from spladerunner_export.errors import ExportError, GraphRewriteError

# Runs the CLI in a fresh interpreter that cannot import the given modules, as on an install without
# the extra: a None entry in sys.modules makes `find_spec` return None and `import` raise
# ModuleNotFoundError, just as for a package that is not there.
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from spladerunner_export.cli import main
sys.exit(main(sys.argv[2:]))
"""
EXTRA = "torch,transformers,optimum,onnx"
HINT = 'pip install "spladerunner[export]"'


def run_without(modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args", [["--help"], [], ["test-model", "out"], ["convert", "a", "b"], ["ckpt", "out"],
                                  ["sparsembed", "--help"], ["upgrade", "a", "b"]])
def test_runtime_only_install_prints_the_install_hint(args, tmp_path):
    result = run_without(EXTRA, *args)
    assert result.returncode == 2, result.stderr
    assert HINT in result.stderr and "Traceback" not in result.stderr
    assert "missing: " in result.stderr and not result.stdout


def test_upgrade_needs_only_onnx_and_convert_names_what_is_missing():
    result = run_without("torch,transformers,optimum", "upgrade", "--help")
    assert result.returncode == 0 and "usage: spladerunner-export upgrade" in result.stdout, result.stderr
    result = run_without("optimum", "convert", "--help")
    assert result.returncode == 2 and "(missing: optimum)" in result.stderr


def test_errors_are_one_line_messages(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_without("torch,transformers,optimum", "upgrade", str(empty), str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "no logits graph" in result.stderr
    assert "Traceback" not in result.stderr


def test_toolkit_errors_are_spladerunner_errors():
    from spladerunner.errors import GraphError, SpladerunnerError

    assert issubclass(GraphRewriteError, ExportError)
    assert issubclass(ExportError, SpladerunnerError) and issubclass(ExportError, ValueError)
    assert not issubclass(GraphRewriteError, GraphError) and GraphRewriteError.__name__ != GraphError.__name__


def test_the_runtime_stub_hands_over_or_says_how_to_install() -> None:
    """`spladerunner-export` belongs to the runtime: without the toolkit distribution it prints the install
    command (exit 2); with it, it runs the toolkit's command."""
    stub = "import sys\nfrom spladerunner.cli.export import main\nsys.exit(main(sys.argv[2:]))\n"
    hidden = subprocess.run([sys.executable, "-c", WITHOUT.split("from spladerunner_export")[0] + stub,
                             "spladerunner_export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert hidden.returncode == 2 and HINT in hidden.stderr and "Traceback" not in hidden.stderr
    present = subprocess.run([sys.executable, "-c", WITHOUT.split("from spladerunner_export")[0] + stub, "",
                              "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert present.returncode == 0 and "test-model" in present.stdout


def test_the_runtime_wheel_carries_no_toolkit(tmp_path) -> None:
    """The runtime's wheel holds `spladerunner` only; the toolkit is the `spladerunner-export` distribution."""
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("spladerunner-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"spladerunner", "spladerunner-0.2.0.dist-info"}, tops
    metadata = zipfile.ZipFile(wheel).read("spladerunner-0.2.0.dist-info/METADATA").decode()
    assert "spladerunner-export==0.2.0; extra == \"export\"" in metadata
    assert "entry_points" not in tops
