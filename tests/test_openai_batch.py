"""The openai-batch backend end to end: the real `openai` client against the Files + Batch API emulator
over loopback HTTP, with failures injected (failed request lines, expired and failed batches, throttling)."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import openai
import pytest

from conftest import GSM8K_TEST, OPENAI_KEY, cli, stored_rows
from selfconsistency.backends.base import BackendConfig, BackendError, flatten
from selfconsistency.backends.batch_jobs import MAX_ROUNDS, BatchJobRunner
from selfconsistency.backends.openai_batch import OpenAIBatchJobs, OpenAIBatchOptions
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.openai_batch_emulator import GARBLES, Faults

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP, seconds each


def batch_config(url, **overrides):
    return RunSettings(**{"data": str(GSM8K_TEST), "limit": 6, "paths": 10, "temperatures": (0.5, 0.7),
                        "backend": "openai-batch", "base_url": url, "model": "gpt-4o-mini", "prompt_format": "chat",
                        "poll_seconds": 0.02, **overrides})


def test_every_path_stored_once_despite_failed_lines_expiry_and_throttling(batch_api, tmp_path):
    emulator, url = batch_api
    emulator.faults = Faults(failed_lines=3, expire_batches=1, throttle_every=5)
    run_dir = tmp_path / "run"
    run_experiment(batch_config(url), run_dir)
    rows = stored_rows(run_dir)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == 6 * 21 and len({r[:3] for r in rows}) == 6 * 21
    batches = sorted(emulator.batches.values(), key=lambda b: b["_order"])
    # 6 greedy requests + 6 x 2 temperatures x (8 + 2) paths as n-choice requests = 30 lines in the first
    assert batches[0]["status"] == "expired" and batches[0]["request_counts"]["total"] == 30
    assert len(batches) >= 2 and all(b["status"] in ("expired", "completed") for b in batches)
    first_lines = emulator.contents[batches[0]["input_file_id"]].decode().splitlines()
    line = json.loads(first_lines[1])
    assert set(line) == {"custom_id", "method", "url", "body"} and line["url"] == "/v1/chat/completions"
    assert line["body"]["n"] == 8 and "top_k" not in line["body"] and line["body"]["logprobs"] is True
    with SampleStore(run_dir, create=False) as store:
        jobs = store.jobs("openai-batch")
        logprobs = [p.logprob_sum for p in store.paths()]
    assert len(jobs) == len(batches) and all(j["status"] == "collected" for j in jobs)
    # 3 failed lines, and the 15 requests the expired batch never ran (documented batch_expired lines)
    assert sum(j["manifest"]["errorRecordCount"] for j in jobs) == 3 + 15
    assert all(lp is not None and lp < 0 for lp in logprobs)  # the Batch API's log-probs reach the store
    results = write_report(run_dir)
    assert [j["status"] for j in results["batch_jobs"]] == ["collected"] * len(jobs)
    for job, reported in zip(jobs, results["batch_jobs"], strict=True):  # tokens at the batch price (half)
        tokens = job["manifest"]["inputTokenCount"] * 0.075 + job["manifest"]["outputTokenCount"] * 0.3
        assert reported["cost_usd"] == pytest.approx(tokens / 1e6, abs=1e-6)
    assert sum(j["paths"] for j in results["batch_jobs"]) >= 6 * 21
    for setting in results["sampled"]:  # and each setting's stored tokens at batch prices
        dollars = (setting["prompt_tokens"] * 0.075 + setting["completion_tokens"] * 0.3) / 1e6
        assert setting["cost_usd"] == pytest.approx(dollars, abs=1e-6) and dollars > 0
    assert "cost (USD)" in (run_dir / "results.md").read_text()


def test_a_batch_failing_every_round_is_reported_then_resumed(batch_api, tmp_path):
    emulator, url = batch_api
    emulator.faults = Faults(fail_batches=MAX_ROUNDS)
    run_dir = tmp_path / "run"
    with pytest.raises(BackendError, match="emulated validation failure"):
        run_experiment(batch_config(url, limit=2, paths=3), run_dir)
    assert len(emulator.batches) == MAX_ROUNDS and stored_rows(run_dir) == []
    run_experiment(batch_config(url, limit=2, paths=3), run_dir)  # the same command again finishes the run
    assert len(stored_rows(run_dir)) == 2 * 7


def test_a_create_retried_after_a_crash_finds_the_batch_it_made(batch_api, tmp_path):
    """The crash window between batches.create and storing the batch id: the job is left 'creating'."""
    emulator, url = batch_api
    config = batch_config(url, limit=2, paths=3)
    task = config.get_task()
    requests = plan_requests(config, task, config.load(task))
    with SampleStore(tmp_path) as store:
        backend_config = BackendConfig(model="gpt-4o-mini", job_state=store,
                                       options=OpenAIBatchOptions(base_url=url, poll_seconds=0.02))
        crashed = BatchJobRunner(OpenAIBatchJobs(backend_config), backend_config, store)
        records = crashed.service.pack(requests)
        job = crashed._plan_job(records)
        store.update_job(job["job_key"], status="creating")
        crashed.service.submit(job, [r.line for r in records])  # made, but its id never stored
    assert len(emulator.batches) == 1
    with SampleStore(tmp_path) as store:
        restarted = BatchJobRunner(OpenAIBatchJobs(backend_config), backend_config, store)
        generations = list(flatten(restarted.generate(requests)))
    assert len(generations) == len(requests) == 2 * 7
    assert len(emulator.batches) == 1  # reattached through the batch's metadata, nothing paid twice


def cli_args(url, run_dir, limit):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", str(limit), "--paths", "3", "--temperatures",
            "0.7", "--backend", "openai-batch", "--base-url", url, "--model", "gpt-4o-mini", "--poll-seconds", "0.1",
            "--run-dir", str(run_dir), "--quiet"]


def kill_once_submitted(args, run_dir):
    """Start the CLI and SIGKILL it as soon as its first batch's id is stored."""
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (run_dir / "samples.sqlite").exists():
            db = sqlite3.connect(run_dir / "samples.sqlite")
            try:
                if db.execute("SELECT count(*) FROM jobs WHERE job_id IS NOT NULL").fetchone()[0]:
                    break
            except sqlite3.OperationalError:
                pass  # tables not made yet
            finally:
                db.close()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_cli_reattaches_instead_of_resubmitting(batch_api, tmp_path):
    emulator, url = batch_api
    emulator.step_seconds = 1.0  # the batch stays in flight long enough to be killed and inspected
    run_dir = tmp_path / "run"
    kill_once_submitted(cli_args(url, run_dir, 4), run_dir)
    assert len(emulator.batches) == 1
    status = cli("jobs", "status", str(run_dir), "--base-url", url)
    assert status.returncode == 0 and next(iter(emulator.batches)) in status.stdout, status.stderr
    assert any(word in status.stdout for word in ("validating", "in_progress", "finalizing", "completed"))
    emulator.step_seconds = 0.02
    finished = cli(*cli_args(url, run_dir, 4))  # reattaches to the batch in flight
    assert finished.returncode == 0, finished.stderr
    assert len(emulator.batches) == 1 and len(stored_rows(run_dir)) == 4 * 4


