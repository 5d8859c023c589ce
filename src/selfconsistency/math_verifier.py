"""Whether two written math answers are the same answer, decided by math-verify (Hugging Face) within a
time limit and a size limit, from any thread.

math-verify's own time limit is `signal.alarm`: it works in the main thread only (the server answers in
worker threads) and cannot stop a computation stuck in C (a power tower's big integers). So by default
the parsing and comparing run in a worker process (`python -m selfconsistency.math_verifier`) with a
memory limit, which gets `SECONDS` per parse and per comparison (a timer inside it) and is killed and
restarted if it has not answered `KILL_AFTER` seconds later. Before any parse, a written form is checked
against the size limits (`math_answers.beyond_size`). A form beyond a limit is not `usable`: it counts as
its own string. A comparison beyond a limit is not the same (`Verdict.limit`). `InProcess` does the same
work in this process, with the timer only in the main thread: for tests and tools.

Each answer is parsed as `$answer$`, both sides with math-verify's default extraction (LaTeX, then plain
expressions), and compared with `verify(gold, target)` at its defaults (6-digit float rounding, strict).
"""

from __future__ import annotations

import atexit
import json
import logging
import select
import signal
import subprocess
import sys
import threading
from enum import StrEnum
from typing import Any, Protocol

from .math_answers import beyond_size

SECONDS = 5.0  # per parse and per comparison
KILL_AFTER = 3.0  # more seconds before a silent worker is killed
IMPORT_SECONDS = 30.0  # a new worker imports sympy and math-verify before its first answer
WORKER_MEMORY_BYTES = 2 << 30


class Verdict(StrEnum):
    same = "same"
    different = "different"
    limit = "limit"  # ran past a time or memory limit: counted, and not the same


class Verifier(Protocol):
    def usable(self, form: str) -> bool: ...

    def compare(self, gold: str, answer: str) -> Verdict: ...


class _Limit(BaseException):
    """The timer fired (a BaseException: math-verify and sympy catch Exception)."""


class _Errors(logging.Handler):
    """The exceptions math-verify logs and swallows: memory and recursion errors are limits, not answers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.limit_hit = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], MemoryError | RecursionError):
            self.limit_hit = True


class InProcess:
    """math-verify called in this process; the time limit holds in the main thread only."""

    def __init__(self, seconds: float = SECONDS):
        import math_verify

        self.seconds = seconds
        self._mv = math_verify
        self._parsed: dict[str, Any] = {}
        self._errors = _Errors()
        for name in ("math_verify", "latex2sympy2_extended"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # its warnings ("Timeout is disabled") are ours to report
            if self._errors not in logger.handlers:
                logger.addHandler(self._errors)

    def _limited(self, function, *args, **kwargs):
        """`function(*args, **kwargs)`, or _Limit past the time limit or on a swallowed memory/recursion error."""
        self._errors.limit_hit = False
        timed = threading.current_thread() is threading.main_thread()
        if timed:
            def expire(signum, frame):
                raise _Limit()
            previous = signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            result = function(*args, **kwargs)
        except (MemoryError, RecursionError):
            raise _Limit() from None
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        if self._errors.limit_hit:
            raise _Limit()
        return result

    def _parse(self, form: str) -> Any:
        if form not in self._parsed:
            self._parsed[form] = self._limited(self._mv.parse, f"${form}$", parsing_timeout=None)
        return self._parsed[form]

    def usable(self, form: str) -> bool:
        if beyond_size(form):
            return False
        try:
            self._parse(form)
        except _Limit:
            return False
        return True

    def compare(self, gold: str, answer: str) -> Verdict:
        if not (self.usable(gold) and self.usable(answer)):
            return Verdict.limit
        try:
            same = self._limited(self._mv.verify, self._parsed[gold], self._parsed[answer], timeout_seconds=None)
        except _Limit:
            return Verdict.limit
        return Verdict.same if same else Verdict.different


class Isolated:
    """math-verify in a worker process with hard limits; thread-safe (one request at a time)."""

    def __init__(self, seconds: float = SECONDS, kill_after: float = KILL_AFTER):
        self.seconds, self.kill_after = seconds, kill_after
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._usable: dict[str, bool] = {}
        self._ready = False  # the worker has answered once (its imports are done)
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "selfconsistency.math_verifier", str(self.seconds)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace")

    def _ask(self, request: dict[str, str]) -> dict[str, Any] | None:
        """The worker's reply, or None when it gave none in time (it is killed; the next ask restarts it)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc, self._ready = self._start(), False
            proc = self._proc
            # a comparison may parse both sides again (a restarted worker); a new worker imports first
            wait = 3 * self.seconds + self.kill_after + (0.0 if self._ready else IMPORT_SECONDS)
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], wait)
                line = proc.stdout.readline() if ready else ""
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                self._stop(proc)
                self.restarts += 1
                return None
            self._ready = True
            return json.loads(line)

    def _stop(self, proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self._proc is proc:
            self._proc = None

    def usable(self, form: str) -> bool:
        if form not in self._usable:
            reply = None if beyond_size(form) else self._ask({"op": "parse", "form": form})
            self._usable[form] = bool(reply and reply.get("ok"))
        return self._usable[form]

    def compare(self, gold: str, answer: str) -> Verdict:
        if not (self.usable(gold) and self.usable(answer)):
            return Verdict.limit
        reply = self._ask({"op": "compare", "gold": gold, "answer": answer})
        return Verdict(reply["verdict"]) if reply else Verdict.limit

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._stop(self._proc)


_default: Verifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> Verifier:
    """The process's shared verifier (a worker process, started at the first comparison)."""
    global _default
    with _default_lock:
        if _default is None:
            isolated = Isolated()
            atexit.register(isolated.close)
            _default = isolated
        return _default


def use_verifier(verifier: Verifier | None) -> Verifier | None:
    """Make `verifier` the shared one (None: a worker process again); returns the one it replaces."""
    global _default
    with _default_lock:
        previous, _default = _default, verifier
    return previous


def _serve(seconds: float) -> None:
    """The worker: one JSON request per line on stdin, one reply per line on stdout."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    verifier = InProcess(seconds)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "parse":
            reply: dict[str, Any] = {"ok": verifier.usable(request["form"])}
        else:
            reply = {"verdict": verifier.compare(request["gold"], request["answer"]).value}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(float(sys.argv[1]) if len(sys.argv) > 1 else SECONDS)
