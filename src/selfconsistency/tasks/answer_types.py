"""Answer types, each declared once: how a path's answer is read, how a record's gold is parsed, what a
zero-shot path is asked to end with, and what an answer looks like where `--stop-at-answer` ends a path.
Task configs (`answer: {type: ...}`), the Python API's `answer_type` and `serve`'s `self_consistency.
answer_type` all accept exactly the registered names.

A new type is one `AnswerType` and one `register_answer_type` call (see docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import regex

from ..extract import (
    MAX_DIGITS,
    NumberExtractor,
    canonical_letters,
    choice_answer,
    compile_user_pattern,
    normalize_text,
    text_answer,
    whole_number,
    yes_no_answer,
)
from ..math_answers import last_boxed, math_answer, tidy
from ..math_verifier import Verifier, default_verifier
from .base import Question

if TYPE_CHECKING:
    from .spec import AnswerSpec

Extractor = Callable[[str, Question], "str | None"]
# A path's answer and the name of the rule that read it (None: the type names no rules).
RuledExtractor = Callable[[str, Question], "tuple[str | None, str | None]"]
Choices = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AnswerType:
    """One answer type.

    `extractor(spec, flexible)` reads a path's answer (canonical, so that equal answers vote together; None
    abstains). `gold(raw, spec, choices)` parses a record's gold into the same canonical form, with how many
    labels it has (ValueError says why it cannot). `placeholder` stands for the answer in the zero-shot
    instruction ("End with 'The answer is N.'"); None: paths state no answer. `shape`: a regular expression
    of an answer right after the answer statement's prefix, for `--stop-at-answer` (None: no fixed shape).
    `display(gold)`: the gold as an exemplar's answer statement writes it. `free`: nothing is extracted;
    Universal Self-Consistency picks the answer, which is the chosen path's text.

    For answers one can write many ways (math): `ruled(spec, flexible)` reads a path's answer with the name
    of the rule that found it (stored with the path); `instruction` replaces the zero-shot instruction
    ('End with "The answer is N."'); `complete` is the `--stop-at-answer` condition itself, a regular
    expression of a complete answer wherever it stands (instead of `shape` after the answer statement); and
    `equivalence()` gives the verifier that groups a question's written answers into classes
    (answer_classes.py), which vote as one answer and are compared with the gold."""

    name: str
    description: str
    extractor: Callable[[AnswerSpec, bool], Extractor]
    gold: Callable[[str, AnswerSpec, Choices], tuple[str, int]]
    placeholder: str | None = "N"
    shape: str | None = None
    needs_choices: bool = False
    free: bool = False
    display: Callable[[str], str] = str
    ruled: Callable[[AnswerSpec, bool], RuledExtractor] | None = None
    instruction: str | None = None
    complete: str | None = None
    equivalence: Callable[[], Verifier] | None = None


_TYPES: dict[str, AnswerType] = {}


def register_answer_type(kind: AnswerType) -> None:
    """Make `kind.name` an answer type wherever types are named (task configs, the API, the server)."""
    _TYPES[kind.name] = kind


def answer_type(name: str) -> AnswerType:
    try:
        return _TYPES[name]
    except KeyError:
        raise ValueError(f"unknown answer type {name!r}; use {', '.join(_TYPES)}") from None


def answer_type_names() -> tuple[str, ...]:
    return tuple(_TYPES)


# -- the built-in types ------------------------------------------------------------------------------


def _number_gold(raw: str, spec: AnswerSpec, choices: Choices) -> tuple[str, int]:
    value = whole_number(raw)
    if value is None:
        digits = sum(ch.isdigit() for ch in raw)
        shown = raw if len(raw) <= 40 else raw[:20] + "…" + raw[-10:]
        raise ValueError(f"gold {shown!r} has {digits} digits, more than {MAX_DIGITS}"
                         if digits > MAX_DIGITS else f"gold {shown!r} is not a number")
    return value, 1


def _letter_gold(raw: str, spec: AnswerSpec, choices: Choices) -> tuple[str, int]:
    letters = {letter.upper() for letter in re.findall(r"[A-Za-z]", re.sub(r"\band\b", " ", raw))}
    labels = {label for label, _ in choices}
    if not letters or not letters <= labels:
        raise ValueError(f"gold label {raw!r} is not among the options {''.join(sorted(labels))}")
    return canonical_letters(letters), len(letters)


def _yes_no_gold(raw: str, spec: AnswerSpec, choices: Choices) -> tuple[str, int]:
    value = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}.get(raw.lower())
    if value is None:
        raise ValueError(f"gold {raw!r} is not yes or no")
    return value, 1


def _text_gold(raw: str, spec: AnswerSpec, choices: Choices) -> tuple[str, int]:
    value = normalize_text(raw, tuple(spec.normalize))
    if not value:
        raise ValueError("empty gold answer")
    return value, 1


def _numbers(spec: AnswerSpec, flexible: bool) -> Extractor:
    numbers = NumberExtractor(flexible=flexible)
    return lambda text, question: numbers(text)


def _letters(spec: AnswerSpec, flexible: bool) -> Extractor:
    return lambda text, question: choice_answer(text, question.choices, question.n_answers, flexible)


def _yes_no(spec: AnswerSpec, flexible: bool) -> Extractor:
    return lambda text, question: yes_no_answer(text, flexible)


_STATED_TEXT = compile_user_pattern(r"answer\s+is\b[\s:]*([^\n]+?)\.?\s*$", regex.IGNORECASE | regex.MULTILINE)


def _text(spec: AnswerSpec, flexible: bool) -> Extractor:
    pattern = compile_user_pattern(spec.pattern, regex.IGNORECASE | regex.MULTILINE) if spec.pattern else _STATED_TEXT
    steps = tuple(spec.normalize)
    return lambda text, question: text_answer(text, pattern, steps)


def _whole_response(spec: AnswerSpec, flexible: bool) -> Extractor:
    steps = tuple(spec.normalize)  # identical responses, once normalised, vote together
    return lambda text, question: normalize_text(text, steps) or None


def _math_gold(raw: str, spec: AnswerSpec, choices: Choices) -> tuple[str, int]:
    value = tidy(last_boxed(raw) or raw)
    if not value:
        raise ValueError("empty gold answer")
    return value, 1


def _math_ruled(spec: AnswerSpec, flexible: bool) -> RuledExtractor:
    return lambda text, question: math_answer(text)


def _math(spec: AnswerSpec, flexible: bool) -> Extractor:
    return lambda text, question: math_answer(text)[0]


# A complete \boxed{...} (three levels of nested braces) and one character after it.
_BOXED_COMPLETE = (r"\\(?:boxed|fbox)\{(?:[^{}]|\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})*\}(?=[\s\S])")

for _kind in (
    AnswerType("number", "a number; 18.00, $18 and 36/2 are the same answer", _numbers, _number_gold,
               shape=r"[-\u2212]?\s?\$?\s?[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?"),
    AnswerType("letter", "an option's letter (multiple choice; 'B and D' for choose-two)", _letters, _letter_gold,
               placeholder="(X)", shape=r"\(?[A-Za-z]\)?", needs_choices=True,
               display=lambda gold: " and ".join(f"({letter})" for letter in gold.split(","))),
    AnswerType("yes_no", "yes or no", _yes_no, _yes_no_gold, shape=r"(?:yes|no)\b"),
    AnswerType("text", "a short text after the answer statement (or answer.pattern's group), normalised",
               _text, _text_gold),
    AnswerType("free", "no extraction: Universal Self-Consistency picks the most consistent response",
               _whole_response, _text_gold, placeholder=None, free=True),
    AnswerType("math", "a LaTeX answer (the last \\boxed{}, Minerva's final answer, or 'The answer is'); "
               "equivalent forms (\\frac{1}{2}, 0.5, \\dfrac12) vote as one, decided by math-verify",
               _math, _math_gold, placeholder="X", ruled=_math_ruled,
               instruction="Put your final answer within \\boxed{}.", complete=_BOXED_COMPLETE,
               equivalence=default_verifier),
):
    register_answer_type(_kind)
