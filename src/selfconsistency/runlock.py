"""One run at a time per run directory: an exclusive lock held for the length of a run.

Two processes on one directory would both generate every missing path (billed twice on a paid backend,
and neither's --max-cost sees the other's spend). The lock is `flock` on `run.lock` in the directory: the
kernel releases it when the holder exits, however it exits, so a killed run never leaves it stuck. The
file says who holds it, for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class RunDirError(Exception):
    """The run directory cannot be used: not a directory, not writable, or in use."""


class RunLocked(RunDirError):
    """Another process is running in this run directory."""


def _check_writable(run_dir: Path) -> None:
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"run directory {run_dir} is not writable; 'report' and 'export' read it as it is")


def check_usable_run_dir(run_dir: Path) -> None:
    """What prepare_run_dir refuses of a directory that exists, without changing anything (RunDirError): a
    file, a directory it cannot write, one with files but no run marker, a marker that is not a file.
    `run --dry-run` and `--show-prompt` refuse through it too, in the run's words."""
    from .safe_files import RUN_MARKER
    from .safe_files import check_run_dir as check_marked

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} is a file, not a directory")
    if not run_dir.exists():
        return
    _check_writable(run_dir)
    if (run_dir / RUN_MARKER).exists() or (run_dir / RUN_MARKER).is_symlink():
        check_marked(run_dir)
    elif any(run_dir.iterdir()):
        raise RunDirError(f"--run-dir {run_dir} holds files but is not a run directory (no {RUN_MARKER}); "
                          "give a new or empty directory")


def prepare_run_dir(run_dir: Path) -> None:
    """A new or empty directory becomes a run directory (it gets the run marker); one that has the marker is
    a run to resume. Any other directory is refused: the run would write its results among its files."""
    from .safe_files import RUN_MARKER, open_no_follow

    run_dir = Path(run_dir)
    check_usable_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    _check_writable(run_dir)  # again: a directory just made under a umask that bars its owner
    if (run_dir / RUN_MARKER).exists() or (run_dir / RUN_MARKER).is_symlink():
        return
    with open_no_follow(run_dir / RUN_MARKER, "w", encoding="utf-8") as marker:
        marker.write("A selfconsistency run directory: samples.sqlite holds its paths.\n")


def _holder(handle) -> str:
    try:
        handle.seek(0)
        info = json.loads(handle.read() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["started"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return "another process"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    path = Path(run_dir) / LOCK_FILE
    try:
        from .safe_files import open_no_follow  # safe_files builds on this module's RunDirError

        handle = open_no_follow(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise RunDirError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is in use by {_holder(handle)}: wait for that run to end, or use "
                            "another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
