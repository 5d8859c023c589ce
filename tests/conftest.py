"""What the tests share, and the guards that keep `pytest -m "not model and not slow"` (the inner loop) fast.

Markers: `model` marks a test that loads an embedded model; `slow` one that starts a process (the
installed command, llama.cpp's server, a browser, a fresh interpreter) or waits out seconds that cannot
be made smaller.

The rule, enforced by process_marker_guard: a test marked neither starts no process. It runs no program
(subprocess, os.system, posix_spawn, exec) and forks nothing itself; the only fork allowed is the
product's own (selfconsistency.forked, with which write_report uses a second core): a copy of this
process that starts nothing new. Loopback servers in threads of this process (the emulators, moto,
uvicorn, the OpenAI stubs) are allowed: they cost no start-up, and the time constants a test would wait
on (emulator steps, poll intervals, deadlines, retry delays) are set to milliseconds. model_marker_guard
keeps embedded models out of unmarked tests the same way.

`run_cli` runs the CLI in this process (typer's runner); `cli` runs the installed command as a user
does, for tests about processes, signals or the entry point (marked slow).
"""

import atexit
import collections
import contextlib
import io
import json
import logging
import multiprocessing.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def _import_cli_as_a_process_would() -> None:
    """selfconsistency.cli's rich consoles decide colour (is stderr a terminal?) and width (COLUMNS) when
    they are made, at import: import it now with neither, as in a process whose output is captured, so
    that run_cli's output is the same under `pytest -s` in a terminal."""
    columns = os.environ.pop("COLUMNS", None)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import selfconsistency.cli  # noqa: F401
    finally:
        if columns is not None:
            os.environ["COLUMNS"] = columns


_import_cli_as_a_process_would()


def _ask_the_machine_once() -> None:
    """Libraries run a program once per process to learn about the machine: platform's `uname -p` (the
    openai client's headers) and trio's `ldconfig -p` at import (httpcore imports trio where it is
    installed). Asked here, at start-up, so that process_marker_guard does not blame the first test to
    make a client."""
    import importlib.util
    import platform

    platform.uname().processor  # noqa: B018 - cached by platform after this
    if importlib.util.find_spec("trio") is not None:
        import trio  # noqa: F401


_ask_the_machine_once()

REPO = Path(__file__).resolve().parents[1]
GSM8K_SPLIT = REPO / "data" / "gsm8k" / "test.jsonl"  # the whole test split (1,319 questions)
GSM8K_HEAD = 300  # questions the tests' runs may reach (at most 120 now)


