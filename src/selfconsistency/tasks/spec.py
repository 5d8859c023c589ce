"""A task defined by a config file (YAML or TOML): data, field mapping, prompt template, exemplars,
answer type and extraction. The built-in tasks are such files too (`tasks/builtin/`)."""

from __future__ import annotations

import json
import re
import string
import tomllib
from pathlib import Path
from typing import Any, Literal

import regex
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..extract import compile_user_pattern
from .answer_types import answer_type
from .base import DataError


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSpec(_Strict):
    path: str | None = None  # relative to the config file; --data overrides it
    format: Literal["jsonl", "json", "csv"] | None = None  # default: from the file's extension
    hub: tuple[str, str] | None = None  # (repo id, config) on the Hugging Face hub
    split: str = "test"


class FieldSpec(_Strict):
    """Where each part of a question sits in a record; dotted paths reach into nested objects."""

    question: str = "question"
    gold: str = "answer"
    id: str | None = None
    # A list of texts (labelled A, B, ...), a label->text map, or a list of {label, text} objects;
    # for CSV, a list of column names whose headers are the labels.
    choices: str | list[str] | None = None
    explanation: str | None = None
    groups: list[str] = Field(default_factory=list)  # record fields results are also given by (subject, level)


class ExemplarSpec(_Strict):
    question: str | dict[str, Any]  # the question text, or a record shaped like the data's
    rationale: str
    answer: str | None = None  # informative only: the rationale states it


