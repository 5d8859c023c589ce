"""forked.Forked and safe_files.replace_file: what `write_report` relies on to write report.html in a child
process: the child's errors reach the caller as the same exception, and an interrupted or failed write
leaves the old file, never half of a new one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfconsistency.forked import Forked, can_fork
from selfconsistency.safe_files import UnsafeRunFile, replace_file

# These tests fork explicitly (fork=True); other threads of the test session do not matter to them.
needs_fork = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forking is used on Linux only")


def _parts_then_fail(first: bytes):
    yield first
    raise OSError(28, "No space left on device")


def test_replace_file_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "report.html"
    target.write_bytes(b"old page")
    with pytest.raises(OSError, match="No space left"):
        replace_file(target, _parts_then_fail(b"half of a new page"))
    assert target.read_bytes() == b"old page"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no partial file left behind
    replace_file(target, [b"new ", b"page"])
    assert target.read_bytes() == b"new page" and len(list(tmp_path.iterdir())) == 1


def test_replace_file_copies_a_staged_file_part_whole(tmp_path):
    """report.html's data is staged in a file while the results are computed and copied in between the
    rendered parts: by the kernel from a real file, through Python from anything else, from its start
    whatever its position."""
    import io
    import tempfile

    data = os.urandom(3 << 20)
    target = tmp_path / "report.html"
    with tempfile.TemporaryFile(dir=tmp_path) as staged:
        staged.write(data)
        replace_file(target, [b"<head>", staged, b"</tail>"])
    assert target.read_bytes() == b"<head>" + data + b"</tail>"
    replace_file(target, [b"<", io.BytesIO(b"no file behind it"), b">", io.BytesIO(b"")])
    assert target.read_bytes() == b"<no file behind it>"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_replace_file_refuses_a_symlink_and_a_directory(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "report.html").symlink_to(victim)
    with pytest.raises(UnsafeRunFile, match="report.html is a symlink"):
        replace_file(tmp_path / "report.html", [b"page"])
    (tmp_path / "other.html").mkdir()
    with pytest.raises(UnsafeRunFile, match="other.html is not a regular file"):
        replace_file(tmp_path / "other.html", [b"page"])
    assert victim.read_text() == "precious\n" and (tmp_path / "report.html").is_symlink()


def _pid_and(value):
    return os.getpid(), value


@needs_fork
def test_the_child_prepares_in_another_process_and_completes_with_the_parents_arguments(tmp_path):
    out = tmp_path / "out.txt"

    def complete(prepared, suffix):
        child_pid, value = prepared
        out.write_text(f"{child_pid} {os.getpid()} {value}{suffix}")

    with Forked(lambda: _pid_and("prepared"), complete, fork=True) as job:
        job.finish("+finished")
    prepare_pid, complete_pid, text = out.read_text().split()
    assert prepare_pid == complete_pid != str(os.getpid()) and text == "prepared+finished"


@needs_fork
def test_an_error_in_the_child_is_raised_in_the_parent_with_its_type_and_message():
    def prepare():
        raise UnsafeRunFile("/run/report.html is a symlink; the tool does not write through links")

    with Forked(prepare, lambda prepared: None, fork=True) as job, \
            pytest.raises(UnsafeRunFile, match="report.html is a symlink") as raised:
        job.finish()
    assert str(raised.value) == "/run/report.html is a symlink; the tool does not write through links"
    assert any("in the child process" in note for note in raised.value.__notes__)


class _Unpicklable(ValueError):
    def __init__(self, message, extra):
        super().__init__(message)
        self.extra = extra

    def __reduce__(self):
        raise TypeError("cannot pickle")


@needs_fork
def test_an_exception_that_cannot_travel_arrives_as_its_text():
    def complete(prepared):
        raise _Unpicklable("bad page", object())

    with Forked(lambda: None, complete, fork=True) as job, pytest.raises(RuntimeError, match="_Unpicklable: bad page"):
        job.finish()


@needs_fork
def test_a_child_that_dies_is_an_error_not_a_hang():
    with Forked(lambda: os._exit(3), lambda prepared: None, fork=True) as job, \
            pytest.raises(RuntimeError, match=r"child process stopped \(exit code 3\)"):
        job.finish()


def _slow_parts(started: Path):
    yield b"half of a new page"
    started.touch()
    time.sleep(60)
    yield b"the rest"


@needs_fork
def test_ctrl_c_in_the_parent_stops_the_child_and_leaves_the_old_file(tmp_path):
    target, started = tmp_path / "report.html", tmp_path / "started"
    target.write_bytes(b"old page")

    def interrupt(signum, frame):
        if started.exists():  # Ctrl-C once the child is writing (looked at every 20 ms), once
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            with Forked(lambda: None, lambda prepared: replace_file(target, _slow_parts(started)),
                        fork=True) as job:
                signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
                job.finish()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert started.exists()  # the child had begun its file, and was stopped in the middle
    assert time.monotonic() - began < 30
    assert target.read_bytes() == b"old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "started"]


def test_without_fork_both_steps_run_here_at_finish():
    calls = []
    with Forked(lambda: calls.append(("prepare", os.getpid())) or "prepared",
                lambda prepared, arg: calls.append((prepared, arg)), fork=False) as job:
        assert calls == []
        job.finish("arg")
    assert calls == [("prepare", os.getpid()), ("prepared", "arg")]


REPORT_FILES = ("results.json", "results.md", "accuracy_vs_paths.png", "report.html")


@pytest.mark.slow  # a fresh interpreter: write_report forks only where no other thread runs
@needs_fork
def test_the_report_forked_and_in_one_process_writes_the_same_bytes(tmp_path):
    # write_report forks only when no other thread runs: a fresh interpreter, not this test session
    proc = subprocess.run([sys.executable, "-c", "import sys, test_forked; test_forked.report_both_ways(sys.argv[1])",
                           str(tmp_path)], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "same bytes"


def report_both_ways(run_dir: str) -> None:
    import threading

    from conftest import GSM8K_TEST, ScriptedBackend
    from selfconsistency.backends import register_backend
    from selfconsistency.experiment import run_experiment
    from selfconsistency.report import write_report
    from selfconsistency.settings import RunSettings

    register_backend("scripted", lambda config: ScriptedBackend(config.model))
    tmp_path = Path(run_dir)
    # two temperatures and log-probs: the curves of majority and weighted votes, in halves when forked
    run_experiment(RunSettings(data=str(GSM8K_TEST), limit=6, backend="scripted", model="scripted-model", paths=5,
                             temperatures=(0.5, 0.7), subset_runs=5), tmp_path)
    assert can_fork()
    children_cpu = sum(os.times()[2:4])
    results = write_report(tmp_path)
    assert sum(os.times()[2:4]) > children_cpu  # children did part of the work, and were waited for
    assert results["sampled"][0]["weighted_votes"]
    forked = {name: (tmp_path / name).read_bytes() for name in REPORT_FILES}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()  # another thread running: no fork, all in this process
    try:
        assert not can_fork()
        write_report(tmp_path)
    finally:
        stop.set()
        other.join()
    assert {name: (tmp_path / name).read_bytes() for name in REPORT_FILES} == forked
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    print("same bytes")
