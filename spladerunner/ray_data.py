"""Corpus expansion on Ray Data: an actor pool of `Expander`s over a cluster, Parquet out, and back.

- `ExpandBatches`: the callable class for `Dataset.map_batches` run as an actor pool; each actor loads the
  model once and expands its batches with its own intra-op threads, on CPU or on a GPU.
- `expand_dataset`: a Ray dataset of records -> a dataset of sparse vectors, rows in input order.
- `expand_corpus`: a corpus file (JSONL or text lines) -> Parquet shards in a folder, each written whole or
  not at all with a marker of its input lines and checksum: a re-run skips the shards already complete.
- `read_vectors`, `add_parquet`: Parquet shards (ours or any `write_parquet` of an expanded dataset) ->
  (ids, `SparseBatch`) streamed batch by batch, for `SparseIndex.add_vectors` and the `adapters`' formats.

Output rows: the id column as given, `ids` (list<int32>, ascending), `weights` (list<float32>), optionally
`tokens` (list<string>), `truncated` (bool) and `error` (string; null unless that record failed: a text
that is not a str or not valid Unicode; its vector is then empty). A failing record never loses its batch.

Import this module only where Ray is installed (`pip install 'spladerunner[ray]'`); `import spladerunner`
never loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray
    import ray.data
except ImportError as exc:  # the optional extra
    raise ImportError("spladerunner.ray_data needs Ray Data: pip install 'spladerunner[ray]'") from exc

from .arguments import check_count, check_threshold
from .documents import check_vectors
from .errors import InputError
from .expander import DEFAULT_WINDOW_NORM, Expander, check_texts
from .integrity import file_sha256
from .loading import DEFAULT_MODEL
from .readers import Format, detect_format, parse_json_object, record_id
from .sparse import SparseBatch

logger = logging.getLogger("spladerunner")

ID_COLUMN = "_id"  # the id column of `expand_corpus` shards (BEIR's name)
SHARD_FORMAT = "spladerunner-ray-shard"
VOCAB_SIZE_KEY = b"spladerunner.vocab_size"  # Parquet schema metadata: read_vectors needs no vocab_size
Errors = Literal["raise", "skip"]


def _empty(rows: int, vocab_size: int) -> SparseBatch:
    return SparseBatch(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab_size)


def _text_columns(text_columns: str | Sequence[str]) -> list[str]:
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    if not columns or not all(isinstance(c, str) for c in columns):
        raise InputError(f"text_columns must name at least one column, got {text_columns!r}")
    return columns


class ExpandBatches:
    """`Dataset.map_batches` callable class (`batch_format="numpy"`): record batches -> sparse vector rows.

    Built once per actor: the `Expander` (model loaded, graph checked, sessions opened) lives as long as the
    actor. `threads` are the actor's intra-op threads (give the actor as many CPUs); `providers=["cuda"]`
    runs it on the actor's GPU, with the fp16 graph when the model has one. `expander_options` go to
    `Expander` as they are (precision, max_tokens, document_max_length, ...).

    A record whose text is not a str (None and NaN, missing values, count as empty) or not valid Unicode
    gets an error message and an empty vector; so does one the model fails on, found by expanding the
    batch's texts one by one when the whole batch fails. Texts are the non-empty `text_columns` joined with
    a space (title, then text).
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, *, text_columns: str | Sequence[str] = ("title", "text"),
                 id_column: str = ID_COLUMN, query: bool = False, top_k: int | None = None, threshold: float = 0.0,
                 tokens: bool = False, threads: int | None = 1,
                 providers: Sequence[str | tuple[str, dict]] | None = None, **expander_options: Any):
        self.expander = Expander(model, threads=threads, providers=providers, **expander_options)
        self.text_columns = _text_columns(text_columns)
        self.id_column = id_column
        self.options = {"query": query, "top_k": top_k, "threshold": threshold}
        self.vocab = pa.array(self.expander.vocab, pa.string()) if tokens else None

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        missing = [c for c in [self.id_column, *self.text_columns] if c not in batch]
        if missing:
            raise InputError(f"the dataset has no column {missing[0]!r} (columns: {sorted(batch)})")
        rows = len(batch[self.id_column])
        texts: list[str] = []
        errors: list[str | None] = []
        for row in range(rows):
            text, error = self._text(batch, row)
            texts.append(text)
            errors.append(error)
        vectors = self._expand(texts, errors)  # fills in the errors of records the model fails on
        good = [row for row in range(rows) if errors[row] is None]
        failed = [row for row in range(rows) if errors[row] is not None]
        if failed:
            vectors = SparseBatch.concat([vectors, _empty(len(failed), vectors.vocab_size)])
            position = np.empty(rows, np.int64)
            position[good + failed] = np.arange(rows)
            vectors = vectors.take(position)
        return vector_table(self.id_column, pa.array(batch[self.id_column].tolist()), vectors, errors, self.vocab,
                            vocab_size=vectors.vocab_size)

    def _text(self, batch: dict[str, np.ndarray], row: int) -> tuple[str, str | None]:
        """One record's text (non-empty columns joined), or an error naming the column at fault."""
        parts = []
        for column in self.text_columns:
            value = batch[column][row]
            if value is None or (isinstance(value, float) and math.isnan(value)):  # missing (NaN: pandas')
                continue
            if not isinstance(value, str):
                return "", f"column {column!r} holds {type(value).__name__}, expected str"
            if value:
                parts.append(value)
        text = " ".join(parts)
        try:
            check_texts(text)
        except InputError as exc:
            return "", str(exc)
        return text, None

    def _expand(self, texts: list[str], errors: list[str | None]) -> SparseBatch:
        """The vectors of the records without an error, in order; when the batch fails, its texts are
        expanded one by one and the error of each that fails again is recorded in `errors`."""
        good = [row for row, error in enumerate(errors) if error is None]
        try:
            return self.expander.expand_batch([texts[row] for row in good], **self.options)
        except Exception as exc:  # whatever the model raised: isolate the record(s) it came from
            logger.warning("a batch of %d texts failed (%s: %s); expanding its texts one by one", len(good),
                           type(exc).__name__, exc)
        parts = []
        for row in good:
            try:
                parts.append(self.expander.expand_batch([texts[row]], **self.options))
            except Exception as exc:  # recorded in the row's error column, reported by read-back
                errors[row] = f"{type(exc).__name__}: {exc}"
        return SparseBatch.concat(parts) if parts else _empty(0, self.expander.manifest.vocab_size)


