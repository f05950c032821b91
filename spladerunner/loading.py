"""Model loading: find a model folder locally or in the Hugging Face cache, and describe it by a manifest.

Our own exports carry `spladerunner.json`. Foreign graphs (fastembed/Qdrant `model.onnx`, a
sentence-transformers `onnx/` folder, optimum exports) have only a logits graph and a tokenizer:
for those a manifest is derived from the tokenizer, so one code path serves both.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from .errors import HubUnreachableError, ManifestError, ModelNotFoundError, NotCachedOfflineError, NotOnHubError
from .manifest import MANIFEST_NAME, GraphEntry, Manifest, check_relative_path

# SPLADE++ (prithivida/Splade_PP_en_v1, Apache-2.0) as exported to ONNX by Qdrant; see models/.
DEFAULT_MODEL = "Qdrant/Splade_PP_en_v1"
# Model folders shipped inside the package (spladerunner/builtin/<name>/, built as models/README.md says):
# they load by name, offline, before any Hub lookup.
BUILTIN_FOLDER = Path(__file__).resolve().parent / "builtin"
BUILTIN_MODELS = ("splade-tiny",)
FOREIGN_GRAPHS = ("model.onnx", "onnx/model.onnx")
FOREIGN_MAX_LENGTH = 512


# The hub is asked once (`ModelSource._hub_commit`) with this timeout in seconds; HF_HUB_ETAG_TIMEOUT overrides
# it, as it does huggingface_hub's own metadata requests.
PROBE_TIMEOUT = 5.0
# Endings that mark a file path, never a hub id (`open_source`).
PATH_SUFFIXES = (".onnx", ".json", ".zip", ".gz", ".tar", ".bin", ".safetensors", ".txt")
COMMIT = re.compile(r"[0-9a-f]{40}")
# huggingface_hub's repo id rule (letters, digits, -_. between word characters), checked before any request.
HUB_ID = re.compile(r"\b[\w.-]+\b/\b[\w.-]+\b")
BUILTIN_HINT = "the built-in model works offline: Expander(\"splade-tiny\")"



@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from: a local folder, or a hub repository read through the HF cache.

    A hub model's files come from the cache first, without any network: once a snapshot of the revision
    is cached, its files are what the model has (a file it lacks is fetched at that same commit, so one
    model never mixes commits). Only a model that is not cached makes the hub be asked, once, with a short
    timeout (`PROBE_TIMEOUT`), so an unreachable hub fails within seconds, not after huggingface_hub's
    retries of every file, and with an error saying which of unreachable, not on the hub or offline it was.
    """

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
        path = self._cached(filename) or self._download(filename)
        snapshot = path.parents[len(PurePosixPath(filename).parts) - 1]
        return _contained(path, snapshot)

    def exists(self, filename: str) -> bool:
        """Whether the model has this file. A cached snapshot answers alone (no network): it holds every
        file the model had when it was fetched, and a model is used as cached."""
        if self.folder is not None or self._cached(filename) is not None:
            try:
                self.fetch(filename)
            except ModelNotFoundError:
                return False
            return True
        if self.snapshot is not None:
            return False
        from huggingface_hub.errors import EntryNotFoundError

        try:
            self._download(filename)
        except NotOnHubError as exc:
            if isinstance(exc.__cause__, EntryNotFoundError):  # the repository is there, the file is not
                return False
            raise
        return True

    @property
    def cache_folder(self) -> Path:
        """The Hugging Face hub cache searched: `cache_dir`, else HF_HUB_CACHE (default: HF_HOME/hub)."""
        from huggingface_hub import constants

        return Path(self.cache_dir if self.cache_dir is not None else constants.HF_HUB_CACHE).expanduser()

    @property
    def repo_folder(self) -> Path:
        return self.cache_folder / ("models--" + self.name.replace("/", "--"))

    @cached_property
    def snapshot(self) -> Path | None:
        """The cached snapshot folder of the revision (`refs/<revision>` names its commit), if any."""
        revision = self.revision or "main"
        commit: str | None = revision if COMMIT.fullmatch(revision) else None
        ref = self.repo_folder / "refs" / revision
        if commit is None and ref.is_file():
            commit = ref.read_text(encoding="utf-8").strip()
        snapshot = self.repo_folder / "snapshots" / commit if commit else None
        return snapshot if snapshot is not None and snapshot.is_dir() else None

    def _cached(self, filename: str) -> Path | None:
        if self.snapshot is None:
            return None
        path = self.snapshot / filename
        return path if path.is_file() else None

    def _download(self, filename: str) -> Path:
        """Fetch one file from the hub into the cache, after one probe says the hub is there."""
        if is_offline():
            cached = f"the cached snapshot {self.snapshot} lacks {filename}" if self.snapshot else self._not_cached()
            raise NotCachedOfflineError(f"{self.name}: HF_HUB_OFFLINE is set and {cached}; unset HF_HUB_OFFLINE to "
                                        f"download it, or point HF_HUB_CACHE (or cache_dir=) at the cache that "
                                        f"holds it; {BUILTIN_HINT}")
        self._hub_commit  # noqa: B018 -- raises, once and fast, when the hub is unreachable or lacks the model
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        # A partly cached model completes its own commit; otherwise the revision (its ref gets cached).
        revision = self.snapshot.name if self.snapshot is not None else self.revision
        try:
            return Path(hf_hub_download(self.name, filename, revision=revision, cache_dir=self.cache_dir))
        except EntryNotFoundError as exc:
            raise NotOnHubError(f"{self.name}: no file {filename} in the hub repository (revision "
                                f"{revision or 'main'})") from exc
        except LocalEntryNotFoundError as exc:  # the connection dropped after the probe
            raise self._unreachable(exc) from exc

    @cached_property
    def _hub_commit(self) -> str:
        """Ask the hub, once and with a short timeout, for the revision's commit."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            info = HfApi().model_info(self.name, revision=self.revision, timeout=probe_timeout())
        except RevisionNotFoundError as exc:
            raise NotOnHubError(f"{self.name}: the hub has no revision {self.revision!r} of this model; "
                                f"{self._not_cached()}") from exc
        except GatedRepoError as exc:
            raise NotOnHubError(f"{self.name}: the model is gated on the hub: accept its terms on the model page "
                                f"and log in (`hf auth login` or HF_TOKEN); {self._not_cached()}") from exc
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if isinstance(exc, RepositoryNotFoundError) or status == 404:
                raise NotOnHubError(f"{self.name}: no such model on the hub ({_endpoint()}; private models need a "
                                    f"token: `hf auth login` or HF_TOKEN); {self._not_cached()}") from exc
            raise self._unreachable(exc) from exc  # reached, but it failed (5xx, a proxy's page)
        except Exception as exc:  # the transport's own errors (requests or httpx: refused, DNS, timeout, TLS)
            raise self._unreachable(exc) from exc
        return str(info.sha)

    def _not_cached(self) -> str:
        if self.snapshot is not None:
            return f"the cached snapshot {self.snapshot} lacks files the model needs"
        folder = Path(self.name).absolute()
        return (f"the model is not in the Hugging Face cache folder {self.cache_folder} (looked for "
                f"{self.repo_folder.name}, revision {self.revision or 'main'}), and there is no local folder "
                f"{folder}")

    def _unreachable(self, exc: Exception) -> HubUnreachableError:
        return HubUnreachableError(
            f"{self.name}: the Hugging Face Hub ({_endpoint()}) could not be reached: {one_line(exc)}; "
            f"{self._not_cached()}. Models already in the cache load without network (HF_HUB_OFFLINE=1 never "
            f"asks the hub); {BUILTIN_HINT}")


def probe_timeout() -> float:
    from huggingface_hub import constants

    return float(constants.HF_HUB_ETAG_TIMEOUT) if "HF_HUB_ETAG_TIMEOUT" in os.environ else PROBE_TIMEOUT


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def one_line(exc: BaseException) -> str:
    """A transport error's root cause in one line: `[Errno 111] Connection refused`, `no answer within 5 s`."""
    text = " ".join(str(exc).split())
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        reason = f"no answer within {probe_timeout():g} s"
    elif errno:
        reason = errno.group().strip()
    else:
        reason = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)[:300]
    return f"{type(exc).__name__}: {reason}"


