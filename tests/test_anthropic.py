"""The anthropic and anthropic-batch backends end to end: the official `anthropic` SDK against the Anthropic
API emulator over loopback HTTP, with the documented faults injected (errored, expired and canceled results,
results streams cut mid-line, 429s, a cap on batches in progress, a client killed after submitting)."""

import json
import subprocess
import sys
import time

import pytest

from conftest import ANTHROPIC_KEY, GSM8K_TEST, cli, load_results, one_line_error, stored_rows, submitted_jobs, write
from selfconsistency.backends.base import BackendError
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.anthropic_emulator import Faults

pytestmark = pytest.mark.slow  # whole runs through the emulator over HTTP; some are processes

REFUSED_QUESTION = "James decides to run 3 sprints"  # GSM8K test question 3's text


def config(backend="anthropic-batch", **overrides) -> RunSettings:
    extra = {"poll_seconds": 0.02, "on_demand_below": 0} if backend == "anthropic-batch" else {"concurrency": 2}
    return RunSettings(**{"data": str(GSM8K_TEST), "limit": 6, "paths": 4, "temperatures": (0.7,), "backend": backend,
                          "model": "claude-haiku-4-5", **extra, **overrides})


def billed_tokens(emulator, batch: bool) -> int:
    return sum(e["input"] + e["cache_write"] + e["cache_read"] + e["output"] for e in emulator.billed
               if (e["batch_id"] is not None) == batch)


