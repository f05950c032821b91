"""The systems under test behind one interface: load, prepare (untimed), run (timed), read back CSR.

- `spladerunner`: our `Expander`, end to end (tokenise, batch, run, sparsify).
- `onnxruntime`: a bare session on our own graph, fed pre-tokenised batches: the floor for our overhead.
- `fastembed`: `SparseTextEmbedding` on a logits graph of the same weights.
- `sentence-transformers`: `SparseEncoder` (torch fp32) on the same masked-LM checkpoint.

Heavy libraries are imported inside the methods, so importing this module costs nothing measurable
(the cold-start and import tasks time the imports themselves).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where used: the cold-start task times every import
    import numpy as np

    CSR = tuple[np.ndarray, np.ndarray, np.ndarray]

SYSTEMS = ("spladerunner", "onnxruntime", "fastembed", "sentence-transformers")
# What a user types to get each system; the import and cold-start tasks time exactly this.
IMPORTS = {
    "spladerunner": ("spladerunner", "Expander"),
    "onnxruntime": ("onnxruntime", "InferenceSession"),
    "fastembed": ("fastembed", "SparseTextEmbedding"),
    "sentence-transformers": ("sentence_transformers", "SparseEncoder"),
}
# torch and transformers pinned as in the [export] extra, so installing the peers never moves them.
INSTALL_HINT = ('pip install "fastembed==0.9.*" "sentence-transformers==5.7.*" "psutil>=5.9" "matplotlib>=3.8" '
                '"torch==2.13.0" "transformers==4.57.*"')
FASTEMBED_MODEL = "prithivida/Splade_PP_en_v1"


@dataclass(frozen=True)
class Setup:
    """One configuration of one system. `max_tokens` None keeps the runtime's default token budget;
    `graph` "unfused" runs our runtime on the export made with `--unfused-attention`."""

    system: str
    precision: str = "fp32"
    batch_size: int = 32
    max_tokens: int | None = None
    threads: int | None = None
    providers: tuple[str, ...] = ("cpu",)
    session_options: dict[str, Any] = field(default_factory=dict)
    graph: str = "export"
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.system in ("spladerunner", "onnxruntime"):
            return f"{self.system} {self.precision}"
        return self.system

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Setup:
        return cls(**{**data, "providers": tuple(data.get("providers", ("cpu",)))})

    def with_(self, **changes: Any) -> Setup:
        return replace(self, **changes)


@dataclass(frozen=True)
class Folders:
    """Model folders: our export (and the same made with `--unfused-attention`), the fastembed layout (logits graph) and
    the masked-LM checkpoint."""

    export: Path
    unfused: Path
    fastembed: Path
    checkpoint: Path

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Folders:
        return cls(**{k: Path(v) for k, v in data.items()})


def require_peers() -> None:
    """Fail with the install line when a peer library is missing."""
    missing = [module for module in ("fastembed", "sentence_transformers", "psutil", "matplotlib")
               if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit(f"benchmarks need {', '.join(missing)}; install the peers with:\n  {INSTALL_HINT}")


def patch_session_options(overrides: dict[str, Any]) -> None:
    """Apply SessionOptions attributes (or `config:<key>` session config entries) to every session made later.

    Lets the lever study change what `GraphSession` builds without touching the runtime.
    """
    if not overrides:
        return
    import onnxruntime as ort

    base = ort.InferenceSession

    class Patched(base):  # type: ignore[misc, valid-type]
        def __init__(self, path: Any, sess_options: Any = None, providers: Any = None, **kwargs: Any):
            options = sess_options or ort.SessionOptions()
            for key, value in overrides.items():
                if key.startswith("config:"):
                    options.add_session_config_entry(key.removeprefix("config:"), str(value))
                else:
                    setattr(options, key, value)
            super().__init__(path, sess_options=options, providers=providers, **kwargs)

    ort.InferenceSession = Patched  # type: ignore[misc]


def dense_to_csr(weights: np.ndarray, drop_ids: np.ndarray) -> CSR:
    """Pooled weights [rows, vocab] -> CSR of the positive entries, special tokens removed."""
    import numpy as np

    weights = weights.copy()
    weights[:, drop_ids] = 0.0
    keep = weights > 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    rows, cols = np.nonzero(keep)
    return indptr, cols.astype(np.int32), weights[rows, cols].astype(np.float32)


def rows_to_csr(rows: list[tuple[np.ndarray, np.ndarray]], drop_ids: np.ndarray) -> CSR:
    """(ids, weights) per text -> CSR sorted by id, special tokens and zero weights removed."""
    import numpy as np

    indptr, indices, values = [0], [], []
    for ids, weights in rows:
        ids, weights = np.asarray(ids, dtype=np.int64), np.asarray(weights, dtype=np.float32)
        keep = (weights > 0) & ~np.isin(ids, drop_ids)
        order = np.argsort(ids[keep], kind="stable")
        indices.append(ids[keep][order])
        values.append(weights[keep][order])
        indptr.append(indptr[-1] + int(keep.sum()))
    return (np.array(indptr, dtype=np.int64), np.concatenate(indices or [np.zeros(0)]).astype(np.int32),
            np.concatenate(values or [np.zeros(0)]).astype(np.float32))


class Runner:
    """A loaded system. `run(prepare(texts))` is the timed part; `csr` reads its output back."""

    def __init__(self, setup: Setup, folders: Folders, max_length: int):
        self.setup = setup
        self.folders = folders
        self.max_length = max_length
        self.batch_size = setup.batch_size
        self.drop_ids: Any = ()

    def load(self) -> None:
        raise NotImplementedError

    def set_batch(self, batch_size: int, max_tokens: int | None = None) -> None:
        """Batch size (rows) for later runs; token-budgeted systems also take a token budget."""
        self.batch_size = batch_size

    def prepare(self, texts: list[str], query: bool) -> Any:
        return texts

    def run(self, prepared: Any, query: bool) -> Any:
        raise NotImplementedError

    def csr(self, output: Any) -> CSR:
        raise NotImplementedError

    def effective_max_length(self) -> int:
        """The truncation length the loaded system really applies to documents."""
        raise NotImplementedError

    def effective_max_tokens(self) -> int | None:
        """The padded-token budget per batch, for the systems that have one."""
        return None


class SpladeRunner(Runner):
    def make_expander(self) -> None:
        patch_session_options(self.setup.session_options)
        from spladerunner import Expander

        kwargs: dict[str, Any] = {"max_batch_size": self.batch_size}
        if self.setup.max_tokens is not None:
            kwargs["max_tokens"] = self.setup.max_tokens
        folder = self.folders.unfused if self.setup.graph == "unfused" else self.folders.export
        self.expander = Expander(folder, precision=self.setup.precision,
                                 providers=list(self.setup.providers), threads=self.setup.threads,
                                 query_max_length=self.max_length, document_max_length=self.max_length, **kwargs)
        self.drop_ids = self.expander.drop_ids

    def load(self) -> None:
        self.make_expander()
        # The Expander opens its sessions on first use; open them here so load figures include them.
        for mode in ("query", "document"):
            self.expander.session(mode)

    def set_batch(self, batch_size: int, max_tokens: int | None = None) -> None:
        super().set_batch(batch_size)
        self.expander.max_batch_size = batch_size
        if max_tokens is not None:
            self.expander.max_tokens = max_tokens

    def run(self, prepared: list[str], query: bool) -> Any:
        return self.expander.expand_batch(prepared, query=query)

    def csr(self, output: Any) -> CSR:
        return output.indptr, output.indices, output.values

    def effective_max_length(self) -> int:
        return self.expander.max_length["document"]

    def effective_max_tokens(self) -> int | None:
        return self.expander.max_tokens


class BareRunner(SpladeRunner):
    """Our graph on a bare `InferenceSession` (same session options as the runtime), pre-tokenised input."""

    def load(self) -> None:
        self.make_expander()  # for its tokenizer and batching settings; its own sessions stay closed
        import onnxruntime as ort

        from spladerunner.session import default_threads, normalise_providers

        expander = self.expander
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.setup.threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        paths = {mode: str(expander.source.fetch(expander.graph(mode).path)) for mode in ("query", "document")}
        opened = {path: ort.InferenceSession(path, sess_options=options,
                                             providers=normalise_providers(list(self.setup.providers)))
                  for path in set(paths.values())}  # modes sharing a graph share a session, as in the runtime
        self.sessions = {mode: opened[path] for mode, path in paths.items()}
        self.feeds_token_types = "token_type_ids" in [i.name for i in self.sessions["document"].get_inputs()]

    def prepare(self, texts: list[str], query: bool) -> Any:
        from spladerunner.tokenization import batches, encode

        expander = self.expander
        mode = "query" if query else "document"
        encoded = encode(expander.tokenizer, texts, expander.max_length[mode])
        feeds = []
        for batch in batches(encoded, max_tokens=expander.max_tokens, max_batch_size=expander.max_batch_size,
                             pad_id=expander.pad_id):
            feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            if self.feeds_token_types:
                feed["token_type_ids"] = batch.token_type_ids
            feeds.append((batch.rows, feed))
        return feeds

    def run(self, prepared: Any, query: bool) -> Any:
        session = self.sessions["query" if query else "document"]
        return [(rows, session.run(None, feed)[0]) for rows, feed in prepared]

    def csr(self, output: Any) -> CSR:
        import numpy as np

        total = sum(len(rows) for rows, _ in output)
        dense = np.zeros((total, output[0][1].shape[1]), dtype=np.float32)
        for rows, weights in output:
            dense[rows] = weights
        return dense_to_csr(dense, self.drop_ids)


class FastembedRunner(Runner):
    def load(self) -> None:
        from fastembed import SparseTextEmbedding

        providers = ["CUDAExecutionProvider" if p == "cuda" else "CPUExecutionProvider" for p in self.setup.providers]
        self.model = SparseTextEmbedding(model_name=FASTEMBED_MODEL, specific_model_path=str(self.folders.fastembed),
                                         local_files_only=True, threads=self.setup.threads, providers=providers)
        self.drop_ids = _special_ids(self.folders.fastembed)

    def run(self, prepared: list[str], query: bool) -> Any:
        if query:
            return list(self.model.query_embed(prepared))
        return list(self.model.embed(prepared, batch_size=self.batch_size))

    def csr(self, output: Any) -> CSR:
        return rows_to_csr([(e.indices, e.values) for e in output], self.drop_ids)

    def effective_max_length(self) -> int:
        return self.model.model.tokenizer.truncation["max_length"]


class SentenceTransformersRunner(Runner):
    def load(self) -> None:
        import torch
        from sentence_transformers import SparseEncoder

        if self.setup.threads:
            torch.set_num_threads(self.setup.threads)
        device = "cuda" if "cuda" in self.setup.providers else "cpu"
        self.model = SparseEncoder(str(self.folders.checkpoint), device=device, local_files_only=True)
        self.model.max_seq_length = self.max_length
        self.drop_ids = _special_ids(self.folders.checkpoint)

    def run(self, prepared: list[str], query: bool) -> Any:
        encode = self.model.encode_query if query else self.model.encode_document
        return encode(prepared, batch_size=self.batch_size, show_progress_bar=False)

    def csr(self, output: Any) -> CSR:
        coo = output.coalesce().cpu()
        rows, cols = coo.indices().numpy()
        values = coo.values().numpy()
        return rows_to_csr([(cols[rows == r], values[rows == r]) for r in range(coo.shape[0])], self.drop_ids)

    def effective_max_length(self) -> int:
        return self.model.max_seq_length


def _special_ids(folder: Path) -> np.ndarray:
    import numpy as np

    from spladerunner.tokenization import load_tokenizer, special_token_ids

    return np.array(special_token_ids(load_tokenizer(folder / "tokenizer.json")), dtype=np.int64)


RUNNERS: dict[str, type[Runner]] = {
    "spladerunner": SpladeRunner,
    "onnxruntime": BareRunner,
    "fastembed": FastembedRunner,
    "sentence-transformers": SentenceTransformersRunner,
}


def make_runner(setup: Setup, folders: Folders, max_length: int) -> Runner:
    return RUNNERS[setup.system](setup, folders, max_length)
