"""The one guard for files the tool writes where the user points it (`-o`), and for run directories.

Nothing the tool writes may destroy one of its own inputs. Before any work, an `-o` path is refused when
it resolves to an input of the run (the data file, the task config, its exemplars file, the run's store and
its side files, audit log, lock and marker: by name, through links, or as the same file under another name),
when it is a directory, a device or any other non-regular file, or when its directory is missing or not
writable. Files a run writes into its own directory (results, report, frontier) go only into a directory
marked as a run (`safe_files.RUN_MARKER`), through `safe_files` (no links followed). Every refusal is a
`RefusedOutput` (one line for the CLI).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from .audit import AUDIT_FILE
from .runlock import LOCK_FILE
from .safe_files import RUN_MARKER
from .store import SIDE_FILES, STORE_FILENAME


class RefusedOutput(ValueError):
    """A file the user asked the tool to write that it must not (or cannot) write."""


def run_inputs(run_dir: Path, task_files: Mapping[Path, str] | None = None) -> dict[Path, str]:
    """What a run reads or keeps, by path, with what to call it in a refusal: the run directory's own files
    and its task's (`Task.input_files`: data, config, exemplars)."""
    run_dir = Path(run_dir)
    inputs = {run_dir / STORE_FILENAME: f"the sample store of {run_dir}"}
    inputs.update({run_dir / name: f"a file of the sample store of {run_dir}" for name in SIDE_FILES})
    inputs.update({run_dir / AUDIT_FILE: f"the audit log of {run_dir}", run_dir / LOCK_FILE: f"the lock of {run_dir}",
                   run_dir / RUN_MARKER: f"the run marker of {run_dir}"})
    inputs.update(task_files or {})
    return inputs


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, or another name through a bind mount
    except OSError:
        return False


def check_output(path: Path, inputs: Mapping[Path, str], flag: str = "-o") -> Path:
    """`path`, if the tool may write it there (see the module); else RefusedOutput naming why."""
    path = Path(path)
    for known, what in inputs.items():
        if _same(path, Path(known)):
            raise RefusedOutput(f"{flag} {path} is {what}: writing there would destroy it; choose another file")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise RefusedOutput(f"{flag} {path}: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise RefusedOutput(f"{flag} {path} is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise RefusedOutput(f"{flag} {path} is not a regular file (a device, a pipe or a socket); give a file name")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise RefusedOutput(f"{flag} {path}: directory {path.parent} does not exist")
    if not os.access(path if mode is not None else parent, os.W_OK):
        raise RefusedOutput(f"{flag} {path} is not writable")
    return path


def open_output(path: Path) -> IO[str]:
    """A checked `-o` path opened for writing text; RefusedOutput if the system refuses it after all."""
    try:
        return Path(path).open("w", encoding="utf-8")
    except OSError as exc:
        raise RefusedOutput(f"cannot write {path}: {exc.strerror or exc}") from None


def write_lines(path: Path, lines) -> None:
    """`lines` into a checked `-o` path; a file system's refusal midway (a full disk) is a RefusedOutput."""
    try:
        with open_output(path) as handle:
            handle.writelines(lines)
    except OSError as exc:
        raise RefusedOutput(f"cannot write {path}: {exc.strerror or exc}") from None
