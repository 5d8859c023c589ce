"""Question text is data, never prompt structure. Pure functions, no I/O.

What a hostile (or careless) question could do to a few-shot prompt, and what is done about it:
- forge the prompt's own markers: a line starting "Q:" or "A:", "The answer is ...", blank lines that end
  an exemplar block -> the colon becomes a full-width colon, the answer phrase is reworded, blank lines
  collapse into one line break;
- forge chat structure: special tokens (<|im_start|>, <|endoftext|>, [INST], <start_of_turn>, </s>) and
  role prefixes (Human:, Assistant:, System:, User:) -> broken up so no tokenizer reads them as such;
- break lines unseen: U+2028/U+2029, NEL, vertical tab, form feed -> plain line breaks, then as above;
- hide text: control characters, NUL, and bidirectional overrides (RTL tricks) -> removed;
- flood the context: text over the length limit -> cut, with a marker.
`--strict-input` rejects such text instead. What this does not do: stop a model from being persuaded by
what a question says; it only keeps the prompt's structure where the builder put it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 8000
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"))
# Zero-width joiners are kept (scripts need them) but must not hide a marker at a line's start.
_MARKER_LINE = re.compile(r"(?im)^([\s\u200c\u200d]*)(Q|A|Question|Answer|Human|Assistant|System|User)\s*:")
_ANSWER_PHRASE = re.compile(r"(?i)(the\s+)?answer\s+is\b")  # no \b before: extraction needs none
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{0,40}\|>|\[/?INST\]|<<\s*/?SYS\s*>>|</?s>|<(?:start|end)_of_turn>",
                            re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n+")
# What str.splitlines() and many tokenizers read as a line break besides \n and \r.
_LINE_SEPARATORS = dict.fromkeys(map(ord, "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), "\n")


class UnsafeInput(ValueError):
    """Text refused under --strict-input; the message lists what was found."""


@dataclass(frozen=True)
class Cleaned:
    text: str
    issues: tuple[str, ...]  # what was neutralised, for the report; empty when the text was clean


def _control(ch: str) -> bool:
    # Zero-width (non-)joiners are kept: some scripts (Persian, Indic) and emoji need them.
    return unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\t\u200c\u200d"


def sanitize(text: str, max_chars: int = DEFAULT_MAX_CHARS, strict: bool = False) -> Cleaned:
    issues = []
    if len(text) > max_chars:
        issues.append(f"over {max_chars} characters")
        text = text[:max_chars] + " [cut]"
    without_bidi = text.translate(_BIDI)
    if without_bidi != text:
        issues.append("bidirectional override")
    text = without_bidi.replace("\r\n", "\n").replace("\r", "\n")
    one_break = text.translate(_LINE_SEPARATORS)
    if one_break != text:
        issues.append("unicode line separators")
    text = one_break
    cleaned = "".join(ch for ch in text if not _control(ch))
    if cleaned != text:
        issues.append("control characters")
    text = cleaned
    if _SPECIAL_TOKEN.search(text):
        issues.append("chat special tokens")
        text = _SPECIAL_TOKEN.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›")
                                  .replace("[", "⟦").replace("]", "⟧"), text)
    if _MARKER_LINE.search(text):
        issues.append("prompt markers at line start")
        text = _MARKER_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}\uff1a", text)
    if _ANSWER_PHRASE.search(text):
        issues.append("answer statement")
        text = _ANSWER_PHRASE.sub(lambda m: f"{m.group(1) or ''}answer reads", text)
    if _BLANK_LINES.search(text):
        issues.append("blank lines")
        text = _BLANK_LINES.sub("\n", text)
    if strict and issues:
        raise UnsafeInput(", ".join(issues))
    return Cleaned(text.strip(), tuple(issues))
