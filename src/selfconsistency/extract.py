"""Final-answer extraction from a reasoning path. Pure functions, no I/O.

An extracted answer is a canonical string so that equal values vote together: numbers become the
exact fraction they denote (`18.00` -> `18`, `0.75` and `3/4` -> `3/4`, `$1,000` -> `1000`).
`None` means the path gave no answer; it abstains from the vote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from re import _constants as sre_constants  # Python's own regular-expression parser
from re import _parser as sre_parse
from typing import Any

import regex

# A task config's own pattern runs at most this long on one text: a pattern such as `(a|aa)+$`
# backtracks for ages on some inputs.
USER_PATTERN_SECONDS = 1.0


class PatternTimeout(ValueError):
    """A task config's regular expression ran past its time limit; the message names the pattern."""

    def __init__(self, pattern: str, role: str):
        super().__init__(f"{role} {pattern!r} ran longer than {USER_PATTERN_SECONDS:g}s (catastrophic "
                         "backtracking?); simplify it")
        self.pattern = pattern
        self.role = role


# Compiling unrolls counted repeats, with no time limit: `(a{60000}){60000}` never finishes. Counts, nested
# ones multiplied, stay below this.
MAX_PATTERN_REPEAT = 1000
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


# An x (verbose) flag anywhere, global `(?x)` or scoped `(?x:...)`: whitespace and #-comments are not atoms.
_VERBOSE_FLAG = re.compile(r"\(\?[a-zA-Z^-]*x")


def _without_verbose_filler(pattern: str) -> str:
    """`pattern` less the whitespace and #-comments that verbose mode ignores outside character classes."""
    kept: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            kept.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch.isspace():
            i += 1
            continue
        elif ch == "#":
            i = pattern.find("\n", i) + 1 or len(pattern)
            continue
        kept.append(ch)
        i += 1
    return "".join(kept)


_COMMENT = re.compile(r"\(\?#[^)]*\)")  # (?#...): a comment, whatever it holds ("(?#[)" opens no class)


def check_pattern_repeats(pattern: str, flags: int = 0) -> None:
    r"""ValueError naming `pattern` if a counted repeat, or a product of nested ones, exceeds the limit.

    The pattern is checked as a regular-expression parser reads it (Python's own, `re._parser`: comments,
    classes and escapes are what they are, not what the text looks like). Syntax only the `regex` engine
    knows falls back to a check of the text, comments removed, that errs towards refusing."""
    try:
        parsed = sre_parse.parse(pattern, _stdlib_flags(flags))
    except RecursionError:
        raise ValueError(f"pattern {pattern[:80]!r} nests too deeply") from None
    except (re.error, OverflowError, ValueError, TypeError):
        parsed = None
    if parsed is not None:
        product = _parsed_repeats(parsed)
        if product > MAX_PATTERN_REPEAT:
            raise ValueError(f"pattern {pattern[:80]!r} repeats more than {MAX_PATTERN_REPEAT:,} times "
                             f"({product:,} counted, nested ones multiplied); use + or * instead")
        return
    text = _COMMENT.sub("", pattern)
    _check_repeats(text, pattern)
    if flags & regex.VERBOSE or _VERBOSE_FLAG.search(pattern):
        _check_repeats(_without_verbose_filler(text), pattern)


def _stdlib_flags(flags: int) -> int:
    """The `regex` flags that change how Python's parser reads a pattern, as `re`'s own."""
    return sum(stdlib for ours, stdlib in ((regex.VERBOSE, re.VERBOSE), (regex.IGNORECASE, re.IGNORECASE),
                                           (regex.DOTALL, re.DOTALL), (regex.MULTILINE, re.MULTILINE))
               if flags & ours)


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)
_GROUPS = (sre_constants.SUBPATTERN, sre_constants.ATOMIC_GROUP)


def _parsed_repeats(parsed: Any) -> int:
    """The largest product of counted repeats nested in a parsed pattern (an unbounded repeat, + or *,
    counts its minimum: that is what compiling unrolls), walked without recursion."""
    largest, pending = 1, [(parsed, 1)]
    while pending:
        node, product = pending.pop()
        largest = max(largest, product)
        for op, av in node:
            if op in _REPEATS:
                low, high, sub = av
                pending.append((sub, product * max(low if high == sre_constants.MAXREPEAT else high, 1)))
            elif op in _GROUPS:
                pending.append((av[-1] if isinstance(av, tuple) else av, product))
            elif op == sre_constants.BRANCH:
                pending.extend((branch, product) for branch in av[1])
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                pending.append((av[1], product))
            elif op == sre_constants.GROUPREF_EXISTS:
                pending.extend((branch, product) for branch in av[1:] if branch is not None)
    return largest


