"""`Expander`: texts in, sparse bag-of-words vectors out."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set, Sized
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from . import legacy
from .arguments import check_count, check_nonnegative, check_threshold
from .errors import GraphLayoutError, InputError, InputTypeError
from .graph_scan import position_table_size
from .integrity import verify_graph
from .loading import DEFAULT_MODEL, ModelSource, load_manifest, open_source
from .manifest import (
    MANIFEST_NAME,
    MAX_MAX_LENGTH,
    MODES,
    POOLED_OUTPUT,
    TOPK_IDS_OUTPUT,
    TOPK_WEIGHTS_OUTPUT,
    Gate,
    GraphEntry,
    Manifest,
    ManifestError,
    Mode,
)
from .progress import Progress
from .session import CPU, CUDA, GraphSession, normalise_providers
from .sparse import SparseBatch, SparseVector, sparsify, sparsify_candidates
from .tokenization import (
    Batch,
    Encoded,
    batches,
    encode,
    load_tokenizer,
    special_token_ids,
    vocabulary,
    vocabulary_sha256,
)
from .upgrade_cache import upgraded_source

logger = logging.getLogger("spladerunner")

# How documents longer than the document max length are read: cut there, or in overlapping windows.
LONG_DOCUMENTS = ("truncate", "windows")
# Exponent b of the length normalisation of windowed documents: the max over the windows is divided by
# (document tokens / window tokens) ** b. Chosen on half of SciFact's queries, confirmed on the other half and
# on both window sizes (benchmarks/RESULTS-window-aggregation.md): the plain max (b = 0) lets long documents
# outrank short ones, since every window adds terms and raises weights.
DEFAULT_WINDOW_NORM = 0.25


# Lone UTF-16 surrogates: Python strings may hold them (decoding with errors="surrogateescape"), tokenizers
# (Rust) cannot take them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_items(texts: Iterable[str]) -> Iterable[str]:
    """`texts` itself once it is known to be an ordered iterable that may hold texts (items unchecked)."""
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise InputTypeError(f"texts must be a str or an iterable of str, got {type(texts).__name__}: "
                             f"decode bytes first (e.g. texts.decode('utf-8'))")
    if isinstance(texts, (Mapping, Set)) or not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a str or an ordered iterable of str, got {type(texts).__name__}")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise InputTypeError(f"texts must be a 1-D array of str, got an array of shape {texts.shape}")
    return texts


def check_texts(texts: str | Iterable[str], *, first: int = 0) -> list[str]:
    """The texts as a list, read once: a str is one text; any other iterable of str (list, tuple, generator,
    a 1-D numpy array of dtype `<U..` or of str objects) gives its items. An `InputError` names the first item
    that is not a str or not valid Unicode (`texts[i]`, counting from `first`: the offset of a chunk)."""
    if isinstance(texts, str):
        items, names = [str(texts)], lambda position: "text"
    else:
        texts = text_items(texts)
        items = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
        names = lambda position: f"texts[{first + position}]"  # noqa: E731
    for position, text in enumerate(items):
        if not isinstance(text, str):
            hint = ": decode bytes first" if isinstance(text, (bytes, bytearray)) else ""
            raise InputTypeError(f"{names(position)} is {type(text).__name__}, expected str{hint}")
        if type(text) is not str:  # numpy.str_ and other subclasses: the plain str tokenizers expects
            items[position] = text = str(text)
        surrogate = _SURROGATE.search(text)
        if surrogate:
            raise InputError(f"{names(position)} holds a lone surrogate U+{ord(surrogate.group()):04X} at character "
                             f"{surrogate.start()}: not valid Unicode (fix the decoding that produced it)")
    return items


class WindowMax:
    """The element-wise max of the sparse rows of each long document's windows, gathered as batches come.

    Rows are merged (`SparseBatch.max_by_group`) whenever the pending entries double, so memory follows the
    documents' distinct terms (at most the vocabulary each), not their number of windows.
    """

    def __init__(self) -> None:
        self.owners: list[np.ndarray] = []
        self.parts: list[SparseBatch] = []
        self.entries = 0
        self.merged = 0

    def __bool__(self) -> bool:
        return bool(self.parts)

    def add(self, owners: np.ndarray, rows: SparseBatch) -> None:
        """Rows of windows; `owners` the documents (input positions) they belong to."""
        self.owners.append(owners)
        self.parts.append(rows)
        self.entries += int(rows.indptr[-1])
        if self.entries > max(2 * self.merged, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        documents, groups = np.unique(np.concatenate(self.owners), return_inverse=True)
        merged = SparseBatch.concat(self.parts).max_by_group(groups, len(documents))
        self.owners, self.parts = [documents], [merged]
        self.entries = self.merged = int(merged.indptr[-1])

    def result(self) -> tuple[np.ndarray, SparseBatch]:
        """(documents ascending, one aggregated row each)."""
        self._merge()
        return self.owners[0], self.parts[0]


class Expander:
    """Expands queries and documents into SPLADE sparse vectors with onnxruntime.

    model: the built-in model's name ("splade-tiny", shipped in the package, offline), a local model folder
        or a hub id (read through the Hugging Face cache; cached models load without network). Our exports
        (`spladerunner.json`) and foreign logits graphs (fastembed/Qdrant, optimum, sentence-transformers
        `onnx/`) both load.
    precision: "fp32", "int8" or "fp16"; by default the fastest one the folder has whose export parity gate
        passed (`spladerunner.json` parity report): int8, else fp32, on CPU; fp16, else fp32, on CUDA.
        A failed precision runs only when asked for, with a warning quoting the gate's figures.
    providers: onnxruntime providers or the shorthands "cpu"/"cuda"; CPU by default. A requested
        provider that onnxruntime does not activate raises `ProviderError` instead of running on CPU.
    threads: intra-op threads; by default the CPUs this process may use.
    query_max_length, document_max_length: override the manifest's max lengths (tokens, specials included).
    max_length, model_name: SPLADERunner 0.1.6's arguments, accepted so its code runs unchanged (deprecated:
        `spladerunner.legacy`; max_length is ignored).
    upgrade: a hub model that ships only a logits graph runs from its upgraded folder (fused pooling,
        per-token int8; `spladerunner.upgrade_cache`) once `spladerunner-export upgrade` cached one; True makes
        it now when missing (needs the export toolkit), False keeps the logits graph. Default: $SPLADERUNNER_UPGRADE.
    max_tokens: padded tokens (rows x longest) per batch; bounds memory, whatever the batch size. The graph
        writes a [rows, length, vocab] decoder output, so small batches are lighter and, on CPU, faster too
        (the max_tokens lever of benchmarks/RESULTS.md measures both).
    long_documents: "truncate" cuts documents at the document max length; "windows" reads a longer one as
        overlapping windows of that length, each through the model like any text, and takes the element-wise
        max over them (max pooling across windows; max-pooling models only). Queries are always cut.
    window_stride: tokens between the starts of consecutive windows; by default half a window's text tokens.
    window_norm: b of the windowed documents' length normalisation (default 0.25): their max over windows is
        divided by (text tokens / a window's text tokens) ** b, as the plain max (0) favours long documents.
        One value per Expander, so that the vectors of one index share it.

    Everything that can be checked is checked at construction, not at the first `expand`: every manifest
    field's type and range, file paths staying inside the folder, each graph's sha256 against the manifest
    (`spladerunner.integrity`; verified digests are cached), the tokenizer's vocabulary hash, the graphs'
    sessions (created here, on the requested providers) and the max lengths against each graph's position
    table. One Expander may be shared by any number of threads: tokenisation never reconfigures the shared
    tokenizer and onnxruntime sessions run concurrently.
    """

    KIND = "splade"  # the manifest kind this class runs (`SparsEmbedEncoder` subclasses it for "sparsembed")

    def __init__(self, model: str | Path = DEFAULT_MODEL, max_length: int | None = None,
                 cache_dir: str | None = None, *, precision: str | None = None,
                 providers: Sequence[str | tuple[str, dict]] | None = None, threads: int | None = None,
                 revision: str | None = None,
                 query_max_length: int | None = None, document_max_length: int | None = None,
                 max_tokens: int = 1024, max_batch_size: int = 64, model_name: str | None = None,
                 upgrade: bool | None = None, long_documents: str = "truncate", window_stride: int | None = None,
                 window_norm: float | None = None):
        # SPLADERunner 0.1.6's signature (model_name, max_length, cache_dir): `spladerunner.legacy`.
        model, self._legacy = legacy.resolve(model, model_name=model_name, max_length=max_length,
                                             default=DEFAULT_MODEL)
        self.max_tokens = check_count("max_tokens", max_tokens)
        self.max_batch_size = check_count("max_batch_size", max_batch_size)
        overrides = {"query": query_max_length, "document": document_max_length}
        for mode, override in overrides.items():
            if override is not None:
                check_count(f"{mode}_max_length", override, minimum=2)  # room for the special tokens
                if override > MAX_MAX_LENGTH:
                    raise InputError(f"{mode}_max_length must be <= {MAX_MAX_LENGTH}, got {override}")
        if threads is not None:
            check_count("threads", threads)
        self.source: ModelSource = open_source(model, revision=revision, cache_dir=cache_dir)
        self.manifest: Manifest = load_manifest(self.source)
        upgraded = upgraded_source(self.source, self.manifest, upgrade)  # a hub logits graph's upgraded folder
        if upgraded is not None:
            self.source, self.manifest = upgraded
        if self.manifest.kind != self.KIND:
            raise ManifestError(f"{self.source.name}: kind {self.manifest.kind!r} is not a {self.KIND!r} model")
        self.providers = normalise_providers(providers)
        self.threads = threads
        self.max_length: dict[str, int] = dict(self.manifest.max_length)
        for mode, override in overrides.items():
            if override is not None:
                self.max_length[mode] = int(override)

        tokenizer_path = self.source.fetch(self.manifest.tokenizer)
        self.tokenizer = load_tokenizer(tokenizer_path)
        tokenizer_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if tokenizer_size != self.manifest.vocab_size:
            raise ManifestError(f"{tokenizer_path}: tokenizer has {tokenizer_size} tokens but the model "
                                f"outputs a vocabulary of {self.manifest.vocab_size}")
        self.vocab: list[str] = vocabulary(self.tokenizer)
        expected = self.manifest.vocabulary_sha256
        if expected is not None and vocabulary_sha256(self.vocab) != expected:
            raise ManifestError(f"{tokenizer_path}: the tokenizer's vocabulary is not the one the model was exported "
                                f"with ({MANIFEST_NAME} vocabulary_sha256 {expected}); same size, other tokens")
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        tokenizer_specials = special_token_ids(self.tokenizer)
        self.drop_ids = np.array(sorted(set(self.manifest.special_token_ids) | set(tokenizer_specials)),
                                 dtype=np.int64)
        self.precision = self._choose_precision(precision)
        # Keyed by the whole entry: two modes naming one file with different layouts get both checked.
        self._sessions: dict[GraphEntry, GraphSession] = {}
        for mode in MODES:
            entry = self.graph(mode)
            if entry not in self._sessions:
                self._sessions[entry] = self._open(entry)
        self._check_max_lengths(overridden={mode: value is not None for mode, value in overrides.items()})
        self.long_documents, self.window_stride = long_documents, None
        self.window_stride = self._stride(long_documents, window_stride, query=False)
        if window_norm is not None and long_documents != "windows":
            raise InputError("window_norm applies to long_documents='windows' only")
        self.window_norm = DEFAULT_WINDOW_NORM if window_norm is None else check_nonnegative("window_norm", window_norm)

    @property
    def _derived(self) -> bool:
        """Whether the manifest was derived for a foreign logits graph (the folder has no spladerunner.json)."""
        return "foreign_graph" in self.manifest.source

    def _open(self, entry: GraphEntry) -> GraphSession:
        path = self.source.fetch(entry.path)
        verify_graph(path, entry.sha256)
        try:
            return GraphSession(path, entry, vocab_size=self.manifest.vocab_size, pooling=self.manifest.pooling,
                                providers=self.providers, threads=self.threads)
        except GraphLayoutError as exc:
            if not self._derived:
                raise
            raise ManifestError(f"{self.source.name}: {MANIFEST_NAME} is missing, so {entry.path} was taken for a "
                                f"foreign logits graph, but it is not one ({exc})") from None

    def _check_max_lengths(self, overridden: dict[str, bool]) -> None:
        """Refuse a max length beyond a graph's position table (it would fail inside onnxruntime at the
        first long text). The table's size is read from the graph (`graph_scan`); when it cannot be
        identified, one batch of max-length tokens is run instead (BERT-base, 512 tokens: 1.2 s on 2 cores).
        A manifest derived for a foreign graph takes the table's size as its max length when smaller."""
        tables = {entry: position_table_size(session.path) for entry, session in self._sessions.items()}
        for mode in MODES:
            session, length = self.session(mode), self.max_length[mode]
            what = (f"{mode}_max_length={length}" if overridden[mode]
                    else f"max_length.{mode}={length} ({MANIFEST_NAME})" if not self._derived
                    else f"the default max length {length} of a foreign graph (pass {mode}_max_length)")
            error = InputError if overridden[mode] else ManifestError
            table = tables[self.graph(mode)]
            if table is None:
                ids = np.full((1, length), self.pad_id, dtype=np.int64)
                try:
                    session.run(Batch(np.zeros(1, np.int64), ids, np.ones_like(ids)))
                except Exception as exc:  # onnxruntime's own exception types
                    raise error(f"{session.path}: the graph fails on {length} tokens, so {what} is too long "
                                f"({type(exc).__name__}: {str(exc)[:300]})") from None
            elif length > table:
                if self._derived and not overridden[mode]:
                    self.max_length[mode] = table
                    continue
                raise error(f"{session.path}: the graph's position table holds {table} positions, "
                            f"{what} exceeds it")

    def _gate(self, precision: str) -> Gate | None:
        try:
            return self.manifest.gate(precision)
        except ManifestError as exc:
            raise ManifestError(f"{self.source.name}: {exc}") from None

    def _choose_precision(self, precision: str | None) -> str:
        """The requested precision, or the fastest one whose export parity gate passed.

        Fastest: int8 then fp32 on CPU, fp16 then fp32 on CUDA, then any other exported one. A precision
        the manifest's parity report does not judge (no report: foreign graphs, hand-made folders) counts
        as passed, as before there were reports. A requested precision that failed runs, with a warning
        quoting the gate's figures; when every precision failed, only a requested one runs.
        """
        available = set(self.manifest.precisions("query")) & set(self.manifest.precisions("document"))
        if precision is not None:
            if precision not in available:
                raise InputError(f"{self.source.name}: precision {precision!r} not exported; "
                                 f"available: {sorted(available)}")
            gate = self._gate(precision)
            if gate is not None and not gate.passed:
                logger.warning("%s: running precision %r as asked, although it failed the export's parity gate "
                               "(%s)", self.source.name, precision, gate.figures())
            return precision
        on_cuda = CUDA in [p if isinstance(p, str) else p[0] for p in self.providers]
        preferred = ("fp16", "fp32", "int8") if on_cuda else ("int8", "fp32", "fp16")
        failed: list[Gate] = []
        for candidate in [p for p in preferred if p in available]:
            gate = self._gate(candidate)
            if gate is None or gate.passed:
                if failed:
                    logger.info("%s: using %r; %s failed the export's parity gate (%s)", self.source.name, candidate,
                                " and ".join(repr(g.precision) for g in failed),
                                "; ".join(f"{g.precision} {g.figures()}" for g in failed))
                return candidate
            failed.append(gate)
        raise ManifestError(f"{self.source.name}: every exported precision failed the export's parity gate "
                            f"({'; '.join(f'{g.precision} {g.figures()}' for g in failed)}); pass precision= "
                            f"to run one anyway, or export again")

    def graph(self, mode: Mode) -> GraphEntry:
        return self.manifest.encoders[mode][self.precision]

    def session(self, mode: Mode) -> GraphSession:
        """The session of a mode (created at construction); modes sharing a graph share the session."""
        return self._sessions[self.graph(mode)]

    def expand_batch(self, texts: str | Iterable[str], *, query: bool = False, top_k: int | None = None,
                     threshold: float = 0.0, progress: bool = False, long_documents: str | None = None,
                     window_stride: int | None = None) -> SparseBatch:
        """Expand texts into one CSR `SparseBatch`, rows in input order.

        texts: a str, or any iterable of str (list, tuple, generator, numpy string array), read once.
        query: use the query encoder and max length instead of the document ones.
        top_k: keep at most this many terms per text (the heaviest); threshold: keep weights above it.
        progress: print a progress line on stderr.
        long_documents, window_stride: this call's choice (default: the Expander's); see the class.
        `batch.truncated` marks the texts cut at the max length, `batch.windows` counts each text's windows.
        """
        return self._run(texts, query=query, top_k=top_k, threshold=threshold, progress=progress,
                         long_documents=long_documents, window_stride=window_stride)

    def expand_iter(self, texts: str | Iterable[str], *, query: bool = False, batch_size: int = 256,
                    top_k: int | None = None, threshold: float = 0.0, progress: bool = False,
                    long_documents: str | None = None, window_stride: int | None = None) -> Iterator[SparseVector]:
        """Expand a stream of texts lazily, yielding one `SparseVector` per text in input order.

        The texts are read `batch_size` at a time, each chunk expanded as `expand_batch` would (so the
        vectors are the same): memory stays bounded by the chunk, however long the stream. Arguments are
        checked here, at the call; a bad text raises when its chunk is reached, named by its position.
        """
        batch_size = check_count("batch_size", batch_size)
        threshold = check_threshold(threshold)
        if top_k is not None:
            check_count("top_k", top_k)
        self._stride(long_documents, window_stride, query=query)
        stream = iter([texts] if isinstance(texts, str) else text_items(texts))
        total = 1 if isinstance(texts, str) else len(texts) if isinstance(texts, Sized) else None
        bar = Progress(total, "expanded", enabled=progress)

        def vectors() -> Iterator[SparseVector]:
            first = 0
            while chunk := list(islice(stream, batch_size)):
                yield from self._run(chunk, query=query, top_k=top_k, threshold=threshold, progress=bar, first=first,
                                     long_documents=long_documents, window_stride=window_stride)
                first += len(chunk)
            bar.close()

        return vectors()

    def _run(self, texts: str | Iterable[str], *, query: bool, top_k: int | None, threshold: float,
             progress: bool | Progress = False, first: int = 0, long_documents: str | None = None,
             window_stride: int | None = None) -> Any:
        """Tokenise, batch by length, run, sparsify each batch (`_collect`) and restore input order.

        Blank texts (nothing left once tokenised: empty, whitespace, control characters) get empty rows
        without running through the model; the other texts are batched as if they were not there. The
        windows of long documents are rows like any other text; their sparse rows are max-aggregated per
        document as the batches come (`WindowMax`), top_k applied to the aggregate.
        `progress` is a flag or the `Progress` of a longer job; `first` the position of texts[0] in that job.
        """
        texts = check_texts(texts, first=first)
        threshold = check_threshold(threshold)
        stride = self._stride(long_documents, window_stride, query=query)
        mode: Mode = MODES[0] if query else MODES[1]
        session = self.session(mode)
        if top_k is not None:
            top_k = check_count("top_k", top_k)
            if session.entry.top_k is not None and top_k > session.entry.top_k:
                raise InputError(f"top_k={top_k} exceeds the {session.entry.top_k} terms this graph keeps per text")
        bar = progress if isinstance(progress, Progress) else Progress(len(texts), "expanded", enabled=progress)
        encoded = self._encode(texts, mode, stride)
        windows = np.bincount(encoded.owner, minlength=len(texts))
        remaining = windows.copy()  # windows of each text still to run: a text is done at 0
        windowed = windows[encoded.owner] > 1  # per row: one of several windows of its text
        factors = self._window_factors(encoded, windows) if windowed.any() else None
        aggregate = WindowMax()
        live = np.flatnonzero(~encoded.blank)
        parts, order = [], []
        if len(live):
            kept = encoded if len(live) == len(encoded.ids) else encoded.subset(live)
            padded = batches(kept, max_tokens=self.max_tokens, max_batch_size=self.max_batch_size, pad_id=self.pad_id)
            for batch, outputs in session.run_all(padded, overlap=session.providers[0] != CPU and len(live) > 1):
                rows = live[batch.rows]
                owners, whole = encoded.owner[rows], ~windowed[rows]
                if whole.all():
                    parts.append(self._collect(outputs, top_k=top_k, threshold=threshold,
                                               truncated=encoded.truncated[rows]))
                    order.append(owners)
                else:  # windows scaled by their document's factor, then the threshold per window (a max is
                    # above it iff one window is); top_k on the aggregate
                    if whole.any():
                        parts.append(self._collect({name: out[whole] for name, out in outputs.items()}, top_k=top_k,
                                                   threshold=threshold, truncated=encoded.truncated[rows[whole]]))
                        order.append(owners[whole])
                    scaled = self._scaled({name: out[~whole] for name, out in outputs.items()},
                                          factors[owners[~whole]])
                    aggregate.add(owners[~whole], self._collect(scaled, top_k=None, threshold=threshold,
                                                                truncated=encoded.truncated[rows[~whole]]))
                np.subtract.at(remaining, owners, 1)
                bar.update(int(np.count_nonzero(remaining[np.unique(owners)] == 0)))
        if aggregate:
            owners, part = aggregate.result()
            part = replace(part, truncated=np.zeros(len(owners), dtype=bool), windows=windows[owners])
            parts.append(part.heaviest(top_k) if top_k is not None else part)
            order.append(owners)
        blank = encoded.owner[encoded.blank]
        if len(blank):
            parts.append(self._empty(len(blank)))
            order.append(blank)
            bar.update(len(blank))
        if not isinstance(progress, Progress):
            bar.close()
        if not parts:
            return self._empty(0)
        # Row r of the concatenation is input text sorted_rows[r]; invert that to restore input order.
        sorted_rows = np.concatenate(order)
        position = np.empty_like(sorted_rows)
        position[sorted_rows] = np.arange(len(sorted_rows))
        truncated = int(encoded.truncated.sum())
        if truncated:
            logger.info("%d of %d texts were truncated at %d tokens", truncated, len(texts), self.max_length[mode])
        return type(parts[0]).concat(parts).take(position)

    def _stride(self, long_documents: str | None, window_stride: int | None, *, query: bool) -> int | None:
        """The window stride for this call's texts (the call's choice, else the Expander's), or None when
        they are cut at the max length: always for queries."""
        choice = self.long_documents if long_documents is None else long_documents
        if choice not in LONG_DOCUMENTS:
            raise InputError(f"long_documents must be one of {LONG_DOCUMENTS}, got {choice!r}")
        if window_stride is not None:
            check_count("window_stride", window_stride)
            if choice != "windows":
                raise InputError("window_stride applies to long_documents='windows' only")
        if choice == "truncate" or query:
            return None
        if self.manifest.pooling != "max":
            raise InputError(f"{self.source.name}: long_documents='windows' aggregates windows by max, as SPLADE "
                             f"max pooling does over tokens; this model pools by {self.manifest.pooling!r}, so "
                             f"windows are not supported for it")
        length = self.max_length["document"]
        room = length - self.tokenizer.num_special_tokens_to_add(False)
        stride = window_stride or self.window_stride or max(1, room // 2)
        if stride > room:
            raise InputError(f"window_stride={stride} exceeds the {room} text tokens of a {length}-token window "
                             f"(document max length): windows would skip tokens")
        return stride

    def _window_factors(self, encoded: Encoded, windows: np.ndarray) -> np.ndarray:
        """Per text, float32: what its windows' weights are multiplied by, (text tokens / a window's text
        tokens) ** -window_norm for a windowed document, 1 for any other text (`window_norm`)."""
        room = self.max_length["document"] - self.tokenizer.num_special_tokens_to_add(False)
        factors = np.ones(len(windows), dtype=np.float32)
        long = windows > 1
        factors[long] = (encoded.text_tokens[long] / room) ** -self.window_norm
        return factors

    @staticmethod
    def _scaled(outputs: dict[str, np.ndarray], factors: np.ndarray) -> dict[str, np.ndarray]:
        """The graph outputs with each row's weights times its factor (max over windows commutes with it)."""
        name = POOLED_OUTPUT if POOLED_OUTPUT in outputs else TOPK_WEIGHTS_OUTPUT
        return {**outputs, name: outputs[name].astype(np.float32, copy=False) * factors[:, None]}

    def _encode(self, texts: list[str], mode: Mode, stride: int | None) -> Encoded:
        return encode(self.tokenizer, texts, self.max_length[mode], stride=stride)

    def _collect(self, outputs: dict[str, np.ndarray], *, top_k: int | None, threshold: float,
                 truncated: np.ndarray) -> SparseBatch:
        """One batch's graph outputs -> CSR rows (dense pooled weights or per-row candidates)."""
        if POOLED_OUTPUT in outputs:
            return sparsify(outputs[POOLED_OUTPUT].astype(np.float32, copy=False), threshold=threshold,
                            top_k=top_k, drop_ids=self.drop_ids, vocab=self.vocab, truncated=truncated)
        return sparsify_candidates(
            outputs[TOPK_IDS_OUTPUT], outputs[TOPK_WEIGHTS_OUTPUT].astype(np.float32, copy=False),
            vocab_size=self.manifest.vocab_size, threshold=threshold, top_k=top_k, drop_ids=self.drop_ids,
            vocab=self.vocab, truncated=truncated)

    def _empty(self, rows: int) -> SparseBatch:
        return SparseBatch(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                           self.manifest.vocab_size, self.vocab)

    def expand(self, texts: str | Iterable[str], *, query: bool = False, top_k: int | None = None,
               threshold: float = 0.0, outformat: str | None = None, progress: bool = False,
               long_documents: str | None = None,
               window_stride: int | None = None) -> SparseVector | list[SparseVector] | list[dict]:
        """Expand one text (-> `SparseVector`) or an iterable of texts (-> list, in input order).

        outformat: SPLADERunner 0.1.6's list-of-dicts output ("hybrid" or "lucene", deprecated;
        `spladerunner.legacy`), also the default of an Expander built with 0.1.6's arguments.
        Other arguments as `expand_batch`.
        """
        shape = legacy.formatter(outformat) if outformat is not None or self._legacy else None
        result = self.expand_batch(texts, query=query, top_k=top_k, threshold=threshold, progress=progress,
                                   long_documents=long_documents, window_stride=window_stride)
        if shape is not None:
            return shape(result)
        return result[0] if isinstance(texts, str) else result.to_list()

    def decode(self, vectors: SparseVector | SparseBatch | Iterable[SparseVector],
               top_k: int | None = None) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """(token, weight) pairs heaviest first with this model's vocabulary: a list for one vector, a list of
        lists for a batch or an iterable of vectors (`SparseVector.decode`)."""
        if isinstance(vectors, SparseVector):
            if len(vectors.ids) and int(np.max(vectors.ids)) >= len(self.vocab):
                raise InputError(f"ids reach {int(np.max(vectors.ids))}, beyond this model's {len(self.vocab)} tokens")
            return replace(vectors, vocab=self.vocab).decode(top_k)
        if isinstance(vectors, (str, bytes)) or not isinstance(vectors, Iterable):
            raise InputTypeError(f"vectors must be a SparseVector, a SparseBatch or an iterable of SparseVector, "
                                 f"got {type(vectors).__name__}")
        return [self.decode(vector, top_k) for vector in vectors]

    def similarity(self, queries: str | Iterable[str] | SparseBatch,
                   documents: str | Iterable[str] | SparseBatch) -> np.ndarray:
        """Scores of every query against every document, float64 [queries, documents] (`SparseBatch.dot`):
        texts are expanded here (queries with the query encoder), batches taken as they are."""
        if not isinstance(queries, SparseBatch):
            queries = self.expand_batch(queries, query=True)
        if not isinstance(documents, SparseBatch):
            documents = self.expand_batch(documents)
        return queries.dot(documents)

    def __repr__(self) -> str:
        return (f"Expander(model={self.source.name!r}, precision={self.precision!r}, "
                f"providers={self.providers!r})")
