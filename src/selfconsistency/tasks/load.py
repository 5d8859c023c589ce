"""Read a task's questions from a local file or, without one, from the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

from .base import DataError, Question, Task, read_jsonl


def load_questions(task: Task, data: Path | None, split: str | None = None,
                   offset: int = 0, limit: int | None = None) -> list[Question]:
    """Every record is validated before any is returned; ids are positions in the full file."""
    split = split or task.default_split
    if data is not None:
        questions = task.questions(read_jsonl(Path(data)), split)
    else:
        questions = task.questions(_hub_records(task, split), split)
    end = None if limit is None else offset + limit
    selected = questions[offset:end]
    if not selected:
        raise DataError(f"offset {offset} is past the {len(questions)} questions of {task.name}")
    return selected


def _hub_records(task: Task, split: str):
    if task.hub_dataset is None:
        raise DataError(f"task {task.name} has no hub dataset: pass --data PATH")
    repo, config = task.hub_dataset
    try:
        import datasets  # optional extra: selfconsistency[hub]
        import huggingface_hub

        # Their retry warnings would bury our one-line error.
        datasets.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()
        rows = datasets.load_dataset(repo, config, split=split)
    except ImportError:
        raise DataError(f"loading {repo} needs 'pip install selfconsistency[hub]'; "
                        "or pass --data PATH to a local JSONL file") from None
    except Exception as exc:  # offline, unknown split, hub errors: all end the same way
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not load {repo} ({config}, {split}) from the Hugging Face hub "
                        f"({reason}); pass --data PATH to a local JSONL file") from None
    return ((f"{repo}[{split}] row {i}", dict(row)) for i, row in enumerate(rows))
