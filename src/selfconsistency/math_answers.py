r"""LaTeX answers as math benchmarks state them, read from a path's text. Pure functions, no I/O.

A path's answer is, by the first rule that finds one:
- `boxed`: the last complete `\boxed{...}` or `\fbox{...}` (braces balanced, nested ones included; also
  `\boxed 5`, the brace-less form);
- `final_answer`: Minerva's "Final Answer: The final answer is $X$. I hope it is correct." (Lewkowycz et al.
  2022), its last occurrence;
- `answer_is`: the last "The answer is X" (to the end of its line).

The answer is the written form, lightly tidied (surrounding `$`, `\(...\)`, spaces and a final full stop
removed); which written forms are the same answer is math-verify's decision (`math_verify.py`), and the
vote groups them into classes (`equivalence.py`).

A reasoning model's thinking (`<think>...</think>`, or the task's or model's own tag pair) is kept in the
stored path but never searched: `visible_text` is what the rules read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_THINKING_TAGS = ("<think>", "</think>")

# Bounds on a written form before math-verify parses it: beyond them the answer is its own string.
MAX_ANSWER_CHARS = 400  # MATH-500's longest gold answer has 53 characters
MAX_BRACE_DEPTH = 16  # 10,000 nested braces stop here, not in a recursive parser
# TeX that defines or pulls in text is no answer; math-verify would compare it as a string anyway.
_MACRO_DEFINITION = re.compile(r"\\(?:[gex]?def|let|newcommand|renewcommand|providecommand|csname|catcode|"
                               r"input|include|usepackage|begingroup|expandafter)(?![A-Za-z])")

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# lm-eval's minerva_math appends the closing sentence too: a path stopped at it (or cut short) still counts.
_MINERVA = re.compile(r"Final Answer: The final answer is(.*?)\.?\s*I hope it is correct", re.DOTALL)
_ANSWER_IS = re.compile(r"answer\s+is\b[\s:]*([^\n]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Thinking:
    """A path's text split: `visible` (searched for the answer), `thinking` (the blocks' contents), where
    the blocks are in the text (`spans`, tags included) and whether the last block never closed
    (`unclosed`: the path ended while thinking)."""

    visible: str
    thinking: str
    unclosed: bool
    spans: tuple[tuple[int, int], ...] = ()

    def tokens_inside(self, token_ends: tuple[int, ...]) -> int:
        """How many tokens (each given by where it ends in the text) end inside a thinking block."""
        return sum(any(start < end <= stop for start, stop in self.spans) for end in token_ends)


def read_answer(text: str, question: object, extract: Callable[[str, object], tuple[str | None, str | None]],
                tags: tuple[str, str] | None) -> tuple[str | None, str | None, Thinking]:
    """A path's answer and the rule that read it (`extract`, the task's), read outside its thinking blocks,
    and the split itself: how every path is read, generated here or imported from another tool."""
    thinking = split_thinking(text, tags)
    answer, rule = extract(thinking.visible, question)
    return answer, rule, thinking


def split_thinking(text: str, tags: tuple[str, str] | None = DEFAULT_THINKING_TAGS) -> Thinking:
    """`text` without its thinking blocks. A block opens with `tags[0]` and ends with `tags[1]`; a close tag
    with no open tag before it ends a block that began with the text (chat templates that put the open
    tag in the prompt); an open tag never closed makes the rest of the text thinking."""
    if not tags:
        return Thinking(text, "", False)
    open_tag, close_tag = tags
    first_open, first_close = text.find(open_tag), text.find(close_tag)
    visible: list[str] = []
    thinking: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    if first_close >= 0 and (first_open < 0 or first_close < first_open):
        thinking.append(text[:first_close])
        position = first_close + len(close_tag)
        spans.append((0, position))
    while True:
        start = text.find(open_tag, position)
        if start < 0:
            visible.append(text[position:])
            return Thinking("".join(visible), "\n".join(thinking), False, tuple(spans))
        visible.append(text[position:start])
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            thinking.append(text[start + len(open_tag):])
            spans.append((start, len(text)))
            return Thinking("".join(visible), "\n".join(thinking), True, tuple(spans))
        thinking.append(text[start + len(open_tag):end])
        position = end + len(close_tag)
        spans.append((start, position))


def _closing(text: str) -> dict[int, int]:
    """Each `{` that closes: its index -> the index after its `}`, in one pass (escaped braces, `\\{`, do
    not count)."""
    pairs: dict[int, int] = {}
    opened: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            opened.append(i)
        elif ch == "}" and opened:
            pairs[opened.pop()] = i + 1
        i += 1
    return pairs


def last_boxed(text: str) -> str | None:
    r"""The content of the last complete `\boxed{...}` / `\fbox{...}` (or `\boxed X`), or None."""
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return None
    closing = _closing(text)
    for match in reversed(boxes):
        rest = match.end()
        if text.startswith("{", rest):
            end = closing.get(rest)
            if end is not None:
                return text[rest + 1:end - 1]
        elif text.startswith(" ", rest):  # \boxed 5: up to the end of the math or the line
            value = re.split(r"[$\n]", text[rest + 1:], maxsplit=1)[0]
            if value.strip():
                return value
    return None


def tidy(answer: str) -> str:
    r"""A written form as compared and shown: surrounding `$`/`\(...\)`/`\[...\]`, spaces and a final full
    stop removed."""
    value = answer.strip()
    for _ in range(3):
        before = value
        value = value.rstrip(" .").strip()
        if value.startswith("$") and value.endswith("$") and len(value) > 1:
            value = value.strip("$").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if value.startswith(left) and value.endswith(right):
                value = value[len(left):-len(right)].strip()
        if value == before:
            break
    return value


def math_answer(text: str) -> tuple[str | None, str | None]:
    """(the written answer, the rule that found it) of a path's visible text; (None, None) if no rule
    finds one."""
    boxed = last_boxed(text)
    if boxed is not None and tidy(boxed):
        return tidy(boxed), "boxed"
    # a statement holding a box the first rule could not read holds an unfinished one (a path cut short)
    for match in reversed(list(_MINERVA.finditer(text + " I hope it is correct."))):
        value = tidy(match.group(1))
        if value and not _BOX.search(value):
            return value, "final_answer"
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        value = tidy(match.group(1))
        if value and not _BOX.search(value):
            return value, "answer_is"
    return None, None


def beyond_size(answer: str) -> str | None:
    """Why a written form is beyond the size limits math-verify may parse ('length', 'nesting', 'macro'),
    or None when it is within them."""
    if len(answer) > MAX_ANSWER_CHARS:
        return "length"
    depth = deepest = 0
    for ch in answer:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth -= 1
    if deepest > MAX_BRACE_DEPTH:
        return "nesting"
    if _MACRO_DEFINITION.search(answer):
        return "macro"
    return None
