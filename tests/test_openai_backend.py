"""The OpenAI-compatible backend against real HTTP servers on loopback: llama-cpp-python's own server
with the 0.5B model, and a small stub server for retries and for servers that ignore `n`."""

import json
from pathlib import Path

import pytest

from conftest import GSM8K_TEST, OpenAIStub, default_sigint, kill_when_stored, load_results, run_cli, stored_rows
from selfconsistency.backends.base import BackendConfig
from selfconsistency.backends.openai_compat import OpenAIBackend, OpenAIOptions
from selfconsistency.experiment import plan_requests
from selfconsistency.settings import RunSettings


def openai_args(run_dir: Path, url: str, *extra: str) -> list[str]:
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "2", "--paths", "3", "--temperatures", "0.7",
            "--backend", "openai", "--base-url", url, "--model", "qwen-0.5b", "--concurrency", "2",
            "--max-tokens", "40", "--run-dir", str(run_dir), "--quiet", *extra]  # plumbing, not answers: short paths


@pytest.mark.model
def test_run_through_llama_cpp_server(llama_server, tmp_path):
    # stored once each, answers extracted, the key kept out: tests/test_backend_contract.py
    run_dir = tmp_path / "run"
    proc = run_cli(*openai_args(run_dir, llama_server, "--log-prompts"))
    assert proc.returncode == 0, proc.stderr
    assert len(stored_rows(run_dir)) == 8
    results = load_results(run_dir)
    assert results["backend"] == "openai" and results["questions"] == 2
    assert results["sampled"][0]["completion_tokens"] > 0


@pytest.mark.model
def test_server_run_resumes_after_sigkill(llama_server, tmp_path, monkeypatch):
    run_dir = tmp_path / "killed"
    args = openai_args(run_dir, llama_server, "--concurrency", "1")
    survivors = kill_when_stored(args, run_dir, at_least=2)
    assert 2 <= len(survivors) < 8
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    rows = stored_rows(run_dir)
    assert len(rows) == 8 and len({r[:3] for r in rows}) == 8 and set(survivors) <= set(rows)


def _requests(paths=3):
    config = RunSettings(data=str(GSM8K_TEST), limit=1, paths=paths, backend="openai", model="stub")
    task = config.get_task()
    return plan_requests(config, task, config.load(task))


def test_retries_429_then_groups_paths_into_n(stub_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    OpenAIStub.failures_left = 2
    backend = OpenAIBackend(BackendConfig(model="stub", options=OpenAIOptions(base_url=stub_server, max_retries=3)))
    generations = list(backend.generate(_requests(paths=3)))
    assert sorted((g.request.temperature, g.request.path_index) for g in generations) == \
        [(0.0, 0), (0.7, 0), (0.7, 1), (0.7, 2)]
    bodies = [c["body"] for c in OpenAIStub.calls]
    assert len(bodies) == 2 + 2  # two 429s retried, then one greedy request and one n=3 request
    assert sorted(b["n"] for b in bodies[2:]) == [1, 3]
    sampled = next(b for b in bodies[2:] if b["n"] == 3)
    assert sampled["temperature"] == 0.7 and sampled["top_k"] == 40 and sampled["stop"] == ["\n"]
    assert sampled["repeat_penalty"] == 1.0 and sampled["min_p"] == 0.0  # not the server's own defaults
    assert all(g.logprob_sum == -0.5 for g in generations)


def test_server_ignoring_n_gets_separate_requests(stub_server):
    OpenAIStub.max_choices = 1
    backend = OpenAIBackend(BackendConfig(model="stub", options=OpenAIOptions(base_url=stub_server)))
    generations = list(backend.generate(_requests(paths=3)))
    assert len(generations) == 4 and len({(g.request.temperature, g.request.path_index) for g in generations}) == 4
    assert sorted(c["body"]["n"] for c in OpenAIStub.calls) == [1, 1, 1, 3]  # greedy; 1 of 3 answered, 2 asked again


def test_exhausted_retries_fail_clearly(stub_server):
    from selfconsistency.backends.base import BackendError

    OpenAIStub.failures_left = 10
    backend = OpenAIBackend(BackendConfig(model="stub", options=OpenAIOptions(base_url=stub_server, max_retries=1)))
    with pytest.raises(BackendError, match="RateLimitError"):
        list(backend.generate(_requests(paths=1)))


def test_missing_key_for_the_openai_api(monkeypatch):
    from selfconsistency.backends.base import BackendError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend(BackendConfig(model="gpt-4o-mini"))


@pytest.mark.slow
def test_token_budget_stops_before_the_request_that_could_exceed_it(stub_server, tmp_path):
    """Each stub answer costs 50 prompt + 4 completion tokens per choice. With room for the greedy
    request only, the n=3 request is never sent, the greedy path is kept, and the run exits 2."""
    run_dir = tmp_path / "run"
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--paths", "3", "--backend", "openai",
            "--base-url", stub_server, "--model", "stub", "--concurrency", "1", "--max-tokens", "64",
            "--run-dir", str(run_dir), "--quiet"]
    # A request books its prompt at ~3 characters a token plus max_tokens per choice: the greedy one
    # fits in P + 64, the sampled one (after the greedy answer's 54 tokens) needs 54 + P + 3 x 64.
    prompt = _requests(paths=1)[0].prompt
    estimate = sum(len(m["content"]) for m in prompt.chat_messages) // 3
    proc = run_cli(*args, "--max-tokens-total", str(estimate + 64 + 100))
    assert proc.returncode == 2 and "token budget reached" in proc.stderr
    assert [c["body"]["n"] for c in OpenAIStub.calls] == [1]
    assert len(stored_rows(run_dir)) == 1 and (run_dir / "results.json").exists()
    # a resumed run counts what is stored against the budget
    proc = run_cli(*args, "--max-tokens-total", str(estimate + 64 + 150))
    assert proc.returncode == 2 and len(OpenAIStub.calls) == 1
    proc = run_cli(*args, "--max-tokens-total", str(estimate + 54 + 192))
    assert proc.returncode == 0, proc.stderr
    assert len(stored_rows(run_dir)) == 4 and [c["body"]["n"] for c in OpenAIStub.calls] == [1, 3]


