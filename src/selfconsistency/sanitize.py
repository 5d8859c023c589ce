"""Question text is data, never prompt structure. Pure functions, no I/O.

What a hostile (or careless) question could do to a few-shot prompt, and what is done about it:
- forge the prompt's own markers: a line starting "Q:" or "A:", "The answer is ...", blank lines that end
  an exemplar block -> the colon becomes a full-width colon, the answer phrase is reworded, blank lines
  collapse into one line break;
- forge chat structure: special tokens (<|im_start|>, <｜begin▁of▁sentence｜>, [INST], <start_of_turn>, </s>,
  <bos>, <tool_call>, <think>, BERT's <mask>/<cls>/<sep>) and
  role prefixes (Human:, Assistant:, System:, User:) -> broken up so no tokenizer reads them as such;
- break lines unseen: U+2028/U+2029, NEL, vertical tab, form feed -> plain line breaks, then as above;
- hide text: control and format characters (NUL, zero-width spaces, soft hyphens, bidirectional overrides;
  zero-width joiners next to ASCII) -> removed, before the checks below, so "Q\u200d:" is a marker too;
- look-alike markers: "Ｑ:" (full-width), "А:" (Cyrillic) or "Q\u0301:" (a combining mark) -> treated as
  the markers they look like;
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
# A word then a colon at a line's start; the word is a marker if it reads as one (see _MARKER_WORDS).
# Combining marks (category Mn, the main blocks) count as part of the word: "Q\u0301:" is a marker too.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
# Up to three words, so that a task's own labels ("Problem:", "Final Answer:") are markers too.
_WORD = rf"(?:[^\W\d_][{_MARKS}]*){{1,24}}"
_LINE_START_WORD = re.compile(rf"(?m)^(\s*)([{_MARKS}]*{_WORD}(?: {_WORD}){{0,2}})(\s*)[:\ufe55\ufe13]")
_MARKER_WORDS = frozenset({"q", "a", "question", "answer", "human", "assistant", "system", "user"})
# Cyrillic and Greek letters drawn like the Latin ones of the marker words ("А:" with a Cyrillic A).
_LOOKALIKES = str.maketrans(dict(zip("АаΑαЕеΕОоΟοЅѕТΤНΗМΜΙІіУуΥрРΡсСхХԚԛωԝԜΝոՍսυ",
                                       "aaaaeeeoooosstthhmmiiiyyypppccxxqqwwwnnuuu", strict=True)))
# Zero-width (non-)joiners are kept inside words of the scripts that need them (Persian, Indic, emoji),
# and dropped next to ASCII, where they only hide a marker ("Q\u200d:").
_ZERO_WIDTH_NEAR_ASCII = re.compile(r"[\u200c\u200d]+(?=[\x00-\x7f])|(?<=[\x00-\x7f])[\u200c\u200d]+")
_ANSWER_PHRASE = re.compile(r"(?i)(the\s+)?answer\s+is\b")  # no \b before: extraction needs none
# Special-token syntaxes of common chat templates: <|...|> (OpenAI, Qwen, Llama 3), DeepSeek's full-width
# <｜...｜>, Gemma's <bos>/<start_of_turn>, Mistral's <s>/[INST], Qwen's <tool_call>/<think>.
_SPECIAL_TOKEN = re.compile(
    r"<\|[^|<>]{0,40}\|>|<\uff5c[^\uff5c<>]{0,40}\uff5c>|\[/?(?:INST|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS"
    r"|SYSTEM_PROMPT)\]|<<\s*/?SYS\s*>>|</?(?:s|bos|eos|pad|unk|start_of_turn|end_of_turn|tool_call|tool_response"
    r"|tools|think|im_start|im_end|mask|cls|sep|eot|sop|eop)>",
    re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n+")
# What str.splitlines() and many tokenizers read as a line break besides \n and \r.
_LINE_SEPARATORS = dict.fromkeys(map(ord, "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), "\n")


# Characters that draw nothing although Unicode calls them letters or symbols (fillers, the blank braille
# pattern) or that `_control` keeps (zero-width joiners): a question of only these is empty.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u200c\u200d\u034f\u17b4\u17b5\u180e\u2060\u2061\u2062\u2063\u2064")


def visible(text: str) -> bool:
    """Whether `text` shows anything: some character that is not white space, a control or format
    character, a lone combining mark or a blank letter (`_BLANK`)."""
    return any(not ch.isspace() and ch not in _BLANK and unicodedata.category(ch)[0] not in "CMZ" for ch in text)


# What a terminal acts on: escape sequences (colours, cursor moves, OSC titles and hyperlinks, whole or cut
# short) and every other C0/C1 control but line breaks and tabs.
_TERMINAL_CONTROL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_]?)"
                               r"|\x9b[0-?]*[ -/]*[@-~]?|\x9d[^\x07\x9c]*[\x07\x9c]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def for_terminal(text: str) -> str:
    """`text` as the CLI prints it: without anything a terminal would act on (ids, task names, questions
    and paths come from data and config files)."""
    return _TERMINAL_CONTROL.sub("", text)


class UnsafeInput(ValueError):
    """Text refused under --strict-input; the message lists what was found."""


@dataclass(frozen=True)
class Cleaned:
    text: str
    issues: tuple[str, ...]  # what was neutralised, for the report; empty when the text was clean


def _control(ch: str) -> bool:
    # Zero-width (non-)joiners are kept: some scripts (Persian, Indic) and emoji need them.
    return unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\t\u200c\u200d"


def marker_word(text: str) -> str:
    """A line-start word as it is compared with the markers: without combining marks, look-alike letters
    read as Latin, lower case."""
    word = "".join(ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) != "Mn")
    return word.translate(_LOOKALIKES).lower()


def label_markers(*labels: str) -> frozenset[str]:
    """A task's own completion labels ("Problem:\\n", "\\n\\nSolution:") as marker words ("problem",
    "solution"), for `sanitize(markers=...)`: a question must not forge them either. Labels not of the
    shape "word(s):" add nothing (the built-in Q:/A: markers stay)."""
    words = set()
    for label in labels:
        stripped = label.strip().rstrip(":\ufe55\ufe13").strip()
        if stripped and re.fullmatch(rf"{_WORD}(?: {_WORD}){{0,2}}", stripped):
            words.add(marker_word(stripped))
    return frozenset(words)


def sanitize(text: str, max_chars: int = DEFAULT_MAX_CHARS, strict: bool = False,
             markers: frozenset[str] = frozenset()) -> Cleaned:
    """`text` neutralised (module docstring); `markers`: a task's own label words (`label_markers`),
    defused at a line's start like Q: and A:."""
    marker_words = _MARKER_WORDS | markers

    def defuse(match: re.Match[str]) -> str:
        if marker_word(match.group(2)) not in marker_words:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{match.group(3)}\uff1a"

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
    cleaned = _ZERO_WIDTH_NEAR_ASCII.sub("", "".join(ch for ch in text if not _control(ch)))
    if cleaned != text:
        issues.append("control characters")
    text = cleaned
    if _SPECIAL_TOKEN.search(text):
        issues.append("chat special tokens")
        text = _SPECIAL_TOKEN.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›")
                                  .replace("[", "⟦").replace("]", "⟧"), text)
    defused = _LINE_START_WORD.sub(defuse, text)
    if defused != text:
        issues.append("prompt markers at line start")
        text = defused
    if _ANSWER_PHRASE.search(text):
        issues.append("answer statement")
        text = _ANSWER_PHRASE.sub(lambda m: f"{m.group(1) or ''}answer reads", text)
    if _BLANK_LINES.search(text):
        issues.append("blank lines")
        text = _BLANK_LINES.sub("\n", text)
    if strict and issues:
        raise UnsafeInput(", ".join(issues))
    return Cleaned(text.strip(), tuple(issues))