def test_on_demand_run_stores_every_path_with_the_sampling_version_and_the_billed_tokens(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    emulator.faults = Faults(overloaded_calls=2, throttle_every=9)  # retried by the SDK (529, 429 + retry-after)
    run_experiment(config("anthropic"), tmp_path)
    rows = stored_rows(tmp_path)
    assert len(rows) == 6 * 5 == emulator.message_calls and len(emulator.billed) == 30
    assert set(emulator.versions_seen) == {"2023-06-01"}  # Haiku 4.5 takes a temperature under it, not under 2026-10-21
    with SampleStore(tmp_path, create=False) as store:
        used = sum(p.prompt_tokens + p.completion_tokens for p in store.paths())
    assert used == billed_tokens(emulator, batch=False)  # each path's tokens as billed, counted once


def test_a_batch_run_stores_every_path_once_despite_the_documented_faults(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    emulator.faults = Faults(overloaded=3, api_errors=2, expire_batches=1, cut_results=1, throttle_every=7)
    run_dir = tmp_path / "run"
    run_experiment(config(limit=8), run_dir)
    rows = stored_rows(run_dir)
    assert len(rows) == 8 * 5 and len({r[:3] for r in rows}) == 8 * 5
    batches = sorted(emulator.batches.values(), key=lambda b: b["_order"])
    assert len(batches) >= 2 and batches[0]["request_counts"]["expired"] == 20
    assert all(b["_version"] == "2023-06-01" for b in batches)
    results = write_report(run_dir)
    # every billed request is collected and counted once: the ledger's tokens are the emulator's bill
    ledger = sum(j["input_tokens"] + j["output_tokens"] for j in results["batch_jobs"])
    assert ledger == billed_tokens(emulator, batch=True) == results["spend"]["tokens"]
    assert sum(j["records_answered"] for j in results["batch_jobs"]) == 8 * 5 == len(emulator.billed)
    assert results["spend"]["batch_usd"] == pytest.approx(sum(j["cost_usd"] for j in results["batch_jobs"]))
    assert results["spend"]["batch_usd"] > 0 and results["spend"]["cached_input_tokens"] == 0


def test_invalid_requests_are_stored_by_type_and_never_resent(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    emulator.faults = Faults(bad_input=REFUSED_QUESTION)
    run_dir = tmp_path / "run"
    with pytest.raises(BackendError, match=r"5 records were refused .*invalid_request_error"):
        run_experiment(config(), run_dir)
    again = cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "6", "--paths", "4", "--temperatures", "0.7",
                "--backend", "anthropic-batch", "--model", "claude-haiku-4-5", "--poll-seconds", "0.02",
                "--run-dir", str(run_dir), "--quiet")
    assert "5 records were refused" in one_line_error(again)
    assert len(emulator.batches) == 1 and emulator.message_calls == 0  # never sent again, in a batch or not
    assert len(stored_rows(run_dir)) == 5 * 5
    status = cli("jobs", "status", str(run_dir))
    assert status.returncode == 0 and "not resubmitted, by code: invalid_request_error" in status.stdout


def test_a_cap_on_batches_in_progress_queues_new_ones(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    emulator.faults = Faults(max_batches_in_progress=1)
    run_experiment(config(max_records_per_job=12, max_jobs_in_flight=3), tmp_path)  # 30 records: 3 batches
    assert len(emulator.batches) == 3 and len(stored_rows(tmp_path)) == 30


def test_a_shared_prefix_is_cached_with_the_one_hour_ttl_and_the_report_says_what_it_saved(anthropic_api, tmp_path,
                                                                                           caplog):
    """Sonnet 4.5 caches prefixes of 1,024 tokens and more: a task whose exemplars are long enough."""
    emulator, _ = anthropic_api
    exemplars = [{"question": f"Question {i}: " + "How many apples are there? " * 40,
                  "rationale": f"Counting them one by one gives {i}. " * 20 + f"The answer is {i}."} for i in range(4)]
    task = write(tmp_path / "long.yaml", f"""
        name: long
        fields: {{question: question, gold: answer}}
        answer: {{type: number, gold_pattern: '####\\s*(.+?)\\s*$'}}
        prompt:
          template: "{{{{ question }}}}"
          exemplars: {json.dumps(exemplars)}
          stop: ["\\n"]
        """)
    caplog.set_level("INFO")
    run_dir = tmp_path / "run"
    run_experiment(config(task=str(task), model="claude-sonnet-4-5", limit=3), run_dir)
    (batch,) = emulator.batches.values()
    params = batch["_requests"][0]["params"]
    assert params["messages"][-2]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    writes = [e for e in emulator.billed if e["cache_write"]]
    reads = [e for e in emulator.billed if e["cache_read"]]
    assert len(writes) == 1 and len(reads) == 14  # the first request writes, the others read
    assert "with every cacheable prefix" in caplog.text  # the estimate with and without cache hits
    results = write_report(run_dir)
    spend = results["spend"]
    assert spend["cached_input_tokens"] == writes[0]["cache_write"] * 15
    assert spend["saved_by_cache_usd"] > 0
    assert spend["batch_usd"] + spend["saved_by_cache_usd"] == pytest.approx(results["batch_jobs"][0]
                                                                             ["uncached_cost_usd"])
    assert "Prompt caching:" in (run_dir / "results.md").read_text()
    shown = cli("run", str(task), "--data", str(GSM8K_TEST), "--backend", "anthropic-batch", "--model",
                "claude-sonnet-4-5", "--show-prompt")
    assert shown.returncode == 0 and '"ttl": "1h"' in shown.stdout and '"temperature": 0.0' in shown.stdout


def test_a_model_without_sampling_parameters_samples_at_its_default_and_says_so(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "2", "--paths", "2", "--backend", "anthropic",
            "--model", "claude-haiku-5-5", "--run-dir", str(tmp_path / "run"), "--quiet"]
    refused = one_line_error(cli(*args, "--temperatures", "0.7"), "takes no temperature",
                             "give --temperatures 1 --no-greedy")  # both fixes at once, not one a run
    assert "greedy" in one_line_error(cli(*args, "--temperatures", "1.0"), "--no-greedy") and refused
    assert not (tmp_path / "run").exists() and emulator.message_calls == 0  # refused before anything
    done = cli(*[a for a in args if a != "--quiet"], "--temperatures", "1.0", "--no-greedy")
    assert done.returncode == 0, done.stderr
    assert "sampled at its default, temperature 1" in done.stderr and "T=1 SC@2" in done.stdout
    assert set(emulator.versions_seen) == {"2026-10-21"} and emulator.message_calls == 4
    assert [s["temperature"] for s in load_results(tmp_path / "run")["sampled"]] == [1.0]


@pytest.mark.parametrize("case", ["no key", "wrong key", "unknown model", "too large"])
def test_bad_input_is_one_line_and_exit_2(anthropic_api, tmp_path, monkeypatch, case):
    emulator, _ = anthropic_api
    data, model = str(GSM8K_TEST), "claude-haiku-4-5"
    if case == "no key":
        monkeypatch.delenv("ANTHROPIC_API_KEY")
    elif case == "wrong key":
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
    elif case == "unknown model":
        model = "claude-hiaku-4-5"
    else:  # one question past the model's context window (200,000 tokens for Haiku 4.5)
        data = str(write(tmp_path / "big.jsonl", json.dumps({"question": "x " * 450_000, "answer": "#### 1"})))
    proc = cli("run", "gsm8k", "--data", data, "--limit", "1", "--paths", "2", "--temperatures", "0.7",
               "--max-question-chars", "1000000",
               "--backend", "anthropic-batch", "--model", model, "--run-dir", str(tmp_path / "run"), "--quiet")
    said = {"no key": "ANTHROPIC_API_KEY", "wrong key": "authentication_error", "unknown model": "unknown model",
            "too large": "context window of 200,000"}[case]
    one_line_error(proc, said)
    assert not emulator.batches and ANTHROPIC_KEY not in proc.stderr


def _run_args(run_dir, poll="0.05"):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "6", "--paths", "4", "--temperatures", "0.7",
            "--backend", "anthropic-batch", "--model", "claude-haiku-4-5", "--poll-seconds", poll,
            "--run-dir", str(run_dir), "--quiet"]


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_submitted(run_dir):
    deadline = time.time() + 60
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.02)


def test_a_run_killed_after_submitting_reattaches_and_jobs_stop_then_collect_resubmit(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    emulator.step_seconds = 1.0
    killed = tmp_path / "killed"
    proc = _start(_run_args(killed))
    _wait_submitted(killed)
    proc.kill()
    proc.communicate()
    assert len(emulator.batches) == 1 and stored_rows(killed) == []
    status = cli("jobs", "status", str(killed))
    assert status.returncode == 0 and "in_progress" in status.stdout and "records" in status.stdout
    emulator.step_seconds = 0.02
    finished = cli(*_run_args(killed))
    assert finished.returncode == 0, finished.stderr
    assert len(emulator.batches) == 1 and len(stored_rows(killed)) == 30  # reattached: nothing bought twice

    emulator.step_seconds = 2.0
    stopped_dir = tmp_path / "stopped"
    live = _start(_run_args(stopped_dir))
    _wait_submitted(stopped_dir)
    stop = cli("jobs", "stop", str(stopped_dir))
    assert stop.returncode == 0 and "stopping" in stop.stdout, stop.stderr
    emulator.step_seconds = 0.02
    _, stderr = live.communicate(timeout=60)
    last = stderr.strip().splitlines()[-1]
    assert live.returncode == 2 and "stopped" in last and "--resubmit" in last
    batch = sorted(emulator.batches.values(), key=lambda b: b["_order"])[-1]
    assert batch["processing_status"] == "ended" and batch["request_counts"]["canceled"] > 0
    collected = cli("jobs", "collect", str(stopped_dir))
    assert collected.returncode == 2 and len(emulator.batches) == 2  # the stop holds
    resubmitted = cli("jobs", "collect", "--resubmit", str(stopped_dir))
    assert resubmitted.returncode == 0, resubmitted.stderr
    # the 19 or so canceled records are fewer than on_demand_below (20): the Messages API, in the same ledger
    canceled = batch["request_counts"]["canceled"]
    assert len(stored_rows(stopped_dir)) == 30
    assert (len(emulator.batches), emulator.message_calls) == ((2, canceled) if canceled < 20 else (3, 0))
    assert load_results(stopped_dir)["spend"]["tokens"] == sum(
        e["input"] + e["output"] for e in emulator.billed if e["batch_id"] != next(iter(emulator.batches)))
