"""Final-answer extraction from a reasoning path. Pure functions, no I/O.

An extracted answer is a canonical string so that equal values vote together: numbers become the
exact fraction they denote (`18.00` -> `18`, `0.75` and `3/4` -> `3/4`, `$1,000` -> `1000`).
`None` means the path gave no answer; it abstains from the vote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# A number as models write it: optional sign and `$`, thousands separators, decimals, or a fraction.
_NUMBER = re.compile(
    r"(?<![\w.])"                      # not the tail of a word or of another number
    r"(?P<sign>[-\u2212])?\s?\$?\s?(?P<sign2>[-\u2212])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)"
    r"(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+))?"
)
# "The answer is N", as in the exemplars; the last statement wins when a path restates it.
_ANSWER_IS = re.compile(r"answer\s+is\b[\s:]*", re.IGNORECASE)


def canonical_number(text: str) -> str | None:
    """The canonical form of the first number in `text`, or None if there is none."""
    match = _NUMBER.search(text)
    return _canonical_from_match(match) if match else None


def _canonical_from_match(match: re.Match[str]) -> str | None:
    value = Fraction(match["int"].replace(",", "") + (match["frac"] or ""))
    if match["den"] is not None:
        denominator = int(match["den"])
        if denominator == 0:
            return None
        value /= denominator
    if match["sign"] or match["sign2"]:
        value = -value
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    for match in reversed(matches):
        value = _canonical_from_match(match)
        if value is not None:
            return value
    return None


def strict_answer(text: str) -> str | None:
    """The number after the last 'The answer is', or None."""
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        value = canonical_number(text[match.end():].split("\n", 1)[0])
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class NumberExtractor:
    """Strict `The answer is N`, falling back to the last number in the path unless `flexible=False`."""

    flexible: bool = True

    def __call__(self, text: str) -> str | None:
        answer = strict_answer(text)
        if answer is None and self.flexible:
            answer = last_number(text)
        return answer


def parse_gsm8k_gold(answer_field: str) -> str:
    """Gold answer of a GSM8K record: the number after `####`."""
    _, sep, tail = answer_field.rpartition("####")
    value = canonical_number(tail) if sep else None
    if value is None:
        raise ValueError(f"no '#### N' gold answer in {answer_field[-60:]!r}")
    return value