def vector_table(id_column: str, ids: pa.Array, vectors: SparseBatch, errors: Sequence[str | None],
                 vocab: pa.Array | None = None, *, vocab_size: int | None) -> pa.Table:
    """The output rows: ids, CSR rows as list<int32> ids and list<float32> weights sharing one offsets
    array, token strings when `vocab` is given, truncated and error; the model's vocabulary size, when
    known, in the schema metadata (Ray's `write_parquet` keeps it in every file)."""
    offsets = pa.array(vectors.indptr.astype(np.int32))
    indices = pa.array(vectors.indices, pa.int32())
    columns = {id_column: ids,
               "ids": pa.ListArray.from_arrays(offsets, indices),
               "weights": pa.ListArray.from_arrays(offsets, pa.array(vectors.values, pa.float32()))}
    if vocab is not None:
        columns["tokens"] = pa.ListArray.from_arrays(offsets, vocab.take(indices))
    columns["truncated"] = pa.array(vectors.truncated, pa.bool_())
    columns["error"] = pa.array(errors, pa.string())
    return pa.table(columns, metadata=None if vocab_size is None else {VOCAB_SIZE_KEY: str(vocab_size).encode()})


def expand_dataset(ds: ray.data.Dataset, model: str | Path = DEFAULT_MODEL, *,
                   text_columns: str | Sequence[str] = ("title", "text"), id_column: str = ID_COLUMN,
                   query: bool = False, top_k: int | None = None, threshold: float = 0.0, tokens: bool = False,
                   actors: int | tuple[int, int] = 1, threads_per_actor: int = 1, gpus_per_actor: float = 0,
                   batch_size: int = 256, **expander_options: Any) -> ray.data.Dataset:
    """Expand a Ray dataset's records with an actor pool; rows keep their id and their input order.

    model: a model folder or hub id every actor can read (a path on shared storage, or cached on each node).
    actors: the pool size, or (min, max) for an autoscaling pool. threads_per_actor: each actor's intra-op
        threads, and the CPUs Ray reserves for it. gpus_per_actor: > 0 runs the actors on GPUs
        (providers=["cuda"] unless given: the fp16 graph when the model has one).
    batch_size: records per actor call (the Expander batches them again by padded tokens).
    expander_options: passed to `Expander` (precision, max_tokens, document_max_length, ...).
    Returns a lazy dataset: columns `id_column`, ids, weights, [tokens], truncated, error (module docstring).
    """
    text_columns = _text_columns(text_columns)
    if top_k is not None:
        check_count("top_k", top_k)
    check_threshold(threshold)
    check_count("threads_per_actor", threads_per_actor)
    check_count("batch_size", batch_size)
    pool = actors if isinstance(actors, tuple) else (actors,)
    for size in pool:
        check_count("actors", size)
    compute = (ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1]) if isinstance(actors, tuple)
               else ray.data.ActorPoolStrategy(size=actors))
    if gpus_per_actor < 0:
        raise InputError(f"gpus_per_actor must be >= 0, got {gpus_per_actor!r}")
    if gpus_per_actor and expander_options.get("providers") is None:
        expander_options["providers"] = ["cuda"]
    out = ds.map_batches(
        ExpandBatches, fn_constructor_args=(model,),
        fn_constructor_kwargs={"text_columns": text_columns, "id_column": id_column, "query": query,
                               "top_k": top_k, "threshold": threshold, "tokens": tokens,
                               "threads": threads_per_actor, **expander_options},
        batch_size=batch_size, batch_format="numpy", compute=compute, num_cpus=threads_per_actor,
        num_gpus=gpus_per_actor or None)
    # This dataset's own context (not the global one): rows come out in input order whatever actor ran them.
    out.context.execution_options.preserve_order = True
    return out


