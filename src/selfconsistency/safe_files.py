"""Writing files inside a run directory without following symlinks; reading an input file bounded.

A run directory may be shared or unpacked from someone else's archive: a `results.md` that is a symlink to
`~/.bashrc` must not make `report` overwrite it. Every file the tool writes there is opened with
O_NOFOLLOW, so a symlink in its place is an error, never a redirect.

Every file an option names (data, task config, exemplars, price table, another tool's log) is read by
`read_regular_file`: a regular file of at most so many bytes, never a device (`/dev/zero` reads for ever), a
FIFO (blocks for ever) or a directory.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from .runlock import RunDirError

# The file that makes a directory a run directory: the tool writes results, reports and frontiers only
# into a directory that has it (a run made it there), never into any directory a --run-dir points at.
RUN_MARKER = ".selfconsistency-run"


class UnsafeRunFile(RunDirError, ValueError):
    """A file the tool would write in a run directory is a symlink, not a regular file, or the directory
    is not a run directory."""


class UnreadableFile(ValueError):
    """An input file that is not a regular file, is too large, or cannot be read; the message names it."""


def read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit` of them; UnreadableFile otherwise (`/dev/zero`, a FIFO, a
    directory would read for ever, block, or fail mid-way). `what` names the file's role: "a data file"."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableFile(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(f"{path}: is not a regular file (a device, a pipe or a socket), not {what}")
    if info.st_size > limit:
        raise UnreadableFile(f"{path}: {info.st_size:,} bytes, more than {what} may hold ({limit:,})")
    try:  # O_NONBLOCK: a FIFO put in its place since the stat must not hang the open; checked again below
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UnreadableFile(f"{path}: is not a regular file (a device, a pipe or a socket), not {what}")
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > limit:  # it grew while read
        raise UnreadableFile(f"{path}: more than {what} may hold ({limit:,} bytes)")
    return data


def check_run_dir(run_dir: Path) -> None:
    """UnsafeRunFile unless `run_dir` holds the run marker (a regular file): only then does the tool write
    its outputs there."""
    marker = Path(run_dir) / RUN_MARKER
    try:
        mode = os.lstat(marker).st_mode
    except FileNotFoundError:
        raise UnsafeRunFile(f"{run_dir} is not a run directory (it has no {RUN_MARKER}): the tool writes "
                            "outputs only where a run made its directory") from None
    if not stat.S_ISREG(mode):
        raise UnsafeRunFile(f"{marker} is not a regular file (remove it)")


def refuse_symlink(path: Path) -> None:
    if Path(path).is_symlink():
        raise UnsafeRunFile(f"{path} is a symlink; the tool does not write through links in a run directory "
                            "(remove it)")


def open_no_follow(path: Path, mode: str = "w", **options: Any) -> IO[Any]:
    """`open(path, mode)` for "w", "a", "a+" (text or binary) that refuses a symlink at `path`."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode.replace("b", "")]
    try:  # O_NONBLOCK: a FIFO in the file's place must not hang the open until some reader comes
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRunFile(f"{path} is a symlink; the tool does not write through links in a run "
                                "directory (remove it)") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise _not_regular(path) from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO, a device: writes would block or go elsewhere
        os.close(descriptor)
        raise _not_regular(path)
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, mode, **options)


def _not_regular(path: Path) -> UnsafeRunFile:
    return UnsafeRunFile(f"{path} is not a regular file; the tool writes only regular files in a run directory "
                         "(remove it)")


def write_text(path: Path, text: str) -> None:
    with open_no_follow(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with open_no_follow(path, "wb") as handle:
        handle.write(data)


def save_figure(figure: Any, path: Path, dpi: int = 120) -> None:
    """A matplotlib figure as PNG at `path`: drawn in memory first, since savefig follows links."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())


def replace_file(path: Path, parts: Iterable[bytes | IO[bytes]]) -> None:
    """`parts` written to a new file beside `path`, then renamed over it: a crash or Ctrl-C midway leaves
    the old file (or none), never half of the new one. A part that is a file is copied whole from its
    start (in the kernel where it can: report.html's 150 MB of data staged ahead of the rest). A symlink or
    other non-regular file at `path` is refused, as `open_no_follow` refuses it."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        refuse_symlink(path)
        if not stat.S_ISREG(mode):
            raise _not_regular(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open_no_follow(temporary, "wb") as handle:
            for part in parts:
                if isinstance(part, bytes):
                    handle.write(part)
                else:
                    handle.flush()
                    _copy_whole(part, handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _copy_whole(source: IO[bytes], target: IO[bytes]) -> None:
    """`source` from its start to its end appended to `target` (flushed), by copy_file_range where the
    kernel offers it, else through this process."""
    copied = 0
    try:
        size = os.fstat(source.fileno()).st_size
        while copied < size:
            step = os.copy_file_range(source.fileno(), target.fileno(), size - copied, copied)
            if step == 0:
                break
            copied += step
    except (AttributeError, OSError):  # no such call, not between these files, or no file: copy the rest
        source.seek(copied)
        target.seek(0, os.SEEK_END)
        shutil.copyfileobj(source, target, 1 << 20)
    target.seek(0, os.SEEK_END)  # the buffered handle learns where the kernel left the file
