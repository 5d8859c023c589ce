"""Prompts: the task's exemplars as a few-shot completion prompt or as chat turns.

Every prompt is `shared + question`: `shared` (the exemplar block) is the same for every question, so a
backend that caches it evaluates it once; it always ends on a turn boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .tasks.base import CompletionLabels, Exemplar

ZERO_SHOT_TRIGGER = "Let's think step by step."


class PromptFormat(StrEnum):
    completion = "completion"  # "Q: ...\nA: ... The answer is N.\n\n" (Wei et al. 2022)
    chat = "chat"  # the same exemplars as user/assistant turns


DEFAULT_LABELS = CompletionLabels()


@dataclass(frozen=True)
class Prompt:
    shared: str  # completion format: text every question's prompt starts with
    question: str  # completion format: the rest
    messages: tuple[tuple[str, str], ...]  # chat format: (role, content) turns
    format: PromptFormat
    has_context: bool = False  # chat turns before the question (a system message, earlier turns) are in `messages`

    @property
    def text(self) -> str:
        return self.shared + self.question

    @property
    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def build_prompt(question: str, exemplars: tuple[Exemplar, ...], fmt: PromptFormat,
                 zero_shot: bool = False, answer_statement: str = "The answer is N.",
                 context: tuple[tuple[str, str], ...] = (), *, instruction: str | None = None,
                 labels: CompletionLabels = DEFAULT_LABELS) -> Prompt:
    """`question` is the task's rendered question; without exemplars the prompt is zero-shot CoT, whose
    instruction is 'End with "<answer_statement>"' unless the answer type gives its own `instruction`.

    `context`, chat turns before the question (a system message first, earlier user/assistant turns),
    goes into chat turns only: the system message first, the earlier turns after the exemplars, just
    before the question. A completion prompt has no place for them (the caller refuses them)."""
    zero_shot = zero_shot or not exemplars
    shots = () if zero_shot else exemplars
    shared = "".join(f"{labels.question}{e.question}{labels.answer}{labels.separator}{e.rationale}\n\n"
                     for e in shots)
    answer_prefix = f"{labels.answer} {ZERO_SHOT_TRIGGER}" if zero_shot else labels.answer
    messages: list[tuple[str, str]] = [turn for turn in context if turn[0] == "system"]
    for e in shots:
        messages += [("user", e.question), ("assistant", e.rationale)]
    user_turn = question
    if zero_shot and answer_statement:  # "": a free-form answer (the chat turn is the question alone)
        told = instruction or f"End with \"{answer_statement}\""
        user_turn += f"\n\n{ZERO_SHOT_TRIGGER} {told}"
        # Without exemplars nothing shows the completion model where a path ends or how it states the answer.
        question += f"\n{told}"
    messages += [turn for turn in context if turn[0] != "system"]
    messages.append(("user", user_turn))
    return Prompt(shared=shared, question=f"{labels.question}{question}{answer_prefix}",
                  messages=tuple(messages), format=fmt, has_context=bool(context))


def completion_text(prompt: Prompt) -> str:
    """The prompt as one text, for APIs that take text only. A chat question's earlier turns and system
    message have no place in it: refused, never dropped."""
    if prompt.has_context:
        raise ValueError("this model takes one text prompt, which has no place for a system message or earlier "
                         "turns: send the question alone, or use a model that takes chat messages")
    return prompt.text
