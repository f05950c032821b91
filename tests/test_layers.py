"""The runtime's imports run one way, read from the source with `ast` (no module is imported).

base types -> tokenisation -> loading/session -> encoders -> indexes -> evaluation/adapters -> CLI.
A module may import only from strictly lower layers, so siblings (say `evaluation` and `adapters`,
or two encoders) never import each other and no import circle can form.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spladerunner"

LAYERS: list[set[str]] = [
    {"errors", "progress", "builtin"},  # builtin: model folders shipped as data, no code
    {"arguments"},
    {"sparse", "manifest", "readers"},
    {"tokenization"},
    {"loading", "session", "integrity", "graph_scan"},  # model files: where, checked, opened
    {"legacy", "upgrade_cache"},  # choices made for the caller: 0.1.6 names and shapes; upgraded logits graphs
    {"expander", "bm25", "idf_queries"},  # encoders
    {"sparsembed"},  # an encoder built on `Expander`
    {"documents", "results", "scoring", "compiled_search", "index_folder"},  # index building blocks
    {"postings"},
    {"retrieval", "sparsembed_index"},  # indexes
    {"evaluation", "adapters", "serverless", "ray_data"},  # consumers of the encoders and indexes
    {"lambda_package"},  # builds a deployment around `serverless`
    {"cli"},
]
# The runtime's dependencies; adapters reach qdrant_client and sparse scipy only inside a function.
THIRD_PARTY = {"numpy", "onnxruntime", "tokenizers", "huggingface_hub", "qdrant_client", "scipy"}
# Imported by one module each, as optional extras: Ray Data (`[ray]`, bringing pyarrow and pandas), numba
# (`[fast]`, the compiled search kernel).
EXTRAS = {"ray_data": {"ray", "pyarrow", "pandas"}, "compiled_search": {"numba"}}
TOOLKIT = {"export", "spladerunner_export", "torch", "transformers", "optimum", "onnx"}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def modules() -> dict[str, Path]:
    """Module name (relative to the package, `cli.expand` for the CLI package) -> file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") and len(parts) == 1:
            continue
        found[".".join(p for p in parts if p != "__init__")] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import in a file: ours as `spladerunner.X`, others as written."""
    package = ["spladerunner", *name.split(".")[: None if path.name == "__init__.py" else -1]]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.module or "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                out.append((".".join([*base, node.module]), node.lineno))
            else:  # `from . import a, b`
                out += [(".".join([*base, alias.name]), node.lineno) for alias in node.names]
    return out


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)  # StopIteration names a module nobody placed


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down(name: str) -> None:
    path = modules()[name]
    own = layer_of(name)
    for target, line in imports(name, path):
        where = f"spladerunner/{path.relative_to(PACKAGE)}:{line} imports {target}"
        top = target.split(".")[0]
        if name == "cli.export" and target == "spladerunner_export.cli":
            continue  # the `spladerunner-export` stub hands the command over to the toolkit, if installed
        assert top not in TOOLKIT, f"{where}: the runtime never imports the export toolkit or torch"
        if top == "spladerunner":
            inner = target.removeprefix("spladerunner").removeprefix(".")
            assert inner, f"{where}: the package root imports everything lazily; import the module"
            if inner.split(".")[0] == name.split(".")[0]:
                continue  # within the CLI package
            assert layer_of(inner) < own, f"{where}: an import from the same or a higher layer"
        else:
            allowed = THIRD_PARTY | EXTRAS.get(name, set())
            assert top in allowed or top in sys.stdlib_module_names, f"{where}: not a runtime dependency"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an encoder importing an index is refused."""
    bad = tmp_path / "bm25.py"
    bad.write_text("from .retrieval import SparseIndex\n")
    [(target, _)] = imports("bm25", bad)
    assert target == "spladerunner.retrieval" and layer_of("retrieval") > layer_of("bm25")


def test_every_package_folder_is_in_the_wheel() -> None:
    """pyproject lists the runtime's packages by hand: a new sub-package must be listed; the toolkit is not."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(("spladerunner", *init.parent.relative_to(PACKAGE).parts)).rstrip(".")
               for init in PACKAGE.rglob("__init__.py")}
    assert folders == listed
