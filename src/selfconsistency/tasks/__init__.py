"""Tasks: where questions and gold answers come from, and how a path's answer is read."""

from .base import DataError, Question, Task
from .gsm8k import GSM8K

TASKS: dict[str, Task] = {GSM8K.name: GSM8K}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


__all__ = ["DataError", "GSM8K", "Question", "TASKS", "Task", "get_task"]
