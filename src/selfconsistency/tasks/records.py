"""Read records from JSONL, a JSON list or CSV, each with its location (`file:line` or `file item N`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..safe_files import UnreadableFile, read_regular_file
from .base import DataError

Located = tuple[str, dict[str, Any]]
MAX_DATA_BYTES = 2 * 1024**3  # a data file is read whole: larger ones are split into several
MAX_EXEMPLARS_BYTES = 1_000_000  # an exemplars file is a few worked examples


def read_file(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit` of them (`safe_files.read_regular_file`); DataError otherwise
    (`/dev/zero`, a FIFO, a directory would read for ever, block, or fail mid-way)."""
    try:
        return read_regular_file(path, limit, what)
    except UnreadableFile as exc:
        raise DataError(str(exc)) from None


def read_records(path: Path, fmt: str | None = None) -> Iterator[Located]:
    path = Path(path)
    fmt = fmt or {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}.get(path.suffix.lower(), "jsonl")
    data = read_file(path, MAX_DATA_BYTES, "a data file")
    try:
        text = data.decode("utf-8-sig")  # a byte order mark (Excel, Notepad) is no data
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    readers = {"jsonl": _jsonl, "json": _json_list, "csv": _csv}
    yield from readers[fmt](path, text)


def _jsonl(path: Path, text: str) -> Iterator[Located]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = _parse_json(where, line)
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield where, record


def _json_list(path: Path, text: str) -> Iterator[Located]:
    items = _parse_json(str(path), text)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of objects")
    for index, record in enumerate(items):
        if not isinstance(record, dict):
            raise DataError(f"{path} item {index}: expected a JSON object")
        yield f"{path} item {index}", record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(where: str, text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_no_constant)  # NaN and Infinity are no JSON: no question "nan"
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate ("\ud800") is no text
        return value
    except UnicodeEncodeError:
        raise DataError(f"{where}: holds a lone surrogate (an escape like \\ud800 that is no character)") from None
    except json.JSONDecodeError as exc:
        line = f":{exc.lineno}" if "\n" in text.strip() else ""
        raise DataError(f"{where}{line}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise DataError(f"{where}: unusable JSON value: {str(exc).split(';')[0]}") from None


def _csv(path: Path, text: str) -> Iterator[Located]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:  # a dict keeps the last column of a name: the others would be silently lost
            raise DataError(f"{path}:1: the header names {', '.join(map(repr, repeated))} more than once")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if None in record:
                raise DataError(f"{where}: more cells than the header has columns")
            if None in record.values():
                raise DataError(f"{where}: fewer cells ({sum(v is not None for v in record.values())}) than "
                                f"the header has columns ({len(record)})")
            yield where, dict(record)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