def test_stop_cancels_and_collect_resubmits_only_when_asked(batch_api, tmp_path):
    emulator, url = batch_api
    emulator.step_seconds = 3.0
    run_dir = tmp_path / "run"
    kill_once_submitted(cli_args(url, run_dir, 3), run_dir)
    stopped = cli("jobs", "stop", str(run_dir), "--base-url", url)
    assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stderr
    batch = next(iter(emulator.batches.values()))
    deadline = time.time() + 30
    while batch["status"] != "cancelled" and time.time() < deadline:
        time.sleep(0.05)
    assert batch["status"] == "cancelled"
    answered = batch["request_counts"]["completed"]  # a cancel can land after some lines were answered
    assert answered < 3 * 2
    # as documented: the requests a cancel kept from running are error-file lines with code batch_cancelled
    never_ran = [json.loads(line) for line in emulator.contents[batch["error_file_id"]].decode().splitlines()]
    assert never_ran
    assert {(line["response"], line["error"]["code"]) for line in never_ran} == {(None, "batch_cancelled")}
    emulator.step_seconds = 0.02
    # the stop is respected: what was answered, nothing resubmitted
    collected = cli("jobs", "collect", str(run_dir), "--base-url", url)
    assert collected.returncode == 2 and "--resubmit" in collected.stderr and len(emulator.batches) == 1
    assert len(stored_rows(run_dir)) < 3 * 4
    collected = cli("jobs", "collect", "--resubmit", str(run_dir), "--base-url", url)
    assert collected.returncode == 0 and "SC@3" in collected.stdout, collected.stderr
    assert len(stored_rows(run_dir)) == 3 * 4 and len(emulator.batches) == 2


