"""Tasks: where questions and gold answers come from, and how a path's answer is read.

Every task, built-in or not, is a config file (YAML or TOML); the built-in ones are in
`selfconsistency/data/tasks/`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from .base import DataError, Exemplar, Question
from .spec import TaskSpec, load_spec
from .task import Task, TaskData


def builtin_task_files() -> dict[str, Path]:
    folder = Path(str(files("selfconsistency").joinpath("data/tasks")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def get_task(name_or_path: str, **options: Any) -> Task:
    """A built-in task by name, or a task config file by path; `options` go to Task (input limits)."""
    builtin = builtin_task_files()
    if name_or_path in builtin:
        return Task(*load_spec(builtin[name_or_path]), **options)
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml", ".toml"):
        if not path.exists():  # a directory, a FIFO or a device: load_spec says which, never reads it
            raise DataError(f"task config file {name_or_path} not found")
        task = Task(*load_spec(path), **options)
        task.config_file = path
        return task
    raise DataError(f"unknown task {name_or_path!r}: give a task config file (.yaml/.toml) or one of "
                    f"{', '.join(builtin)}")


__all__ = ["DataError", "Exemplar", "Question", "Task", "TaskData", "TaskSpec", "builtin_task_files",
           "get_task", "load_spec"]