class PromptSpec(_Strict):
    # Jinja2, rendering one question's body from `question`, `choices` [(label, text)] and `record`.
    template: str = "{{ question }}"
    exemplars: list[ExemplarSpec] | None = None
    exemplars_file: str | None = None  # JSON: a list, or {"exemplars": [...]} of {question, rationale}
    shots_from_data: int | None = Field(default=None, ge=1)  # the data's first K records are exemplars
    answer_statement: str = "The answer is {answer}."  # ends rationales built from explanations
    stop: list[str] = Field(default_factory=lambda: ["\nQ:", "\n\n"])  # few-shot completion format
    # The completion format's labels: each question is `question_label` + its text + `answer_label`, and an
    # exemplar's rationale follows after `rationale_separator` ("Q: ...\nA: ..." by default).
    question_label: str = "Q: "
    answer_label: str = "\nA:"
    rationale_separator: str = " "
    chat_exemplars: bool = True  # false: the chat format is zero-shot (the exemplars are for completion)

    @field_validator("answer_statement")
    @classmethod
    def _only_answer_field(cls, value: str) -> str:
        # str.format reaches attributes ("{answer.__class__}"): allow the bare {answer} field only.
        try:
            fields = [(name, spec or "", conv) for _, name, spec, conv in string.Formatter().parse(value)
                      if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad answer_statement {value!r}: {exc}") from None
        if fields != [("answer", "", None)]:
            raise ValueError(f"answer_statement {value!r} must hold {{answer}} once and no other field")
        return value


class AnswerSpec(_Strict):
    type: str = "number"  # a registered answer type (answer_types.py): number, letter, yes_no, text, free, ...
    gold_pattern: str | None = None  # regex; its first group is the gold inside the gold field
    pattern: str | None = None  # regex; its first group is a path's answer (text type; overrides default)
    normalize: list[Literal["lower", "strip_punctuation", "strip_articles"]] = Field(
        default_factory=lambda: ["lower", "strip_punctuation", "strip_articles"])
    # A reasoning model's thinking block: kept with the path, never searched for the answer (null: none).
    thinking: tuple[str, str] | None = ("<think>", "</think>")

    @field_validator("thinking")
    @classmethod
    def _tags(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        if value is not None:
            check_thinking_tags(value)
        return value

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        answer_type(value)
        return value

    @field_validator("gold_pattern", "pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if compile_user_pattern(value).groups < 1:
                    raise ValueError(f"pattern {value!r} needs a capture group")
            except regex.error as exc:
                raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        return value


def check_thinking_tags(tags: tuple[str, str]) -> tuple[str, str]:
    """Two different non-empty tags without spaces or parentheses (they travel inside a pattern's comment)."""
    if len(tags) != 2 or tags[0] == tags[1] or any(not tag or re.search(r"[\s()]", tag) for tag in tags):
        raise ValueError(f"thinking tags {list(tags)!r}: two different tags without spaces or parentheses, "
                         "e.g. ['<think>', '</think>']")
    return tags


# Fields added after tasks were first fingerprinted: left out of a task's fingerprint while at their
# defaults, so that the stores of runs made before them still match their task.
ADDED_FIELDS = {"fields": ("groups",), "prompt": ("question_label", "answer_label", "rationale_separator",
                                                   "chat_exemplars"), "answer": ("thinking",)}


class TaskSpec(_Strict):
    name: str
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    fields: FieldSpec = Field(default_factory=FieldSpec)
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    answer: AnswerSpec = Field(default_factory=AnswerSpec)

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if answer_type(self.answer.type).needs_choices and self.fields.choices is None:
            raise ValueError(f"answer type {self.answer.type!r} needs fields.choices")
        sources = [self.prompt.exemplars is not None, self.prompt.exemplars_file is not None,
                   self.prompt.shots_from_data is not None]
        if sum(sources) > 1:
            raise ValueError("give exemplars inline, from a file, or from the data: one of them")
        return self


# A task config is a page of settings and a few exemplars; anything far larger is a mistake or an attack.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 64  # lists and mappings inside each other; real configs use a handful


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors or aliases: nine levels of nine aliases make a billion-item "lol" bomb from
    a few lines, and a task config never needs them."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(event.start_mark.line + 1, event.anchor)
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    def __init__(self, line: int, anchor: str):
        super().__init__(line, anchor)
        self.line = line
        self.anchor = anchor


def _read_config(path: Path) -> str:
    from .records import read_file

    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_CONFIG_BYTES:
        raise DataError(f"{path}: task config larger than {MAX_CONFIG_BYTES:,} bytes; put data and exemplars in "
                        "their own files")
    data = read_file(path, MAX_CONFIG_BYTES, "a task config")  # a regular file, bounded: never a FIFO or device
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: cannot read task config: {exc}") from None


def _depth(value: Any) -> int:
    """How many lists and mappings sit inside each other in `value`, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            if level <= MAX_CONFIG_DEPTH:
                pending.extend((child, level + 1) for child in children)
    return deepest


def load_spec(path: Path) -> tuple[TaskSpec, Path]:
    """A TaskSpec from a YAML or TOML file, and the folder its relative paths start from."""
    path = Path(path)
    text = _read_config(path)
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except _AliasRefused as exc:
        raise DataError(f"{path}:{exc.line}: YAML anchors and aliases (&{exc.anchor} / *{exc.anchor}) are not "
                        "allowed in task configs; write the values out") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: malformed task config: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits, which Python refuses to convert
        raise DataError(f"{path}: unusable value in task config: {str(exc).split(';')[0]}") from None
    except RecursionError:  # the parsers recurse per nesting level
        raise DataError(f"{path}: task config nested too deeply") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a task config is a mapping of settings")
    if _depth(raw) > MAX_CONFIG_DEPTH:  # validation and templates recurse over it too
        raise DataError(f"{path}: task config nested more than {MAX_CONFIG_DEPTH} levels deep")
    try:
        return TaskSpec.model_validate(raw), path.parent
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DataError(f"{path}: {problems}") from None


def load_exemplar_file(path: Path) -> list[ExemplarSpec]:
    from .records import MAX_EXEMPLARS_BYTES, read_file

    try:
        raw = json.loads(read_file(path, MAX_EXEMPLARS_BYTES, "an exemplars file").decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: cannot read exemplars: {exc}") from None
    items = raw["exemplars"] if isinstance(raw, dict) and "exemplars" in raw else raw
    try:
        return [ExemplarSpec.model_validate(item) for item in items]
    except (ValidationError, TypeError) as exc:
        raise DataError(f"{path}: exemplars need 'question' and 'rationale': {exc}") from None