def _check_repeats(pattern: str, shown: str) -> None:
    frames = [1]  # per open group: the largest repeat product inside it so far
    last = 1  # repeat product of the atom just read (a group's inner product)
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            if pattern[i - 1:i] in ("p", "P", "N", "x", "u", "U", "g") and pattern[i:i + 1] == "{":
                i = pattern.find("}", i) + 1 or len(pattern)
            last = 1
            continue
        if ch == "[":  # a character class: braces inside are literal
            i += 2 if pattern[i + 1:i + 2] == "^" else 1
            i += pattern[i:i + 1] == "]"  # a leading ] is literal
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            last = 1
            continue
        if ch == "(":
            frames.append(1)
            i += 1
            continue
        if ch == ")" and len(frames) > 1:
            last = frames.pop()
            frames[-1] = max(frames[-1], last)
            i += 1
            continue
        repeat = _REPEAT.match(pattern, i) if ch == "{" else None
        if repeat and (repeat[1] or repeat[2]):
            counts = [int(n) if len(n) < 10 else 10**10 for n in repeat.groups() if n]
            last *= max(counts)
            if last > MAX_PATTERN_REPEAT:
                raise ValueError(f"pattern {shown[:80]!r} repeats more than {MAX_PATTERN_REPEAT:,} times "
                                 f"({last:,} counted, nested ones multiplied); use + or * instead")
            frames[-1] = max(frames[-1], last)
            i = repeat.end()
            continue
        last = 1
        i += 1


def compile_user_pattern(pattern: str, flags: int = 0) -> regex.Pattern[str]:
    """A task config's pattern, compiled by the `regex` engine (it supports the time limit)."""
    check_pattern_repeats(pattern, flags)
    try:
        return regex.compile(pattern, flags)
    except RecursionError:
        raise ValueError(f"pattern {pattern[:80]!r} nests too deeply") from None


def search_user_pattern(pattern: regex.Pattern[str], text: str, role: str) -> regex.Match[str] | None:
    try:
        return pattern.search(text, timeout=USER_PATTERN_SECONDS)
    except TimeoutError:
        raise PatternTimeout(pattern.pattern, role) from None

# A number as models write it: optional sign and `$`, thousands separators, decimals, or a fraction.
_NUMBER = re.compile(
    r"(?<![\w.])"                      # not the tail of a word or of another number
    r"(?P<sign>[-\u2212])?\s?\$?\s?(?P<sign2>[-\u2212])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)"
    r"(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+))?"
)
# Longer digit strings are no answer anyone means (and Python refuses to convert past 4,300 digits).
MAX_DIGITS = 1000
# "The answer is N", as in the exemplars; the last statement wins when a path restates it.
_ANSWER_IS = re.compile(r"answer\s+is\b[\s:]*", re.IGNORECASE)


def canonical_number(text: str) -> str | None:
    """The canonical form of the first number in `text`, or None if there is none."""
    match = _NUMBER.search(text)
    return _canonical_from_match(match) if match else None


def _canonical_from_match(match: re.Match[str]) -> str | None:
    if len(match["int"]) + len(match["frac"] or "") + len(match["den"] or "") > MAX_DIGITS:
        return None
    if match["sign"] and match["sign2"]:  # "--5", "-$-5": no number anyone writes
        return None
    value = Fraction(match["int"].replace(",", "") + (match["frac"] or ""))
    if match["den"] is not None:
        denominator = int(match["den"])
        if denominator == 0:
            return None
        value /= denominator
    if match["sign"] or match["sign2"]:
        value = -value
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def whole_number(text: str) -> str | None:
    """The canonical form of `text` if all of it is one number (a final full stop allowed), else None:
    `1e999` or `2-3` are not numbers whose first digits could stand for them."""
    stripped = text.strip()
    if stripped.startswith("+") and stripped[1:2] not in ("+", "-", "\u2212"):  # "+5" is 5; "+-5" is no number
        stripped = stripped[1:].lstrip()
    match = _NUMBER.fullmatch(stripped[:-1] if stripped.endswith(".") else stripped)
    return _canonical_from_match(match) if match else None


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


# -- multiple choice -------------------------------------------------------------------------------