@pytest.mark.slow
def test_max_cost_needs_a_price_and_caps_spending(stub_server, tmp_path):
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--paths", "3", "--backend", "openai",
            "--base-url", stub_server, "--model", "stub", "--concurrency", "1", "--max-tokens", "64",
            "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = run_cli(*args, "--max-cost", "1")
    assert proc.returncode == 2 and "needs a price" in proc.stderr and OpenAIStub.calls == []
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"stub": {"on_demand": [0.5, 1.0]}}))  # $ per 1k tokens: 1,000 tokens = $1
    proc = run_cli(*args, "--prices", str(prices), "--max-cost", "0.05")  # 50 tokens: not even the greedy request
    assert proc.returncode == 2 and "budget" in proc.stderr and OpenAIStub.calls == []
    assert "--max-cost $0.05" in proc.stderr and "--max-tokens-total" not in proc.stderr  # the cap the user gave
    proc = run_cli(*args, "--prices", str(prices), "--max-cost", "10")
    assert proc.returncode == 0, proc.stderr
    assert len(stored_rows(tmp_path / "run")) == 4


class SlowStub(OpenAIStub):
    """OpenAIStub taking `delay` seconds per request; `calls` counts the requests that reached it."""

    delay = 0.2
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        import time

        time.sleep(type(self).delay)
        super().do_POST()


@pytest.fixture
def slow_server():
    import threading
    from http.server import ThreadingHTTPServer

    SlowStub.failures_left, SlowStub.max_choices, SlowStub.calls = 0, 8, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_a_consumer_that_stops_sends_no_more_requests(slow_server):
    """Closing generate() (a serve client that went away) leaves only the request in flight: the queued
    ones are never sent, and closing does not wait for them."""
    import time

    backend = OpenAIBackend(BackendConfig(model="stub", options=OpenAIOptions(
        base_url=slow_server, concurrency=1, paths_per_request=1)))
    generations = backend.generate(_requests(paths=12))  # 13 requests of one path, 0.2 s each
    next(generations)
    started = time.monotonic()
    generations.close()
    closing = time.monotonic() - started
    time.sleep(4 * SlowStub.delay)
    assert closing < SlowStub.delay and len(SlowStub.calls) <= 2  # the one answered and the one in flight
    backend.close()


@pytest.mark.slow
def test_ctrl_c_stops_sending_and_stores_what_was_paid_for(slow_server, tmp_path):
    """SIGINT mid-run: no queued request is sent after it, every answered request's paths are stored,
    and the command exits 130 at once."""
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "many.jsonl"
    # 60 questions at 5 requests/s: 24 s of work, interrupted after the first few (even if polled late)
    data.write_text("".join(json.dumps({"question": f"What is {i} + 5?"}) + "\n" for i in range(60)))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", "answer", "gsm8k", "--data", str(data),
                             "--backend", "openai", "--base-url", slow_server, "--model", "stubm", "--paths", "2",
                             "--requests-per-second", "5", "--concurrency", "1", "--run-dir", str(run_dir),
                             "--quiet", "-o", str(tmp_path / "answers.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # Ctrl-C as in a shell
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "samples.sqlite").exists() and len(stored_rows(run_dir)) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    exited_after = time.monotonic() - interrupted
    sent = len(SlowStub.calls)
    time.sleep(0.5)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    assert len(SlowStub.calls) == sent and 2 <= sent < 10 and exited_after < 2
    assert len(stored_rows(run_dir)) == 2 * sent  # the request in flight at Ctrl-C was stored too
