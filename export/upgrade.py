"""`upgrade`: fuse pooling into a foreign logits graph and quantise it, with onnx + onnxruntime only.

Foreign folders are fastembed/Qdrant (`model.onnx` beside `tokenizer.json`), optimum exports, and
sentence-transformers (`onnx/model.onnx`, tokenizer at the top). The parity reference is the
untouched foreign graph, pooled in numpy. Nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from spladerunner.loading import FOREIGN_GRAPHS
from spladerunner.manifest import MODES, Manifest
from spladerunner.upgrade_cache import upgraded_folder
from spladerunner_export.build import ExportOptions, SpladeExport, build
from spladerunner_export.errors import ExportError
from spladerunner_export.graph import logits_output
from spladerunner_export.parity import LogitsReference
from spladerunner_export.provenance import resolve_checkpoint


def find_logits_graph(folder: Path) -> Path:
    """The folder's logits graph: `model.onnx`, else `onnx/model.onnx`."""
    for candidate in FOREIGN_GRAPHS:
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"{folder}: no logits graph ({' or '.join(FOREIGN_GRAPHS)}); pass graph=")


def upgrade_folder(folder: str | Path, out: str | Path | None = None, *, graph: str | Path | None = None,
                   revision: str | None = None, options: ExportOptions | None = None) -> Manifest:
    """Turn a folder (or hub id) holding a logits graph and `tokenizer.json` into a spladerunner folder.

    `out` defaults, for a hub id, to the runtime's upgrade cache (`spladerunner.upgrade_cache`), where
    `Expander(hub id)` finds it. A new `out` is written under a temporary name and renamed when complete,
    so a reader never sees half a folder; when another process finished the same folder first, theirs stays.
    `graph` overrides the graph's location (relative to the folder, or absolute).
    """
    options = options or ExportOptions()
    source = resolve_checkpoint(folder, revision)
    if out is None:
        if Path(folder).is_dir():
            raise ExportError(f"{folder}: give an output folder (the default, the upgrade cache, is for hub ids)")
        out = upgraded_folder(str(folder), source.revision)
    out = Path(out)
    if out.resolve() == source.path.resolve():
        raise ExportError("upgrade writes model.onnx: give an output folder other than the input")
    graph_path = source.path / graph if graph is not None else find_logits_graph(source.path)
    tokenizer_json = source.path / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json}: upgrade needs the tokenizer.json beside the graph")
    logits = onnx.load(graph_path)
    reference = LogitsReference(graph_path, logits_output(logits).name, options.pooling)
    record = {**source.record(), "graph": str(graph) if graph is not None else
              graph_path.relative_to(source.path).as_posix()}
    staging = out if out.exists() else out.with_name(f".{out.name}.upgrading-{os.getpid()}")
    try:
        manifest = build(staging, {"": SpladeExport(logits, reference, options)}, dict.fromkeys(MODES, ""),
                         tokenizer_json, options=options, source=record,
                         reference_name="onnxruntime logits graph pooled in numpy")
    except BaseException:
        if staging != out:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if staging != out:
        try:
            staging.rename(out)
        except OSError:  # written concurrently by another process: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
