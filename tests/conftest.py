import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"
SMALL_MODEL = "qwen2.5-coder-0.5b"
NO_MODEL_GUARD = Path(__file__).resolve().parent / "no_model"  # a sitecustomize refusing llama.cpp
NO_MODEL_EXIT = 97  # its exit code
MODEL_FIXTURES = {"reference_run", "llama_server"}  # fixtures that load the 0.5B model


def pytest_runtest_setup(item):
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


def cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would."""
    proc = subprocess.run([sys.executable, "-m", "selfconsistency", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}, **kwargs)
    if proc.returncode == NO_MODEL_EXIT:  # fail loudly even where a test expects the command to fail
        pytest.fail(proc.stderr.strip())
    return proc


def small_run_args(run_dir: Path, *extra: str, batch_size: int = 1) -> list[str]:
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "2", "--paths", "3",
            "--temperatures", "0.7", "--model", SMALL_MODEL, "--batch-size", str(batch_size),
            "--run-dir", str(run_dir), "--quiet", *extra]


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
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted real run of the 0.5B model, one path at a time: 2 questions x (greedy + 3 paths
    at T=0.7)."""
    run_dir = tmp_path_factory.mktemp("reference")
    proc = cli(*small_run_args(run_dir))
    assert proc.returncode == 0, proc.stderr
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
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
            self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0"})
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
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
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    yield emulator, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


class _LazyInProcess:
    """math-verify in the test process (made at its first use): a test that is not `slow` starts no worker
    process for the math answer type's comparisons."""

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


@pytest.fixture(autouse=True)
def math_in_process(request):
    """Comparisons of math answers in this process, except for slow tests (which may test the worker)."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    from selfconsistency.math_verifier import use_verifier

    previous = use_verifier(_LazyInProcess())
    yield
    use_verifier(previous)


ANTHROPIC_KEY = "sk-ant-test-DO-NOT-LEAK-0123456789"  # the key the anthropic_api fixture accepts and sets


@pytest.fixture
def anthropic_api(monkeypatch):
    """The Anthropic API emulator (Messages, Message Batches, Models) on loopback, and the environment the
    SDK reads to reach it (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL); yields (emulator, base URL)."""
    from selfconsistency.testing.anthropic_emulator import Emulator, make_server

    emulator = Emulator(api_key=ANTHROPIC_KEY, step_seconds=0.02)
    server = make_server(emulator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    yield emulator, url
    server.shutdown()
