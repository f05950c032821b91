"""Model loading: find a model folder locally or in the Hugging Face cache, and describe it by a manifest.

Our own exports carry `spladerunner.json`. Foreign graphs (fastembed/Qdrant `model.onnx`, a
sentence-transformers `onnx/` folder, optimum exports) have only a logits graph and a tokenizer:
for those a manifest is derived from the tokenizer, so one code path serves both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ManifestError, ModelNotFoundError
from .manifest import MANIFEST_NAME, GraphEntry, Manifest, check_relative_path

# SPLADE++ (prithivida/Splade_PP_en_v1, Apache-2.0) as exported to ONNX by Qdrant; see models/.
DEFAULT_MODEL = "Qdrant/Splade_PP_en_v1"
# Model folders shipped inside the package (spladerunner/builtin/<name>/, built as models/README.md says):
# they load by name, offline, before any Hub lookup.
BUILTIN_FOLDER = Path(__file__).resolve().parent / "builtin"
BUILTIN_MODELS = ("splade-tiny",)
FOREIGN_GRAPHS = ("model.onnx", "onnx/model.onnx")
FOREIGN_MAX_LENGTH = 512


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from: a local folder, or a hub repository read through the HF cache."""

    name: str
    folder: Path | None = None
    revision: str | None = None
    cache_dir: str | None = None

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    def fetch(self, filename: str) -> Path:
        """Local path of one file of the model, downloading it into the HF cache if needed.

        A path that leaves the model folder (`..`, absolute, or a symlink resolving elsewhere) raises
        `ManifestError`: model folders may come from anyone. Hub files are symlinks into the repository's
        `blobs/`, which counts as inside; so does a local folder that is itself an HF cache snapshot.
        """
        problem = check_relative_path(filename)
        if problem:
            raise ManifestError(f"{self.name}: file {problem}")
        if self.folder is not None:
            path = self.folder / filename
            if not path.is_file():
                raise ModelNotFoundError(f"{path}: file missing from model folder {self.folder}")
            return _contained(path, self.folder)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            path = Path(hf_hub_download(self.name, filename, revision=self.revision, cache_dir=self.cache_dir))
        except (EntryNotFoundError, RepositoryNotFoundError, LocalEntryNotFoundError) as exc:
            raise ModelNotFoundError(
                f"{self.name}/{filename}: not found in the Hugging Face cache or on the hub "
                f"(revision {self.revision or 'main'}): {type(exc).__name__}"
            ) from exc
        snapshot = path.parents[len(PurePosixPath(filename).parts) - 1]
        return _contained(path, snapshot)

    def exists(self, filename: str) -> bool:
        try:
            self.fetch(filename)
        except ModelNotFoundError:
            return False
        return True


def _contained(path: Path, folder: Path) -> Path:
    """`path` if it resolves inside `folder` (or, for an HF cache snapshot, inside its repository's blobs)."""
    real, roots = path.resolve(), [folder.resolve()]
    if folder.parent.name == "snapshots":  # models--org--name/snapshots/<commit>/ -> ../../blobs/<sha256>
        roots.append(folder.parent.parent.resolve() / "blobs")
    if not any(real.is_relative_to(root) for root in roots):
        raise ManifestError(f"{path}: resolves to {real}, outside the model folder {folder}")
    return path


def open_source(model: str | Path, *, revision: str | None = None, cache_dir: str | None = None) -> ModelSource:
    """A built-in model when `model` is one's name, a local folder when it names one, else a hub repository id."""
    path = Path(model).expanduser()
    if isinstance(model, str) and model in BUILTIN_MODELS:
        if path.is_dir():
            raise ModelNotFoundError(f"{model!r} names both a built-in model and a folder in {Path.cwd()}: pass "
                                     f"'./{model}' for the folder, or run elsewhere for the built-in model")
        return ModelSource(model, folder=BUILTIN_FOLDER / model)
    if path.is_dir():
        return ModelSource(str(path), folder=path)
    if path.exists():
        raise ModelNotFoundError(f"{path}: expected a model folder, found a file")
    name = str(model)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{name}: no such model folder, and not a hub id of the form 'org/name'")
    return ModelSource(name, revision=revision, cache_dir=cache_dir)


def load_manifest(source: ModelSource) -> Manifest:
    """The model's manifest: its own `spladerunner.json`, or one derived for a foreign logits graph."""
    if source.exists(MANIFEST_NAME):
        return Manifest.read(source.fetch(MANIFEST_NAME).parent)
    for graph in FOREIGN_GRAPHS:
        if source.exists(graph):
            return foreign_manifest(source, graph)
    if source.is_local:
        raise ModelNotFoundError(
            f"{source.folder}: {MANIFEST_NAME} is missing (the manifest of a spladerunner export), and there "
            f"is no foreign logits graph either (looked for {' and '.join(FOREIGN_GRAPHS)})"
        )
    where = (f"in the Hugging Face cache or on the hub (revision {source.revision or 'main'}"
             + (", HF_HUB_OFFLINE is set)" if is_offline() else ")"))
    raise ModelNotFoundError(
        f"{source.name}: not found {where}: neither {MANIFEST_NAME} (a spladerunner export) nor a logits "
        f"graph ({' or '.join(FOREIGN_GRAPHS)})"
    )


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def foreign_manifest(source: ModelSource, graph: str) -> Manifest:
    """Describe a folder holding only a logits graph and `tokenizer.json` (fastembed/optimum layout)."""
    from .tokenization import load_tokenizer, special_token_ids

    tokenizer = load_tokenizer(source.fetch("tokenizer.json"))
    max_length = FOREIGN_MAX_LENGTH
    if source.exists("tokenizer_config.json"):
        config_path = source.fetch("tokenizer_config.json")
        try:
            configured = json.loads(config_path.read_text(encoding="utf-8")).get("model_max_length")
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{config_path}: not valid JSON ({exc})") from None
        # Tokenizers without a limit store a huge sentinel (1e30); BERT position tables stop at 512.
        if isinstance(configured, int) and 2 <= configured < FOREIGN_MAX_LENGTH:
            max_length = configured
    entry = {"fp32": GraphEntry(graph, output="logits")}
    return Manifest(
        kind="splade",
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        special_token_ids=special_token_ids(tokenizer),
        max_length={"query": max_length, "document": max_length},
        encoders={"query": entry, "document": entry},
        source={"foreign_graph": graph},
    )