def test_emulator_validates_lines_like_the_batch_api(batch_api):
    emulator, url = batch_api
    client = openai.OpenAI(base_url=url)
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
             {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
             {"custom_id": "b", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}},
             {"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"model": "m"}}]
    data = ("\n".join(json.dumps(line) for line in lines) + "\nnot json\n").encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    while batch.status not in ("failed", "completed"):
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("duplicate_custom_id", 2), ("invalid_method", 3), ("mismatched_endpoint", 4), ("invalid_json_line", 5)]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="x", default_headers={"Authorization": ""}).batches.retrieve("b")
    valid = client.files.create(file=("ok.jsonl", (json.dumps(lines[0]) + "\n").encode()), purpose="batch")
    second = client.batches.create(input_file_id=valid.id, endpoint="/v1/chat/completions", completion_window="24h")
    listed = [b.id for b in client.batches.list(limit=1)]  # cursor pages of one, newest first
    assert listed == [second.id, batch.id]


def test_a_batch_holds_at_most_50000_requests(monkeypatch):
    from selfconsistency.backends.base import GenerationRequest
    from selfconsistency.backends.batch_plan import split_jobs
    from selfconsistency.prompts import PromptFormat, build_prompt
    from selfconsistency.sampling import SamplingParams

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    service = OpenAIBatchJobs(BackendConfig(model="gpt-4o-mini",
                                            options=OpenAIBatchOptions(base_url="http://127.0.0.1:9/v1")))
    prompt = build_prompt("How many?", (), PromptFormat.chat)
    requests = [GenerationRequest(f"q{i}", 0.0, 0, prompt, SamplingParams(temperature=0.0)) for i in range(50_001)]
    jobs = split_jobs(service.pack(requests), service.quotas)
    assert [len(job) for job in jobs] == [25_001, 25_000]  # two even batches, not 50,000 + 1


def test_another_data_file_never_reattaches_to_another_runs_batch(batch_api, tmp_path):
    """The second run crashed around its create call (job left 'creating'): the batch search by job key must
    not find the first run's batch, made for other questions at the same positions."""
    from selfconsistency.testing.bedrock_emulator import generated_text, output_seed

    emulator, url = batch_api
    run_experiment(batch_config(url), tmp_path / "first")
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(GSM8K_TEST.read_text().splitlines()[100:106]) + "\n")
    second = batch_config(url, data=str(other))
    task = second.get_task()
    requests = plan_requests(second, task, second.load(task))
    with SampleStore(tmp_path / "second") as store:
        backend_config = BackendConfig(model="gpt-4o-mini", job_state=store, settings_hash=second.settings_hash(task),
                                       options=OpenAIBatchOptions(base_url=url, poll_seconds=0.02))
        runner = BatchJobRunner(OpenAIBatchJobs(backend_config), backend_config, store)
        records = runner.service.pack(requests)
        store.update_job(runner._plan_job(records)["job_key"], status="creating")
        generations = list(flatten(runner.generate(requests)))
    assert len(emulator.batches) == 2 and len(generations) == len(requests)
    expected = {(q.question_id, q.temperature, q.path_index):
                generated_text(output_seed(r.record_id, r.body), i).strip()
                for r in records for i, q in enumerate(r.requests)}
    assert all(g.text == expected[(g.request.question_id, g.request.temperature, g.request.path_index)]
               for g in generations)


