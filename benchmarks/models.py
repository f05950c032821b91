"""The benchmark model, one set of weights in three layouts, cached under benchmarks/.work/models.

- `checkpoint/`: the factory's random-init, sparsity-calibrated BERT masked-LM, or (`--model splade-tiny`) a
  copy of the real trained ../shared/models/splade-tiny (sentence-transformers reads it).
- `export/`: `spladerunner-export` of that checkpoint: fused-pooling fp32 graph, dynamic int8, fp16 (GPU run).
- `export-unfused/`: the same export made with `--unfused-attention` (a lever).
- `fastembed/`: a plain logits graph of the same checkpoint with the tokenizer files fastembed reads.

The max length is pinned in every folder's `tokenizer_config.json` (fastembed truncates at
`model_max_length`), so no system silently uses a different one. Building needs torch, so it runs in
a child process (`python -m benchmarks.models`); the orchestrator stays light.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .systems import Folders

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
REAL_MODEL = "splade-tiny"  # `size` naming the real trained checkpoint instead of a factory model


def cache_key(size: str, max_length: int) -> str:
    """Folder name: model size, max length and a hash of the export toolkit's source (rebuild when it changes)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "export").glob("*.py")) + [Path(__file__)]:
        digest.update(path.read_bytes())
    return f"{size if size == REAL_MODEL else 'bert-' + size}-len{max_length}-{digest.hexdigest()[:12]}"


def folders_in(root: Path) -> Folders:
    return Folders(export=root / "export", unfused=root / "export-unfused", fastembed=root / "fastembed",
                   checkpoint=root / "checkpoint")


def pin_max_length(folder: Path, max_length: int) -> None:
    """Set `model_max_length` (and drop a conflicting `max_length`) in a folder's tokenizer_config.json."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model_max_length"] = max_length
    config.pop("max_length", None)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def build(root: Path, size: str, max_length: int) -> None:
    """Write the four folders under `root` (imports torch: run it in a child process)."""
    import onnx

    from spladerunner_export.convert import export_logits, load_masked_lm
    from spladerunner_export.factory import make_test_model

    from .texts import SPLADE_TINY, TOKENIZER, calibration_texts

    if size == REAL_MODEL:
        checkpoint = root / "checkpoint"
        shutil.copytree(SPLADE_TINY, checkpoint)
        checkpoint.chmod(0o755)
        for file in checkpoint.iterdir():
            file.chmod(0o644)  # ../shared is read-only; the max length is pinned below
    else:
        checkpoint = make_test_model(root / "checkpoint", arch="bert", size=size, seed=0, tokenizer=TOKENIZER,
                                     calibration=calibration_texts())
    pin_max_length(checkpoint, max_length)
    # Exit status 1 means the export's parity check failed; the folder is complete and the report
    # (manifest "parity") is shown in RESULTS.md.
    for folder, extra in (("export", ["--precisions", "fp32,int8,fp16"]),
                          ("export-unfused", ["--precisions", "fp32,int8", "--unfused-attention"])):
        done = subprocess.run([sys.executable, "-m", "spladerunner_export", "convert", str(checkpoint),
                               str(root / folder), *extra, "--query-max-length", str(max_length),
                               "--document-max-length", str(max_length)], cwd=REPO)
        if done.returncode not in (0, 1):
            raise SystemExit(f"spladerunner-export failed with status {done.returncode}")
    fastembed = root / "fastembed"
    fastembed.mkdir()
    onnx.save(export_logits(load_masked_lm(checkpoint)), fastembed / "model.onnx")
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():  # splade-tiny ships no special_tokens_map.json
            shutil.copyfile(checkpoint / name, fastembed / name)


def prepare_models(cache: Path, size: str, max_length: int, log: Callable[[str], object] = print) -> Folders:
    """The cached folders for this size and max length, built first if missing (atomically: build, then rename)."""
    root = cache.resolve() / cache_key(size, max_length)
    if not root.is_dir():
        log(f"building the {size} benchmark model in {root} ...")
        staging = root.with_name(f"{root.name}.building-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "benchmarks.models", str(staging), "--size", size,
                        "--max-length", str(max_length)], check=True, cwd=REPO, env=env)
        try:
            staging.rename(root)
        except OSError:  # built concurrently by another run: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    return folders_in(root)


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the benchmark model folders (internal).")
    parser.add_argument("root", type=Path)
    parser.add_argument("--size", default="base")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    build(args.root, args.size, args.max_length)


if __name__ == "__main__":
    main()
