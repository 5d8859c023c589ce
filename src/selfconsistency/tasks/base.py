"""The values every task produces: questions with gold answers, and exemplars."""

from __future__ import annotations

from dataclasses import dataclass

# A record's key for the chat turns before its question (the server's chat requests: a system message,
# earlier user/assistant turns): [{"role": ..., "content": ...}, ...]. They reach chat-format prompts only.
CHAT_CONTEXT = "chat_context"
CONTEXT_ROLES = ("system", "user", "assistant")


class DataError(Exception):
    """Unusable input data or task config; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    id: str
    position: int  # in the full data file; ids stay the same whatever --offset/--limit select
    text: str  # the question as the prompt shows it (the task's template rendered)
    gold: str | None  # canonical, comparable with extracted answers; None: unlabelled, a question to answer
    choices: tuple[tuple[str, str], ...] = ()  # (label, text) for multiple choice
    n_answers: int = 1  # how many labels the gold has ("choose two": 2)
    context: tuple[tuple[str, str], ...] = ()  # (role, text) chat turns before the question (CHAT_CONTEXT)
    groups: tuple[tuple[str, str], ...] = ()  # (field, value) of the task's `fields.groups` (subject, level)


@dataclass(frozen=True)
class Exemplar:
    question: str  # rendered like a Question's text
    rationale: str  # ends with the task's answer statement, e.g. "The answer is 6."


@dataclass(frozen=True)
class CompletionLabels:
    """How the completion format marks a question and its answer: `question` + the question + `answer`,
    then (in an exemplar) `separator` + the rationale."""

    question: str = "Q: "
    answer: str = "\nA:"
    separator: str = " "
