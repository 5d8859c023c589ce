"""Work done in a forked child process while this one goes on: `write_report` builds report.html (most
of its bytes are the run's paths, a second or two) on the second core while it computes the curves."""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any


def can_fork() -> bool:
    """Whether a child can be forked safely: Linux, and no other thread whose locks the child would copy
    mid-state (a test's loopback server, a backend's pool)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


class Forked:
    """`prepare()` starts at once in a forked child; `finish(*args)` hands `args` to it, where
    `complete(prepare's result, *args)` runs, and returns what that returned, raising the exception
    either raised (the same type and message, the child's traceback as a note). Without a safe fork, both
    run in this process during `finish`. Leaving the `with` block before `finish` stops the child."""

    def __init__(self, prepare: Callable[[], Any], complete: Callable[..., None], fork: bool | None = None):
        self._prepare, self._complete = prepare, complete
        self._process = None
        if can_fork() if fork is None else fork:
            context = multiprocessing.get_context("fork")
            self._connection, child_end = context.Pipe()
            self._process = context.Process(target=_child, args=(prepare, complete, child_end), daemon=True)
            self._process.start()
            child_end.close()

    def finish(self, *args: Any) -> Any:
        if self._process is None:
            return self._complete(self._prepare(), *args)
        try:
            self._connection.send(args)
        except OSError:  # the child has stopped: what it sent says why
            pass
        try:
            outcome = self._connection.recv()
        except (EOFError, OSError):  # it stopped without a word
            self._process.join()
            outcome = (False, RuntimeError(f"a forked child process stopped (exit code {self._process.exitcode})"))
        self._process.join(5)  # it has answered: let it exit on its own
        self._stop()
        done, value = outcome
        if not done:
            raise value
        return value

    def _stop(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.terminate()  # SIGTERM: its partial file is removed on the way out
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
        self._process.join()
        self._connection.close()
        self._process = None

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop()


def _exit_on_terminate(signum: int, frame: Any) -> None:
    raise SystemExit(1)  # unwinds, so `finally` blocks (a partial file's removal) run


def _child(prepare: Callable[[], Any], complete: Callable[..., None], connection: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent too: it stops this process
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    try:
        prepared = prepare()
        args = connection.recv()
        outcome = (True, complete(prepared, *args))
    except (EOFError, SystemExit):  # the parent is gone or stopped this process: nothing more to do
        return
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        exc.add_note("in the child process:\n" + "".join(traceback.format_exception(exc)).rstrip())
        outcome = (False, exc)
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - an exception that does not survive pickling: its text does
            outcome = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    try:
        connection.send(outcome)
    except OSError:  # the parent is gone
        pass


def forked_map(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """`list(map(function, items))` with the first item's call in a forked child, the others here
    meanwhile: two cores for two halves of a computation."""
    if len(items) < 2 or not can_fork():
        return [function(item) for item in items]
    with Forked(partial(function, items[0]), _returned, fork=True) as first:
        rest = [function(item) for item in items[1:]]
        return [first.finish(), *rest]


def _returned(value: Any) -> Any:
    return value