def test_lines_refused_with_a_4xx_are_stored_and_never_resubmitted(batch_api, tmp_path):
    emulator, url = batch_api
    emulator.faults = Faults(bad_input="James decides to run 3 sprints")  # question 3's text
    run_dir = tmp_path / "run"
    for _ in range(2):  # neither this run nor a rerun sends them again (greedy + 2 x (8 + 2) paths: 5 records)
        with pytest.raises(BackendError, match=r"5 records were refused .*400 invalid_prompt"):
            run_experiment(batch_config(url), run_dir)
        assert len(emulator.batches) == 1
    assert len(stored_rows(run_dir)) == 6 * 21 - 21
    with SampleStore(run_dir, create=False) as store:
        errors = store.record_errors()
    assert {(e["code"], e["message"], e["retryable"]) for e in errors} == {("400 invalid_prompt",
                                                                            "emulated invalid prompt", 0)}


def test_unreadable_output_lines_are_failed_records_and_a_provider_speaking_another_format_is_not_paid_twice(
        batch_api, tmp_path):
    emulator, url = batch_api
    emulator.faults = Faults(malformed_lines=2)  # a few broken lines (one not JSON, one without a body): sent again
    proc = cli(*cli_args(url, tmp_path / "few", 6))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(stored_rows(tmp_path / "few")) == 6 * 4 and len(emulator.batches) == 2
    assert "2 output lines unreadable" in proc.stderr

    emulator.batches.clear()
    emulator.faults = Faults(malformed_lines=10_000)  # every line: the same records would come back the same
    run_dir = tmp_path / "all"
    proc = cli(*cli_args(url, run_dir, 6))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "malformed" in errors[0] and "--resubmit" in errors[0]
    assert len(emulator.batches) == 1 and stored_rows(run_dir) == []
    emulator.faults = Faults()
    collected = cli("jobs", "collect", "--resubmit", str(run_dir), "--base-url", url)
    assert collected.returncode == 0, collected.stderr
    assert len(stored_rows(run_dir)) == 6 * 4 and len(emulator.batches) == 2


@pytest.mark.parametrize("garble", GARBLES)
def test_output_in_another_shape_is_never_bought_again_nor_filed_under_foreign_ids(batch_api, tmp_path, garble):
    """Foreign or non-string custom_ids, too few choices, list contents, a file as one JSON array: most of
    the job is unreadable, so its records wait for `jobs collect --resubmit` (one batch bought, not four)."""
    emulator, url = batch_api
    emulator.faults = Faults(garble=garble)
    run_dir = tmp_path / "run"
    proc = cli(*cli_args(url, run_dir, 4))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--resubmit" in errors[0] and len(emulator.batches) == 1
    assert len(stored_rows(run_dir)) == (4 if garble == "fewer_choices" else 0)  # greedy asks one choice: it came
    sent = {json.loads(line)["custom_id"] for batch in emulator.batches.values()
            for line in emulator.contents[batch["input_file_id"]].decode().splitlines()}
    with sqlite3.connect(run_dir / "samples.sqlite") as db:
        filed = {row[0] for row in db.execute("SELECT record_id FROM record_errors")}
    assert filed <= sent and filed  # every failure under an id we sent, none under "None" or "...x"


def test_a_cap_under_a_cent_is_shown_as_given(batch_api, tmp_path):
    emulator, url = batch_api
    proc = cli(*cli_args(url, tmp_path / "run", 2), "--max-cost", "0.0001")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "above --max-cost $0.0001;" in errors[0] and not emulator.batches
    assert "the worst case $0.000" in errors[0] and "the worst case $0.00 " not in errors[0]  # digits a cent hides


def test_result_lines_holding_unicode_line_separators_are_read_whole():
    """An answer may carry U+2028 or U+0085 unescaped; str.splitlines cut such a line in pieces."""
    from selfconsistency.backends.openai_batch import file_lines

    answer = {"custom_id": "r1", "response": {"status_code": 200, "body": {"choices": [
        {"index": 0, "message": {"content": "a\u2028b\x85c The answer is 3."}}]}}}
    text = json.dumps(answer, ensure_ascii=False) + "\n" + json.dumps({**answer, "custom_id": "r2"}) + "\n"
    assert file_lines(text) == [answer, {**answer, "custom_id": "r2"}]
    assert file_lines("[1, 2]\nNaN\n") == [{"_unreadable": True, "_ids": []}, {"_unreadable": True, "_ids": []}]
