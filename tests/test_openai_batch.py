"""The openai-batch backend end to end: the real `openai` client against the Files + Batch API emulator
over loopback HTTP, with failures injected (failed request lines, expired and failed batches, throttling)."""

import json
import time

import openai
import pytest

from conftest import GSM8K_TEST, OPENAI_KEY, run_cli, stored_rows
from selfconsistency.backends.base import BackendConfig, BackendError, flatten
from selfconsistency.backends.batch_jobs import MAX_ROUNDS, BatchJobRunner
from selfconsistency.backends.openai_batch import OpenAIBatchJobs, OpenAIBatchOptions
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.openai_batch_emulator import Faults

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP, seconds each


def batch_config(url, **overrides):
    return RunSettings(**{"data": str(GSM8K_TEST), "limit": 6, "paths": 10, "temperatures": (0.5, 0.7),
                        "backend": "openai-batch", "base_url": url, "model": "gpt-4o-mini", "prompt_format": "chat",
                        "poll_seconds": 0.02, **overrides})


def test_a_batch_failing_validation_is_reported_once_then_resumed(batch_api, tmp_path):
    """OpenAI fails a batch only at validation: the same input would fail again, so it is not sent again
    round after round (it was MAX_ROUNDS batches); once what it named is fixed, the same command finishes."""
    emulator, url = batch_api
    emulator.faults = Faults(fail_batches=MAX_ROUNDS)
    run_dir = tmp_path / "run"
    with pytest.raises(BackendError, match="refused batch job .* as a whole: .*emulated validation failure"):
        run_experiment(batch_config(url, limit=2, paths=3), run_dir)
    assert len(emulator.batches) == 1 and stored_rows(run_dir) == []
    emulator.faults = Faults()
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


def test_a_cap_under_a_cent_is_shown_as_given(batch_api, tmp_path):
    emulator, url = batch_api
    proc = run_cli(*cli_args(url, tmp_path / "run", 2), "--max-cost", "0.0001")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "--max-cost $0.0001 cannot pay" in errors[0] and not emulator.batches  # refused before any upload
    assert "of its jobs, $0.000" in errors[0] and "of its jobs, $0.00 " not in errors[0]  # digits a cent hides


def test_result_lines_holding_unicode_line_separators_are_read_whole():
    """An answer may carry U+2028 or U+0085 unescaped; str.splitlines cut such a line in pieces."""
    from selfconsistency.backends.openai_batch import file_lines

    answer = {"custom_id": "r1", "response": {"status_code": 200, "body": {"choices": [
        {"index": 0, "message": {"content": "a\u2028b\x85c The answer is 3."}}]}}}
    text = json.dumps(answer, ensure_ascii=False) + "\n" + json.dumps({**answer, "custom_id": "r2"}) + "\n"
    assert file_lines(text) == [answer, {**answer, "custom_id": "r2"}]
    assert file_lines("[1, 2]\nNaN\n") == [{"_unreadable": True, "_ids": []}, {"_unreadable": True, "_ids": []}]
