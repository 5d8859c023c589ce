"""Read records from JSONL, a JSON list or CSV, each with its location (`file:line` or `file item N`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import DataError

Located = tuple[str, dict[str, Any]]


def read_records(path: Path, fmt: str | None = None) -> Iterator[Located]:
    path = Path(path)
    fmt = fmt or {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}.get(path.suffix.lower(), "jsonl")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte order mark (Excel, Notepad) is no data
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
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


def _parse_json(where: str, text: str) -> Any:
    try:
        return json.loads(text)
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
