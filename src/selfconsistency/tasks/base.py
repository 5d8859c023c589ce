"""What every task provides: questions with gold answers, exemplars, and an answer extractor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(Exception):
    """Unusable input data; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    id: str
    position: int  # in the full data file; ids stay the same whatever --offset/--limit select
    text: str
    gold: str


@dataclass(frozen=True)
class Exemplar:
    question: str
    rationale: str  # ends with the task's answer statement, e.g. "The answer is 6."


Extractor = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Task:
    """A task: how to read its records, its exemplars, and how to extract an answer from a path."""

    name: str
    description: str
    parse_record: Callable[[dict[str, Any]], tuple[str, str]]  # record -> (question text, gold)
    exemplars: tuple[Exemplar, ...]
    make_extractor: Callable[[bool], Extractor]  # flexible -> extractor
    hub_dataset: tuple[str, str] | None = None  # (repo id, config) on the Hugging Face hub
    default_split: str = "test"
    metadata: dict[str, str] = field(default_factory=dict)

    def questions(self, records: Iterable[tuple[str, dict[str, Any]]], split: str) -> list[Question]:
        """Questions from (location, record) pairs; ids are `<split>-<position>`."""
        out = []
        for position, (where, record) in enumerate(records):
            try:
                text, gold = self.parse_record(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{where}: {self.name} record unusable: {exc}") from None
            out.append(Question(id=f"{split}-{position:05d}", position=position, text=text, gold=gold))
        if not out:
            raise DataError(f"no {self.name} records found")
        return out


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for each non-blank line; malformed lines raise DataError naming them."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
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
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
