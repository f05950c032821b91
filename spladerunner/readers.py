"""Reading input files: JSONL records and plain text lines, with errors that name the file and line.

Every file the runtime reads that a person wrote (corpora, queries, texts to expand) goes through
here, so a malformed line (bad JSON, nesting too deep for the parser, an integer too long to convert,
a number such as 1e999 that is not finite, or not an object) is reported as `InputError`
"FILE:LINE: ..." instead of a parser exception without a position.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from .errors import InputError

Format = Literal["jsonl", "lines"]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line -> its object; `where` ("FILE:LINE") starts the message of any error.

    NaN, Infinity and numbers that overflow a float are refused: they would be written back as
    `NaN`/`Infinity`, which is not JSON.
    """
    try:
        record = json.loads(line, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # integers past Python's digit limit, out-of-range floats, NaN/Infinity
        raise InputError(f"{where}: unreadable JSON value ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def read_placed_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """("FILE:LINE", object) for each JSON object of a JSONL file, skipping blank lines: the place lets
    the caller's own checks of a record name its line too."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                where = f"{path}:{number}"
                yield where, parse_json_object(line, where)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, skipping blank lines; errors name the file and line."""
    return (record for _, record in read_placed_jsonl(path))


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A whole file holding one JSON object (a table, a config); errors name the file."""
    with open(path, encoding="utf-8") as handle:
        return parse_json_object(handle.read(), str(path))


def detect_format(path: str | Path) -> Format:
    """JSONL when the first non-empty line of a file looks like a JSON object, else plain lines."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "lines"
    return "lines"


def record_id(record: dict[str, Any], fields: Sequence[str], default: object, where: str) -> str | int:
    """The first of `fields` present in `record` (else `default`; None: an error), as a str or int.

    Floats, lists and the like are refused: they would not survive a round trip through JSON as ids.
    """
    value = next((record[f] for f in fields if f in record), default)
    if value is None:
        raise InputError(f"{where}: no id field {fields[0]!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: id {value!r} must be a string or an integer")
    return value


def record_text(record: dict[str, Any], fields: Sequence[str], where: str, *, require_all: bool = True) -> str:
    """The non-empty `fields` of `record` joined with a space (BEIR puts the title before the text).

    require_all: every field must be present (else an error naming it); otherwise at least one.
    """
    present = [f for f in fields if f in record]
    missing = [f for f in fields if f not in record]
    if (require_all and missing) or not present:
        raise InputError(f"{where}: no field {missing[0]!r}")
    texts = [record[f] for f in present if record[f] is not None]
    for field, text in zip(present, texts):
        if not isinstance(text, str):
            raise InputError(f"{where}: field {field!r} must be a string, got {type(text).__name__}")
    return " ".join(t for t in texts if t)


def read_texts(path: str | Path, *, id_fields: Sequence[str] = ("_id", "id", "qid"),
               text_fields: Sequence[str] = ("text",), fmt: Format | None = None,
               require_all: bool = True, ids_required: bool = False) -> tuple[list[str | int], list[str]]:
    """(ids, texts) from JSONL (ids from the first of `id_fields`, else the 0-based record number unless
    `ids_required`; texts
    from `text_fields`, see `record_text`) or plain lines (ids 0, 1, ...; blank lines skipped)."""
    if (fmt or detect_format(path)) == "jsonl":
        ids: list[str | int] = []
        texts: list[str] = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                record = parse_json_object(line, where)
                ids.append(record_id(record, id_fields, None if ids_required else len(ids), where))
                texts.append(record_text(record, text_fields, where, require_all=require_all))
        return ids, texts
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\r\n") for line in handle if line.strip()]
    return list(range(len(lines))), lines