def _gsm8k_head() -> Path:
    """The first GSM8K_HEAD records of the test split, copied for this session: a run reads (and checks)
    its whole data file before it takes --limit, so each run on the whole split spent ~0.4 s reading 1,319
    records for the 2 to 30 it asks. test_tasks_prompts reads the whole split."""
    folder = Path(tempfile.mkdtemp(prefix="selfconsistency-tests-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    head = folder / "test.jsonl"
    with GSM8K_SPLIT.open(encoding="utf-8") as split:
        head.write_text("".join(line for _, line in zip(range(GSM8K_HEAD), split, strict=False)), encoding="utf-8")
    return head


GSM8K_TEST = _gsm8k_head()  # the data file of the tests' runs
SMALL_MODEL = "qwen2.5-coder-0.5b"
NO_MODEL_GUARD = Path(__file__).resolve().parent / "no_model"  # a sitecustomize refusing llama.cpp
NO_MODEL_EXIT = 97  # its exit code
MODEL_FIXTURES = {"reference_run", "llama_server", "small_model", "loaded_model"}  # fixtures that load the 0.5B model


def _the_workers_core() -> set[int] | None:
    """Under pytest-xdist (`-n auto`, pyproject's addopts), the core this worker's model tests run on: one
    per worker, so that two workers' models never share one (None without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... (set before conftest is imported)
    cores = sorted(os.sched_getaffinity(0))
    if not worker or len(cores) < 2:
        return None
    return {cores[int(worker.removeprefix("gw")) % len(cores)]}


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per core this process may use (xdist would count the machine's, with psutil)."""
    return len(os.sched_getaffinity(0))


MODEL_CORE = _the_workers_core()
MODEL_THREADS = 1 if MODEL_CORE else len(os.sched_getaffinity(0))  # threads a test's model decodes on


def pytest_collection_modifyitems(items):
    """Files with the most model tests first (each file's own order kept): xdist hands out files in this
    order, so the long ones start at once and the short ones even out the workers' ends."""
    model_tests = collections.Counter(item.path for item in items if item.get_closest_marker("model"))
    items.sort(key=lambda item: -model_tests[item.path])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A model test, and every process it starts, runs on its worker's own core: llama.cpp's threads
    busy-wait for each other, so a model on two threads (the product's default on this machine) beside the
    other worker ran the README's answer command in 289 s instead of 23 s. Other tests use every core (a
    thread or process a model test leaves running keeps its core: slower later, never wrong)."""
    if MODEL_CORE is None or item.get_closest_marker("model") is None:
        return (yield)
    every_core = os.sched_getaffinity(0)
    os.sched_setaffinity(0, MODEL_CORE)
    try:
        return (yield)
    finally:
        os.sched_setaffinity(0, every_core)


def _model_fixtures_marked(item) -> None:
    """Before any fixture is made: a test using a model fixture must be marked `model`."""
    used = MODEL_FIXTURES & set(item.fixturenames)
    if used and not item.get_closest_marker("model"):
        pytest.fail(f"uses {', '.join(sorted(used))}: mark it @pytest.mark.model", pytrace=False)


@pytest.fixture(autouse=True)
def model_marker_guard(request, monkeypatch):
    """`pytest -m "not model"` is the fast suite: a test not marked `model` must not load an embedded model,
    neither in this process (the model loader fails the test) nor in the CLI processes it starts (see
    no_model/sitecustomize.py)."""
    if request.node.get_closest_marker("model"):
        return
    from selfconsistency.backends.llama_cpp import LlamaCppBackend

    def refuse(*_, **__):
        pytest.fail("loads an embedded model: mark it @pytest.mark.model")

    monkeypatch.setattr(LlamaCppBackend, "_load", refuse)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(NO_MODEL_GUARD), os.environ.get("PYTHONPATH"))
                                                      if p))


# -- no process in an unmarked test -----------------------------------------------------------------

_PROCESS_CALLS = ("posix_spawn", "posix_spawnp", "system", "forkpty", "execv", "execve")  # os.*; the
# exec*/spawn* wrappers call these or os.fork; subprocess and multiprocessing's spawn call fork_exec


def _forked_by_the_product() -> bool:
    """Whether this fork comes from selfconsistency.forked (a copy of this process, nothing started)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") == "selfconsistency.forked":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _no_process(item):
    """While a phase of an unmarked test runs (its fixtures included, whatever their scope), starting a
    process fails it."""
    if item.get_closest_marker("slow") or item.get_closest_marker("model"):
        yield
        return
    started = item.__dict__.setdefault("_processes_started", [])

    def refuse(what: str):
        def refused(*_, **__):
            started.append(what)
            pytest.fail(f"starts a process ({what}): run it in this process (run_cli, a thread) or mark it "
                        "@pytest.mark.slow", pytrace=False)
        return refused

    real_fork = os.fork

    def fork():
        return real_fork() if _forked_by_the_product() else refuse("os.fork")()

    from selfconsistency.math_verifier import use_verifier

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "_fork_exec", refuse("subprocess"))
        patch.setattr(multiprocessing.util, "spawnv_passfds", refuse("multiprocessing spawn"))
        patch.setattr(os, "fork", fork)
        for name in _PROCESS_CALLS:
            if hasattr(os, name):
                patch.setattr(os, name, refuse(f"os.{name}"))
        # math answers compared in this process, not in the product's worker process (slow tests may test it)
        previous = use_verifier(_LazyInProcess())
        try:
            yield
        finally:
            use_verifier(previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _model_fixtures_marked(item)
    with _no_process(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _no_process(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    with _no_process(item):
        return (yield)


@pytest.fixture(autouse=True)
def process_marker_guard(request):
    """A test not marked `slow` or `model` that starts a process fails (the rule: this module's
    docstring; the hooks above refuse it where it happens). Failed again here if it passed all the same:
    the refusal was raised in another thread, or caught on the way."""
    yield
    call = getattr(request.node, "_call_report", None)
    started = request.node.__dict__.get("_processes_started")
    if started and call is not None and call.passed:
        pytest.fail(f"started a process ({', '.join(started)}) without being marked slow", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call":
        item._call_report = report
    return report


# -- the CLI -------------------------------------------------------------------------------------------


class _LastResort(logging.Handler):
    """What a process prints of other libraries' warnings (logging.lastResort: WARNING and above, the
    message alone, on stderr): under pytest the root logger has handlers, so nothing would."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("selfconsistency"):  # the CLI's own handler prints those
            sys.stderr.write(self.format(record) + "\n")


def run_cli(*args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """The CLI run in this process by typer's runner, as `cli` runs it in another (COLUMNS=200, stdout
    and stderr apart): no interpreter start-up. An exception the command lets out is on stderr with its
    traceback and exit code 1, as a process prints it; Python warnings and other libraries' warning logs
    reach stderr as in a process. Not for two commands at once: the runner swaps sys.stdout, sys.stderr and
    os.environ for the whole process."""
    from typer.testing import CliRunner

    from selfconsistency.cli import app

    library = logging.getLogger("selfconsistency")
    kept = library.level, list(library.handlers)  # the CLI sets the library's logging up: put back after
    last_resort = _LastResort()
    runner = CliRunner()  # click >= 8.2 keeps stderr apart from stdout
    try:
        with contextlib.chdir(cwd or os.getcwd()), warnings.catch_warnings():
            warnings.resetwarnings()  # a process's default filters, not pytest's
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _show_warning
            logging.getLogger().addHandler(last_resort)
            result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})}, prog_name="selfconsistency")
    finally:
        logging.getLogger().removeHandler(last_resort)
        library.setLevel(kept[0])
        library.handlers[:] = kept[1]
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["selfconsistency", *args], result.exit_code, result.stdout, stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a process of its own (`python -m selfconsistency`): for tests about
    processes (signals, kills, two commands at once), marked slow. Others use run_cli."""
    proc = subprocess.run([sys.executable, "-m", "selfconsistency", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}, **kwargs)
    if proc.returncode == NO_MODEL_EXIT:  # fail loudly even where a test expects the command to fail
        pytest.fail(proc.stderr.strip())
    return proc


def small_run_args(run_dir: Path, *extra: str, batch_size: int = 1, second_only: bool = False) -> list[str]:
    """The reference run's command: 2 questions x (greedy + 3 paths at T=0.7) on the 0.5B model, one path at
    a time. `second_only`: its second question alone (its paths are half as long as the first's)."""
    questions = ["--offset", "1", "--limit", "1"] if second_only else ["--limit", "2"]
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), *questions, "--paths", "3",
            "--temperatures", "0.7", "--model", SMALL_MODEL, "--batch-size", str(batch_size),
            "--threads", str(MODEL_THREADS), "--run-dir", str(run_dir), "--quiet", *extra]


def without_runtime(value):
    """results.json minus measured times, which differ between identical runs."""
    if isinstance(value, dict):
        return {k: without_runtime(v) for k, v in value.items() if k != "runtime"}
    if isinstance(value, list):
        return [without_runtime(v) for v in value]
    return value


def default_sigint() -> None:
    """A Popen preexec_fn: in the child before exec, SIGINT handled by default and not blocked, as in a
    shell (dispositions set to ignore and blocked masks are inherited across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def kill_when_stored(args: list[str], run_dir: Path, at_least: int, timeout: float = 300,
                     extra_delay: float = 0.0) -> list[tuple]:
    """Start the CLI, SIGKILL it once `at_least` paths are stored (then `extra_delay` seconds more);
    the rows that survived."""
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "samples.sqlite").exists() and len(stored_rows(run_dir)) >= at_least:
            break
        time.sleep(0.05)
    time.sleep(extra_delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return stored_rows(run_dir)


def stored_rows(run_dir: Path) -> list[tuple]:
    """The stored paths; none while a starting run has made the file but not yet its tables."""
    db = sqlite3.connect(run_dir / "samples.sqlite")
    try:
        return db.execute("SELECT question_id, temperature, path_index, text, answer, created_at "
                          "FROM paths ORDER BY question_id, temperature, path_index").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


def submitted_jobs(run_dir: Path) -> int:
    """How many of the run's jobs have a provider id stored (0 before the store or its tables exist)."""
    if not (run_dir / "samples.sqlite").exists():
        return 0
    db = sqlite3.connect(run_dir / "samples.sqlite")
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE job_id IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def one_line_error(proc, *needles: str) -> str:
    """The CLI failed as a user error: exit 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def load_results(run_dir: Path) -> dict:
    """A run's results.json, validated against its documented schema (results_schema.Results)."""
    from selfconsistency.results_schema import Results

    results = json.loads((run_dir / "results.json").read_text())
    Results.model_validate(results)
    return results


@pytest.fixture(scope="session")
def small_model():
    """The 0.5B model, loaded once for the session (the context size a run loads by default, 4096 tokens;
    MODEL_THREADS threads). Tests that only need "a loaded 0.5B model" share it through `loaded_model`;
    tests of loading itself load their own."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    from selfconsistency.models import resolve_model_path

    with suppress_stdout_stderr(disable=False):
        llm = llama_cpp.Llama(model_path=str(resolve_model_path(SMALL_MODEL)), n_ctx=4096, n_batch=512,
                              n_threads=MODEL_THREADS, n_threads_batch=MODEL_THREADS, logits_all=False,
                              verbose=False)
    yield llm
    llm.close()


@contextlib.contextmanager
def _sharing(llm):
    """Every LlamaCppBackend of the 0.5B model takes `llm` where it would load the model (a context it
    fits), on MODEL_THREADS threads; closing one leaves `llm` loaded. A new backend takes over the shared
    block (the exemplars) the last one left at the start of the cache, computed as it computes it (from an
    empty cache, in one eval): a prompt with that block skips its prefill (~10 s on one thread), and the
    runs that compare a path with one made in a fresh process check the two are the same."""
    from selfconsistency.backends.llama_cpp import LlamaCppBackend

    load, close = LlamaCppBackend._load, LlamaCppBackend.close
    shared_path = Path(llm.model_path).resolve()

    def shared_load(self, n_ctx):
        if Path(self.model_path).resolve() != shared_path or n_ctx > llm.n_ctx():
            return load(self, n_ctx)
        if self.llm is not llm:
            close(self)
            self.llm, self.threads = llm, MODEL_THREADS
            left = getattr(llm, "tests_shared_block", None)
            if left and llm.n_tokens >= len(left) and llm.input_ids[:len(left)].tolist() == left:
                self._shared_tokens = left

    def shared_close(self):
        if self.llm is llm:
            llm.tests_shared_block = self._shared_tokens
            self.llm = None
        close(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LlamaCppBackend, "_load", shared_load)
        patch.setattr(LlamaCppBackend, "close", shared_close)
        yield


@pytest.fixture
def loaded_model(small_model):
    """This test's embedded 0.5B backends use the session's loaded model (see _sharing)."""
    with _sharing(small_model):
        yield small_model


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, small_model) -> Path:
    """One uninterrupted real run of the 0.5B model, one path at a time: 2 questions x (greedy + 3 paths
    at T=0.7); in this process, on the session's loaded model. Made once a session: under xdist the first
    worker to need it makes it while the others wait, and each works on a copy of its own."""
    import fcntl

    def make(run_dir: Path) -> None:
        with _sharing(small_model):
            proc = run_cli(*small_run_args(run_dir))
        assert proc.returncode == 0, proc.stderr

    run_dir = tmp_path_factory.mktemp("reference")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        make(run_dir)
        return run_dir
    made = tmp_path_factory.getbasetemp().parent / "reference"  # the session's, beside the workers' own
    with open(f"{made}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not Path(f"{made}.ok").exists():
            shutil.rmtree(made, ignore_errors=True)  # a worker's attempt that failed
            make(made)
            Path(f"{made}.ok").touch()
    shutil.copytree(made, run_dir, dirs_exist_ok=True)
    return run_dir


class ScriptedBackend:
    """A test double registered like a real backend: each path's answer is drawn from a per-question
    distribution with the path's own seed, so runs are deterministic and instant."""

    name = "scripted"

    def __init__(self, model: str, **_: object):
        self.model = model
        self.generated: list[tuple[str, float, int]] = []

    def generate(self, requests):
        import numpy as np

        from selfconsistency.backends.base import Generation

        for request in requests:
            self.generated.append((request.question_id, request.temperature, request.path_index))
            rng = np.random.default_rng(request.params.seed)
            position = int(request.question_id.rsplit("-", 1)[1])
            # even questions: the model is sure (always 18); odd ones: a coin between 3 and 4
            answer = "18" if position % 2 == 0 else str(3 + int(rng.integers(2)))
            yield Generation(request, f"Some steps. The answer is {answer}.", 100, 8, 0.01, "stop", -2.0)

    def close(self):
        pass


@pytest.fixture
def scripted_backend():
    from selfconsistency.backends import register_backend

    made: list[ScriptedBackend] = []

    def factory(config):
        made.append(ScriptedBackend(config.model))
        return made[-1]

    register_backend("scripted", factory)
    return made


@pytest.fixture(scope="session")
def s3_endpoint():
    """S3 on a moto server on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


SERVER_POLL_SECONDS = 0.01  # serve_forever's look at shutdown(): its default of 0.5 s is waited out per test


def serve_in_thread(server) -> None:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVER_POLL_SECONDS}, daemon=True).start()


AWS_SECRET = "testing-secret-value"  # the AWS secret access key the aws fixture sets


@pytest.fixture
def aws(s3_endpoint, monkeypatch):
    """The Bedrock emulator (control plane and runtime) on loopback, S3 on moto, and the environment
    boto3 reads to reach them; yields the emulator to inject faults and inspect jobs."""
    import boto3

    from selfconsistency.testing.bedrock_emulator import Emulator, make_server

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    emulator = Emulator(boto3.client("s3"), step_seconds=0.02)
    server = make_server(emulator)
    serve_in_thread(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", url)
    yield emulator
    server.shutdown()


class OpenAIStub(BaseHTTPRequestHandler):
    """An OpenAI-compatible server on loopback: chat completions that fail with 429 a few times, then
    answer with at most `max_choices`."""

    failures_left = 0
    max_choices = 8
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"body": body, "auth": self.headers.get("Authorization")})
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            # retry-after-ms, as OpenAI sends it: the client waits 1 ms, not its own backoff from 0.5 s up
            self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                       {"Retry-After": "0", "retry-after-ms": "1"})
            return
        n = min(body.get("n", 1), type(self).max_choices)
        choices = [{"index": i, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"5 + {i} = {5 + i}. The answer is {5 + i}."},
                    "logprobs": {"content": [{"token": "x", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}}
                   for i in range(n)]
        self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": 50, "completion_tokens": 4 * n,
                                                       "total_tokens": 50 + 4 * n}})

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    """OpenAIStub on loopback, reset; yields its /v1 URL."""
    OpenAIStub.failures_left, OpenAIStub.max_choices, OpenAIStub.calls = 0, 8, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenAIStub)
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """llama-cpp-python's OpenAI-compatible server with the 0.5B model, on loopback (model alias qwen-0.5b)."""
    from selfconsistency.models import resolve_model_path

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                             str(resolve_model_path(SMALL_MODEL)), "--model_alias", "qwen-0.5b",
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                             "--n_threads", str(MODEL_THREADS), "--n_threads_batch", str(MODEL_THREADS)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


OPENAI_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"  # the OpenAI key the servers' fixtures set


@pytest.fixture
def batch_api(monkeypatch):
    """The OpenAI Files + Batch API emulator on loopback and the key the client sends; yields
    (emulator, base URL)."""
    from selfconsistency.testing.openai_batch_emulator import Emulator, make_server

    emulator = Emulator(step_seconds=0.02)
    server = make_server(emulator)
    serve_in_thread(server)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    yield emulator, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


class _LazyInProcess:
    """math-verify in the test process (made at its first use): a test that is not `slow` starts no worker
    process for the math answer type's comparisons (_no_process puts it in place for every phase of such a
    test, so that fixtures of any scope use it too)."""

    made = None

    def _verifier(self):
        if _LazyInProcess.made is None:
            from selfconsistency.math_verifier import InProcess

            _LazyInProcess.made = InProcess()
        return _LazyInProcess.made

    def usable(self, form):
        return self._verifier().usable(form)

    def compare(self, gold, answer):
        return self._verifier().compare(gold, answer)


ANTHROPIC_KEY = "sk-ant-test-DO-NOT-LEAK-0123456789"  # the key the anthropic_api fixture accepts and sets


@pytest.fixture
def anthropic_api(monkeypatch):
    """The Anthropic API emulator (Messages, Message Batches, Models) on loopback, and the environment the
    SDK reads to reach it (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL); yields (emulator, base URL)."""
    from selfconsistency.testing.anthropic_emulator import Emulator, make_server

    emulator = Emulator(api_key=ANTHROPIC_KEY, step_seconds=0.02)
    server = make_server(emulator)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVER_POLL_SECONDS}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    yield emulator, url
    server.shutdown()