# Where a path states its choice: "The answer is", "The correct answer is", "Answer:", "answer: ".
_CHOICE_STATEMENT = re.compile(r"(?:answer\s+is|answer\s*:|answers\s+are|answers\s*:)[\s:]*", re.IGNORECASE)
# A label as models write one: (C), C), **C**, C:, C. or a bare capital C; never a lowercase word.
_LABEL = re.compile(r"(?<![A-Za-z])(?:\(([A-Za-z])\)|\*{0,2}([A-Z])\*{0,2}(?=[\s).,:;*]|$))")
_CONNECTOR = re.compile(r"^[\s,;&*]*(?:and|&|,|or)?[\s,;&*]*$", re.IGNORECASE)


def canonical_letters(letters: set[str]) -> str:
    return ",".join(sorted(letters))


def _labels_at(text: str, labels: set[str]) -> list[str]:
    """Labels named at the start of `text`, joined by 'and' / ',' ('B and D'); stops at other words."""
    found: list[str] = []
    position = 0
    for match in _LABEL.finditer(text):
        gap = text[position: match.start()]
        if (found and not _CONNECTOR.match(gap)) or (not found and gap.strip(" *\"'`")):
            break
        label = (match.group(1) or match.group(2)).upper()
        if label not in labels:
            break
        found.append(label)
        position = match.end()
    return found


def _option_named(text: str, choices: tuple[tuple[str, str], ...]) -> str | None:
    """The one option whose text the statement begins with (longest match wins), if any."""
    clean = text.strip(" *\"'`").lower()
    hits = [(len(option), label) for label, option in choices if option and clean.startswith(option.lower())]
    return max(hits)[1] if hits else None


def choice_answer(text: str, choices: tuple[tuple[str, str], ...], n_answers: int = 1,
                  flexible: bool = True) -> str | None:
    """The option label(s) a path chose, canonical ("C" or "B,D"), or None.

    The last answer statement decides. Naming several labels there answers a multi-answer question; for a
    single-answer question it is ambiguous and abstains. Without a usable statement, `flexible` looks at
    the path's last line for a formatted label ("(C)", "C)", "**C**") or an option's text.
    """
    labels = {label for label, _ in choices}
    for match in reversed(list(_CHOICE_STATEMENT.finditer(text))):
        rest = text[match.end():].split("\n", 1)[0]
        found = set(_labels_at(rest, labels))
        if not found:
            named = _option_named(rest, choices)
            found = {named} if named else set()
        if found:
            return canonical_letters(found) if len(found) == n_answers or n_answers > 1 else None
    if not flexible:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    formatted = re.findall(r"\(([A-Z])\)|(?<![A-Za-z])([A-Z])\)|\*\*([A-Z])\*\*", last)
    found = {"".join(groups) for groups in formatted} & labels
    if found:
        return canonical_letters(found) if len(found) == n_answers or n_answers > 1 else None
    named = [label for label, option in choices if option and option.lower() in last.lower()]
    return named[0] if len(named) == 1 else None


# -- yes / no and free text ------------------------------------------------------------------------

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def yes_no_answer(text: str, flexible: bool = True) -> str | None:
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        found = _YES_NO.match(text[match.end():].lstrip(" *\"'("))
        if found:
            return found.group(1).lower()
    if flexible:
        words = _YES_NO.findall(text)
        return words[-1].lower() if words else None
    return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_text(answer: str, steps: tuple[str, ...]) -> str:
    for step in steps:
        if step == "lower":
            answer = answer.lower()
        elif step == "strip_punctuation":
            answer = _PUNCTUATION.sub(" ", answer)
        elif step == "strip_articles":
            answer = _ARTICLES.sub(" ", answer)
        else:
            raise ValueError(f"unknown normaliser step {step!r}")
    return " ".join(answer.split())


def text_answer(text: str, pattern: regex.Pattern[str] | re.Pattern[str], steps: tuple[str, ...],
                role: str = "answer.pattern") -> str | None:
    """The first group of the last match of `pattern`, normalised; None if it never matches.
    PatternTimeout if the pattern runs past its time limit."""
    if isinstance(pattern, re.Pattern):  # a caller's stdlib pattern: same syntax and flags, with the limit
        pattern = regex.compile(pattern.pattern, pattern.flags)
    try:
        matches = list(pattern.finditer(text, timeout=USER_PATTERN_SECONDS))
    except TimeoutError:
        raise PatternTimeout(pattern.pattern, role) from None
    if not matches:
        return None
    value = normalize_text(matches[-1].group(1), steps)
    return value or None