# -- Parquet back into SparseBatch ------------------------------------------------------------------


def parquet_files(path: str | Path) -> list[Path]:
    """A Parquet file, or the `*.parquet` files under a folder in name order (hidden and `_` names skipped:
    temporary files being written)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such Parquet file or folder")
    files = sorted(p for p in path.rglob("*.parquet")
                   if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise InputError(f"{path}: no Parquet files in this folder")
    return files


def failed_records(path: str | Path, *, id_column: str = ID_COLUMN) -> list[tuple[Any, str]]:
    """(id, error) of every record whose expansion failed, reading only the id and error columns."""
    failed = []
    for file in parquet_files(path):
        table = pq.read_table(file, columns=[id_column, "error"])
        table = table.filter(pc.is_valid(table["error"]))
        failed += list(zip(table[id_column].to_pylist(), table["error"].to_pylist()))
    return failed


def read_vectors(path: str | Path, *, vocab_size: int | None = None, vocab: Sequence[str] | None = None,
                 id_column: str = ID_COLUMN, batch_rows: int = 4096,
                 errors: Errors = "raise") -> Iterator[tuple[list[Any], SparseBatch]]:
    """Stream (ids, vectors) from Parquet shards, `batch_rows` rows at a time (memory stays bounded).

    vocab_size: the model's vocabulary size; by default the one each file records (`ExpandBatches` writes
        it into the schema metadata); given, a file recording another one is refused.
    vocab: the token strings, attached to the vectors (the OpenSearch and Anserini adapters need them).
    errors: "raise" (before yielding anything) when a record failed expansion, naming it; "skip" leaves
    failed records out.
    """
    if vocab is not None:
        vocab_size = check_count("vocab_size", vocab_size) if vocab_size is not None else len(vocab)
        if vocab_size != len(vocab):
            raise InputError(f"vocab has {len(vocab)} tokens but vocab_size is {vocab_size}")
    elif vocab_size is not None:
        check_count("vocab_size", vocab_size)
    check_count("batch_rows", batch_rows)
    if errors not in ("raise", "skip"):
        raise InputError(f"errors must be 'raise' or 'skip', got {errors!r}")
    files = parquet_files(path)
    if errors == "raise":
        failed = failed_records(path, id_column=id_column)
        if failed:
            raise InputError(f"{path}: {len(failed)} record(s) failed expansion, e.g. id {failed[0][0]!r}: "
                             f"{failed[0][1]}; fix them and expand again, or pass errors='skip'")
    for file in files:
        if pq.ParquetFile(file).metadata.num_rows == 0:
            continue  # an empty shard (blank lines only) records no vocabulary size
        schema = pq.ParquetFile(file).schema_arrow
        names = schema.names
        size = _vocab_size(schema, vocab_size, file)
        missing = [c for c in (id_column, "ids", "weights", "error") if c not in names]
        if missing:
            raise InputError(f"{file}: no column {missing[0]!r} (an expanded dataset has {id_column}, ids, "
                             f"weights, truncated and error)")
        columns = [id_column, "ids", "weights", "error"] + (["truncated"] if "truncated" in names else [])
        for record_batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=columns):
            if errors == "skip":
                record_batch = record_batch.filter(pc.is_null(record_batch.column("error")))
            yield record_batch.column(id_column).to_pylist(), _sparse(record_batch, size, vocab, file)


def _vocab_size(schema: pa.Schema, expected: int | None, file: Path) -> int:
    """The vocabulary size a file records (checked against `expected`), else `expected`."""
    recorded = (schema.metadata or {}).get(VOCAB_SIZE_KEY)
    if recorded is None:
        if expected is None:
            raise InputError(f"{file} records no vocabulary size: pass vocab_size= (the model's vocabulary)")
        return expected
    if not recorded.isdigit() or int(recorded) < 1:
        raise InputError(f"{file}: unreadable vocabulary size {recorded!r} in the schema metadata")
    if expected is not None and int(recorded) != expected:
        raise InputError(f"{file} holds vectors over a vocabulary of {int(recorded)}, not {expected}")
    return int(recorded)


def _sparse(batch: pa.RecordBatch, vocab_size: int, vocab: Sequence[str] | None, file: Path) -> SparseBatch:
    ids, weights = batch.column("ids"), batch.column("weights")
    if ids.null_count or weights.null_count:
        raise InputError(f"{file}: null ids or weights (expected a list, empty for a record without terms)")
    indptr = np.asarray(ids.offsets, dtype=np.int64)
    indptr -= indptr[0]
    weight_ptr = np.asarray(weights.offsets, dtype=np.int64)
    if not np.array_equal(indptr, weight_ptr - weight_ptr[0]):
        raise InputError(f"{file}: a row's ids and weights differ in length")
    truncated = (np.asarray(batch.column("truncated").fill_null(False)) if "truncated" in batch.schema.names
                 else None)
    vectors = SparseBatch(indptr, np.asarray(ids.flatten(), dtype=np.int32),
                          np.asarray(weights.flatten(), dtype=np.float32), vocab_size, vocab, truncated)
    check_vectors(vectors, str(file), vocab_size)
    return vectors


def add_parquet(index: Any, path: str | Path, *, vocab_size: int | None = None, id_column: str = ID_COLUMN,
                batch_rows: int = 4096, errors: Errors = "raise", replace: bool = False) -> int:
    """Add the vectors of Parquet shards to a `SparseIndex`, batch by batch; returns the records added.

    vocab_size: by default the index's, else the files' own (see `read_vectors`).
    """
    vocab_size = index.vocab_size if index.vocab_size is not None else vocab_size
    added = 0
    for ids, vectors in read_vectors(path, vocab_size=vocab_size, id_column=id_column, batch_rows=batch_rows,
                                     errors=errors):
        index.add_vectors(vectors, [str(i) for i in ids], replace=replace)
        added += len(ids)
    return added


# -- corpus files -> resumable Parquet shards -----------------------------------------------------


@dataclass
class CorpusRun:
    """What `expand_corpus` did: shards computed now and skipped as complete, records, failed records."""

    shards: int
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    records: int = 0
    failed: list[tuple[Any, str]] = field(default_factory=list)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def expand_corpus(path: str | Path, out: str | Path, model: str | Path = DEFAULT_MODEL, *, shard_size: int = 10_000,
                  fmt: Format | None = None, id_field: str = ID_COLUMN, text_fields: Sequence[str] = ("title", "text"),
                  query: bool = False, top_k: int | None = None, threshold: float = 0.0, tokens: bool = False,
                  actors: int | tuple[int, int] = 1, threads_per_actor: int = 1, gpus_per_actor: float = 0,
                  batch_size: int = 256, on_shard: Callable[[int, bool], None] | None = None,
                  **expander_options: Any) -> CorpusRun:
    """Expand a corpus file into `out/shard-NNNNN.parquet`, `shard_size` lines each, resumably.

    Each shard's Parquet file is written under a temporary name and renamed when complete, then its marker
    (`shard-NNNNN.json`: the input's line range and sha256, the options, the output's sha256) the same way.
    A re-run skips every shard whose marker matches its input lines, options and output file, and
    recomputes the rest (a deleted, damaged or stale shard; a failed run's missing ones); shards past the
    end of a shortened input are removed. The ids go in column `_id` as strings (JSONL: `id_field`, else
    `_id`; text lines: the 0-based line number); texts are the present `text_fields` joined with a space.
    A line that is not a JSON object, or has no id or none of the text fields, is an `InputError` naming
    file and line (the shards before it stay complete). on_shard(shard, computed) is called after each.
    Other arguments as for `expand_dataset`.
    """
    path, out = Path(path), Path(out)
    check_count("shard_size", shard_size)
    text_fields = _text_columns(text_fields)
    fmt = fmt or detect_format(path)
    out.mkdir(parents=True, exist_ok=True)
    if expander_options.get("long_documents") == "windows" and expander_options.get("window_norm") is None:
        # Recorded: shards of the plain max (written before window_norm existed) must not pass for these.
        expander_options["window_norm"] = DEFAULT_WINDOW_NORM
    options = {"model": str(model), "fmt": fmt, "id_field": id_field, "text_fields": text_fields, "query": query,
               "top_k": top_k, "threshold": threshold, "tokens": tokens,
               # None is each option's default: passing it or not expands alike
               "expander_options": {k: repr(v) for k, v in sorted(expander_options.items()) if v is not None}}
    run = CorpusRun(shards=0)
    with open(path, "rb") as handle:
        while lines := list(islice(handle, shard_size)):
            shard, first = run.shards, run.shards * shard_size + 1
            run.shards += 1
            marker = {"format": SHARD_FORMAT, "version": 1, "input": path.name,
                      "lines": [first, first + len(lines) - 1],
                      "input_sha256": hashlib.sha256(b"".join(lines)).hexdigest(), "options": options}
            target = out / f"{shard_name(shard)}.parquet"
            if _complete(out / f"{shard_name(shard)}.json", target, marker):
                run.skipped.append(shard)
            else:
                frame = _records(lines, first, path, fmt, id_field, text_fields)
                table = vector_table(ID_COLUMN, pa.array([], pa.string()), _empty(0, 1), [],
                                     pa.array([], pa.string()) if tokens else None, vocab_size=None)
                if len(frame):  # one block per batch, so that every actor of the pool gets some
                    blocks = [frame.iloc[start:start + batch_size] for start in range(0, len(frame), batch_size)]
                    expanded = expand_dataset(
                        ray.data.from_pandas(blocks), model, text_columns=text_fields, id_column=ID_COLUMN,
                        query=query, top_k=top_k, threshold=threshold, tokens=tokens, actors=actors,
                        threads_per_actor=threads_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                        **expander_options)
                    table = pa.concat_tables(expanded.iter_batches(batch_size=None, batch_format="pyarrow"))
                _write_atomically(target, partial(pq.write_table, table))
                marker |= {"records": len(frame), "output_sha256": file_sha256(target)}
                _write_atomically(out / f"{shard_name(shard)}.json",
                                  partial(Path.write_text, data=json.dumps(marker, indent=1) + "\n"))
                run.computed.append(shard)
            if on_shard is not None:
                on_shard(shard, shard in run.computed)
    _tidy(out, run.shards)
    if run.shards:
        run.failed = failed_records(out)
        run.records = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(out))
    return run


def _records(lines: list[bytes], first: int, path: Path, fmt: Format, id_field: str,
             text_fields: list[str]) -> pd.DataFrame:
    """One shard's lines -> a frame of `_id` (str) and the raw text fields (object columns: a field that
    is not a str reaches the actor as it is and fails that record alone)."""
    ids: list[str] = []
    columns: dict[str, list[Any]] = {name: [] for name in text_fields}
    for number, raw in enumerate(lines, first):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if fmt == "lines":  # every line a text, blank ones too (empty vectors), as `spladerunner expand`
            ids.append(str(number - 1))
            columns[text_fields[-1]].append(line)
            for name in text_fields[:-1]:
                columns[name].append(None)
            continue
        if not line.strip():
            continue
        record = parse_json_object(line, where)
        if not any(name in record for name in text_fields):
            raise InputError(f"{where}: none of the text fields {text_fields}")
        ids.append(str(record_id(record, [id_field, ID_COLUMN], None, where)))
        for name in text_fields:
            columns[name].append(record.get(name))
    return pd.DataFrame({ID_COLUMN: pd.Series(ids, dtype=object),
                         **{name: pd.Series(values, dtype=object) for name, values in columns.items()}})


def _complete(marker_path: Path, target: Path, expected: dict[str, Any]) -> bool:
    """Whether a shard is complete: its marker describes these input lines and options, and its output file
    is the one the marker recorded."""
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or any(marker.get(key) != value for key, value in expected.items()):
        return False
    return target.is_file() and file_sha256(target) == marker.get("output_sha256")


def _write_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """`write(temporary)` beside `target`, flushed to disk, then renamed into place: never a partial file."""
    temporary = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _tidy(out: Path, shards: int) -> None:
    """Remove shards numbered past the input's end (left by a run over a longer input: they would be read
    back as data) and the temporary files of killed runs."""
    for file in list(out.glob("shard-*.parquet")) + list(out.glob("shard-*.json")):
        number = file.stem.removeprefix("shard-")
        if number.isdigit() and int(number) >= shards:
            file.unlink()
    for file in out.glob(".shard-*.tmp-*"):
        file.unlink(missing_ok=True)


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address` ("auto", "ray://host:10001", host:port), or start a local one when
    None and RAY_ADDRESS is unset; does nothing when this process is connected already."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