def _contained(path: Path, folder: Path) -> Path:
    """`path` if it resolves inside `folder` (or, for an HF cache snapshot, inside its repository's blobs)."""
    real, roots = path.resolve(), [folder.resolve()]
    if folder.parent.name == "snapshots":  # models--org--name/snapshots/<commit>/ -> ../../blobs/<sha256>
        roots.append(folder.parent.parent.resolve() / "blobs")
    if not any(real.is_relative_to(root) for root in roots):
        raise ManifestError(f"{path}: resolves to {real}, outside the model folder {folder}")
    return path


def looks_like_path(name: str) -> bool:
    """Whether `name` can only mean a file path, never a hub id 'org/name'."""
    separators = {"/", os.sep, os.altsep} - {None}
    return (name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or Path(name).is_absolute()
            or sum(name.count(sep) for sep in separators) > 1 or name.endswith(tuple(separators))
            or name.lower().endswith(PATH_SUFFIXES))


def open_source(model: str | Path, *, revision: str | None = None, cache_dir: str | None = None) -> ModelSource:
    """A built-in model when `model` is one's name, a local folder when it names one, else a hub repository id
    ('org/name').

    A name that can only be a path (`looks_like_path`, or a `Path`) is never sent to the hub."""
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
    if isinstance(model, Path) or looks_like_path(name):
        raise ModelNotFoundError(f"{name}: no such folder ({path.absolute()}); a model is a folder holding "
                                 f"{MANIFEST_NAME} or a logits graph, or a hub id 'org/name'")
    if name.count("/") != 1 or not HUB_ID.fullmatch(name) or "--" in name or ".." in name:
        raise ModelNotFoundError(f"{name}: no such folder ({path.absolute()}), and not a hub id of the form "
                                 f"'org/name'")
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
    cached = source.snapshot is not None
    where = (f"the cached snapshot {source.snapshot}" if cached
             else f"the hub repository (revision {source.revision or 'main'})")
    raise (ModelNotFoundError if cached else NotOnHubError)(
        f"{source.name}: {where} holds neither {MANIFEST_NAME} (a spladerunner export) nor a logits graph "
        f"({' or '.join(FOREIGN_GRAPHS)})")


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
