"""When a path's answer statement is complete ("The answer is 72." and one character more), so that the
embedded backend can end the path there instead of generating past it (finish reason "answer").

The condition is a regular expression built from the task's own answer statement: its text before
`{answer}`, an answer of the task's type, its text after, then one character that cannot continue the
answer (a number's "72." could still become "72.5", so the statement is complete only once a non-digit
follows). The text kept ends with the statement; the character after it is dropped, like a stop string.
Pure: no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .tasks.answer_types import answer_type

# The statement ends here: not a digit (a number could go on), and present (not the text's end yet).
_COMPLETE_AFTER = r"(?=[^\d])"


def answer_complete_pattern(answer_statement: str, kind: str, thinking: tuple[str, str] | None = None) -> str | None:
    """The completion condition for a task's answer statement (e.g. "The answer is {answer}."), or None
    when its answer type has no fixed shape (free and pattern-extracted text) or nothing follows the
    answer in the statement (then nothing marks where the answer ends). A type that declares its complete
    answer itself (math: a closed `\\boxed{...}`) needs no statement. With `thinking` tags, an answer
    inside a thinking block does not count (the tags travel in the pattern, as a comment)."""
    declared = answer_type(kind)
    pattern = declared.complete
    if pattern is None:
        shape = declared.shape
        prefix, _, suffix = answer_statement.partition("{answer}")
        if shape is None or not suffix.strip() or not prefix.strip():
            return None
        pattern = (r"(?i)" + re.escape(prefix.strip()) + r"\s*" + shape + re.escape(suffix.rstrip())
                   + _COMPLETE_AFTER)
    return f"(?#thinking {thinking[0]} {thinking[1]})" + pattern if thinking else pattern


_THINKING = re.compile(r"\(\?#thinking ([^\s)]+) ([^\s)]+)\)")


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> tuple[re.Pattern[str], tuple[str, str] | None]:
    tags = _THINKING.match(pattern)
    return re.compile(pattern), (tags[1], tags[2]) if tags else None


def complete_end(text: str, pattern: str) -> int | None:
    """Where the first complete answer statement in `text` ends (outside thinking blocks), or None."""
    compiled, tags = _compiled(pattern)
    start = 0
    if tags:
        last_open, last_close = text.rfind(tags[0]), text.rfind(tags[1])
        if last_open > last_close:
            return None  # still thinking
        start = last_close + len(tags[1]) if last_close >= 0 else 0
    match = compiled.search(text, start)
    return match.end() if match else None
