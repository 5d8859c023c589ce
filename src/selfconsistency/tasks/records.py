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
        text = path.read_bytes().decode("utf-8")
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
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield where, record


def _json_list(path: Path, text: str) -> Iterator[Located]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of objects")
    for index, record in enumerate(items):
        if not isinstance(record, dict):
            raise DataError(f"{path} item {index}: expected a JSON object")
        yield f"{path} item {index}", record


def _csv(path: Path, text: str) -> Iterator[Located]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record:
            raise DataError(f"{where}: more cells than the header has columns")
        yield where, dict(record)
