"""What another tool's stored generations become before they are a run: questions (each a record of the
task's fields, so that the task's own parser reads its text and gold), each with its paths in the order the
tool sampled them, the tool's own extracted answers and results beside them, and the generation settings
the tool recorded.

A reader names the file and line (or archive member) of anything it cannot use: `SourceError`, one line.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sanitize import for_terminal
from ..settings import MAX_PATHS, MAX_PLANNED_PATHS, MAX_QUESTIONS
from ..tasks import DataError
from ..tasks.records import read_file

IMPORT_TOOLS = frozenset({"lm-eval", "inspect_ai"})  # an imported run's backend: the tool its paths came from
MAX_SOURCE_BYTES = 2 * 1024**3  # a samples file or log is read whole (as a data file is)


class SourceError(DataError):
    """Another tool's file this import cannot use (malformed, foreign, or without paths to vote on); the
    message names the file and the line or member."""


@dataclass(frozen=True)
class SourcePath:
    """One generation as the tool stored it: the raw response, and the tool's own extracted answer for it
    where the tool records one per generation (inspect_ai's scorer answer; lm-eval records none)."""

    text: str
    source_answer: str | None = None
    prompt_tokens: int = 0  # 0: the tool recorded no count
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "unknown"  # "stop", "length" (cut at the token limit) or "unknown" (not recorded)


@dataclass(frozen=True)
class SourceQuestion:
    """One question: an id, where it sits in the tool's dataset, the record the task parses (question and
    gold fields), its paths in sampling order, the tool's own per-question results (JSON-shaped), and
    where in the file it was read (`file:line`)."""

    id: str
    position: int
    record: dict[str, Any]
    paths: tuple[SourcePath, ...]
    source: dict[str, Any]
    where: str
    # True: `record` is {"input": the question, "target": the answer alone} (another tool's sample), put into
    # the task's own fields, its gold read as given (no gold_pattern); else a record of the task's data
    plain_gold: bool = False


@dataclass(frozen=True)
class Source:
    """A tool's stored generations: which tool and file, what it ran (task, model, prompt format) and how
    it sampled (`temperature` None: not recorded), its questions, its own aggregate figures, and what this
    import assumed (`notes`)."""

    tool: str
    file: Path
    where: str  # where the generation settings were read (`file:line`, `file:member`)
    sha256: str
    task: str
    model: str
    prompt_format: str  # completion or chat: how the tool put the question
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    questions: tuple[SourceQuestion, ...]
    figures: tuple[SourceFigure, ...] = ()
    notes: tuple[str, ...] = ()
    generation: dict[str, Any] = field(default_factory=dict)  # the settings as the tool recorded them


@dataclass(frozen=True)
class SourceFigure:
    """One accuracy the tool printed, recomputed from the file: its name (lm-eval's filter, inspect_ai's
    scorer), value, and which of each question's paths it used: the first `first_k` (lm-eval's maj@k
    and score-first) or all of them averaged one at a time (`first_k` None: inspect_ai's mean over epochs)."""

    name: str
    value: float
    first_k: int | None
    questions: int
    vote: bool  # a majority vote over the paths used (maj@k), else one path's score


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _KeyTwice(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict, refusing a key given twice (which `json` would keep the last of: a second
    "target" in a sample would replace its gold unseen). Costs one length comparison per object."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _KeyTwice(key)
            seen.add(key)
    return value


def parse_json(where: str, text: str | bytes, document: bool = False) -> Any:
    """One JSON value, each object's keys distinct; SourceError naming `where` (and, for a `document` over
    many lines, the line)."""
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except _KeyTwice as twice:
        found = _key_twice(text) if document else None
        key, line, first = found or (twice.key, None, None)
        raise SourceError(f"{where}{f':{line}' if line else ''}: {key!r} again"
                          f"{f' (first on line {first})' if first else ' in one object'}: JSON keeps the last, the "
                          "tool writes each key once; not a file the tool wrote") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{where}{f':{exc.lineno}' if document else ''}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        line = _deep_line(text) if document else None
        raise SourceError(f"{where}{f':{line}' if line else ''}: JSON nested too deeply (over {_DEEP} levels"
                          f"{' by this line' if line else ''})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{where}: unusable JSON: {str(exc).split(';')[0]}") from None
    return value


_DEEP = 500  # a depth no tool's log reaches; Python's parser gives up near its recursion limit
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_line(text: str | bytes) -> int | None:
    """The line on which a JSON text's nesting first passes `_DEEP` levels (strings skipped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(token.group(), 0)
        if depth > _DEEP:
            return text.count("\n", 0, token.start()) + 1
    return None


_JSON_KEY_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:)?|[\[\]{}]')


def _key_twice(text: str | bytes) -> tuple[str, int, int] | None:
    """The first key given twice in one object of a valid JSON text (keys compared as decoded), the line
    it is on again and the line it was first on: read only once `_unique_keys` has found one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    stack: list[dict[str, int] | None] = []  # per open object, its keys' positions; None for a list
    for token in _JSON_KEY_TOKEN.finditer(text):
        if token.group(2):  # a string followed by a colon: a key of the innermost object
            raw = token.group(1)
            key, keys = json.loads(raw) if "\\" in raw else raw[1:-1], stack[-1] if stack else None
            if keys is not None:
                if key in keys:
                    return key, text.count("\n", 0, token.start()) + 1, text.count("\n", 0, keys[key]) + 1
                keys[key] = token.start()
        elif not token.group(1):
            bracket = token.group()
            if bracket in "{[":
                stack.append({} if bracket == "{" else None)
            elif stack:
                stack.pop()
    return None


def read_source_file(path: Path, what: str) -> bytes:
    """A regular file's bytes (bounded); SourceError otherwise."""
    try:
        return read_file(Path(path), MAX_SOURCE_BYTES, what)
    except DataError as exc:
        raise SourceError(str(exc)) from None


def text_of(where: str, value: Any, name: str) -> str:
    """A string field, as text SQLite can store (no lone surrogate); SourceError otherwise."""
    if not isinstance(value, str):
        raise SourceError(f"{where}: {name} is {type(value).__name__}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{where}: {name} holds a lone surrogate (an escape like \\ud800 that is no character)"
                          ) from None
    return value


def plain_name(text: str) -> str:
    """A name another tool recorded (its model, its task, a folder's name), as the run keeps and shows it:
    without terminal escape sequences (`sanitize.for_terminal`) and without any other control or format
    character (line breaks, tabs, bidirectional overrides), which a report or a plot would show raw."""
    return "".join(ch for ch in for_terminal(text) if unicodedata.category(ch) not in ("Cc", "Cf")).strip()


def has_control(text: str) -> bool:
    """Whether `text` holds what `plain_name` takes out."""
    return plain_name(text) != text.strip()


def number_of(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def check_sizes(where: str, questions: list[SourceQuestion]) -> None:
    """The bounds every run has: questions, paths per question, paths in all."""
    if not questions:
        raise SourceError(f"{where}: no samples in the file")
    if len(questions) > MAX_QUESTIONS:
        raise SourceError(f"{where}: {len(questions):,} questions, more than {MAX_QUESTIONS:,}")
    most = max(len(q.paths) for q in questions)
    if most > MAX_PATHS:
        raise SourceError(f"{where}: a question has {most:,} paths, more than {MAX_PATHS:,}")
    total = sum(len(q.paths) for q in questions)
    if total > MAX_PLANNED_PATHS:
        raise SourceError(f"{where}: {total:,} paths, more than one run holds ({MAX_PLANNED_PATHS:,})")
