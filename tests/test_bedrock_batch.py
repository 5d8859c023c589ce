"""The bedrock-batch backend end to end: boto3's real clients against the emulator (Bedrock control
plane and runtime) and a moto server (S3), over loopback HTTP, with faults injected."""

import json
import subprocess
import sys
import time

import boto3
import pytest

from conftest import GSM8K_TEST, cli, load_results, stored_rows, submitted_jobs
from selfconsistency.backends.base import BackendError
from selfconsistency.backends.batch_plan import pack
from selfconsistency.backends.bedrock_batch import bedrock_line
from selfconsistency.backends.bedrock_bodies import ADAPTERS
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.bedrock_emulator import Faults

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP, seconds each

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"


def batch_config(model, bucket, **overrides):
    return RunSettings(**{"data": str(GSM8K_TEST), "limit": 20, "paths": 6, "temperatures": (0.5, 0.7),
                        "backend": "bedrock-batch", "model": model, "bucket": bucket, "role_arn": ROLE,
                        "create_bucket": True, "poll_seconds": 0.02, **overrides})


@pytest.mark.parametrize("model,records_per_question", [
    ("cohere.command-text-v14", 5),  # greedy + 2 x (5 + 1) packed generations
    ("anthropic.claude-3-haiku-20240307-v1:0", 13),  # one record per path
])
def test_every_path_stored_once_despite_faults(aws, tmp_path, model, records_per_question):
    aws.faults = Faults(fail_jobs=1, record_error_rate=0.1, throttle_every=7)
    run_dir = tmp_path / "run"
    run_experiment(batch_config(model, f"bucket-{records_per_question}"), run_dir)
    rows = stored_rows(run_dir)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == 20 * 13 and len({r[:3] for r in rows}) == 260
    with SampleStore(run_dir, create=False) as store:
        jobs = store.jobs("bedrock-batch")
    first = jobs[0]
    assert first["status"] == "collected" and len(first["records"]) == 20 * records_per_question
    assert any(job["manifest"] and job["manifest"]["errorRecordCount"] > 0 for job in jobs)
    assert len(aws.jobs) == len(jobs) >= 2  # the failed job was followed by another; nothing created twice
    emulated = list(aws.jobs.values())
    assert emulated[0]["status"] == "Failed"
    results = write_report(run_dir)
    reported = results["batch_jobs"]
    assert len(reported) == len(jobs) and reported[0]["records"] == 20 * records_per_question
    assert all(job["runtime"]["seconds"] is not None and job["runtime"]["seconds"] >= 0 for job in reported)
    assert sum(job["paths"] for job in reported) >= 260
    if model.startswith("cohere"):  # priced in the packaged table: the manifest's tokens at batch prices
        collected = [job for job in reported if job["input_tokens"]]
        assert collected and all(job["cost_usd"] > 0 for job in collected)
    assert "batch job" in (run_dir / "results.md").read_text()
    assert (run_dir / "batch_runtime.png").read_bytes()[:4] == b"\x89PNG"


def test_small_plans_are_refused_with_advice(aws, tmp_path):
    with pytest.raises(BackendError, match="--backend bedrock"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-small", limit=2), tmp_path / "run")


def test_killed_cli_reattaches_instead_of_resubmitting(aws, tmp_path):
    aws.step_seconds = 1.0  # jobs stay in flight long enough to be killed
    run_dir = tmp_path / "run"
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "20", "--paths", "6", "--temperatures", "0.5,0.7",
            "--backend", "bedrock-batch", "--model", "anthropic.claude-3-haiku-20240307-v1:0", "--bucket",
            "bucket-kill", "--role-arn", ROLE, "--create-bucket", "--poll-seconds", "0.1", "--run-dir", str(run_dir),
            "--quiet"]

    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args])
    deadline = time.time() + 60
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(aws.jobs) == 1 and stored_rows(run_dir) == []
    aws.step_seconds = 0.02
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert len(aws.jobs) == 1  # reattached: no second paid job
    assert len(stored_rows(run_dir)) == 260


def test_max_cost_below_the_estimate_submits_nothing(aws, tmp_path):
    from selfconsistency.backends.base import BudgetExceeded

    run_dir = tmp_path / "run"
    with pytest.raises(BudgetExceeded, match="nothing was submitted"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-cost", max_cost=0.01), run_dir)
    assert aws.jobs == {} and stored_rows(run_dir) == []
    s3 = boto3.client("s3")
    assert "bucket-cost" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # not even uploaded
    run_experiment(batch_config("cohere.command-text-v14", "bucket-cost", max_cost=50.0), run_dir)
    assert len(stored_rows(run_dir)) == 260


def run_args(run_dir, model, bucket, *extra):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "20", "--paths", "6", "--temperatures", "0.5,0.7",
            "--backend", "bedrock-batch", "--model", model, "--bucket", bucket, "--role-arn", ROLE,
            "--create-bucket", "--poll-seconds", "0.05", "--run-dir", str(run_dir), "--quiet", *extra]


def test_jobs_stop_is_respected_by_the_live_run_and_collect_resubmits_only_when_asked(aws, tmp_path):
    aws.step_seconds = 3.0
    run_dir = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-m", "selfconsistency",
                             *run_args(run_dir, "cohere.command-text-v14", "bucket-jobs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.05)
    listed = cli("jobs", "list")
    assert listed.returncode == 0 and "sc-" in listed.stdout
    status = cli("jobs", "status", str(run_dir))
    assert status.returncode == 0 and "records" in status.stdout
    stopped = cli("jobs", "stop", str(run_dir))
    assert stopped.returncode == 0 and "stopping" in stopped.stdout
    aws.step_seconds = 0.02
    _, stderr = live.communicate(timeout=60)
    last = stderr.strip().splitlines()[-1]
    assert live.returncode == 2 and "stopped" in last and "--resubmit" in last and "Traceback" not in stderr
    (first,) = aws.jobs.values()  # the live run submitted no replacement
    assert first["status"] == "Stopped"
    with SampleStore(run_dir, create=False) as store:
        unwanted = [e for e in store.record_errors() if e["code"] == "stopped"]
    assert len(unwanted) == 20 * 5  # every record of the stopped job, kept as not wanted
    collected = cli("jobs", "collect", str(run_dir))  # collects, resubmits nothing
    assert collected.returncode == 2 and "--resubmit" in collected.stderr and len(aws.jobs) == 1
    resubmitted = cli("jobs", "collect", "--resubmit", str(run_dir))
    assert resubmitted.returncode == 0 and "SC@6" in resubmitted.stdout, resubmitted.stderr
    assert len(aws.jobs) == 2 and len(stored_rows(run_dir)) == 260
    nothing = cli("jobs", "stop", str(run_dir))
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout, nothing.stderr


def test_two_run_directories_with_the_same_settings_never_share_a_job(aws, tmp_path):
    """Stopping one must not stop the other: each run directory's jobs are its own (another idempotency
    token, another S3 location), while a rerun in the same directory still reattaches."""
    config = batch_config(CLAUDE, "bucket-twins")
    run_experiment(config, tmp_path / "a")
    run_experiment(config, tmp_path / "b")
    assert len(aws.jobs) == 2
    assert len({job["clientRequestToken"] for job in aws.jobs.values()}) == 2
    assert len({job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] for job in aws.jobs.values()}) == 2
    run_experiment(config.model_copy(update={"paths": 6}), tmp_path / "a")
    assert len(aws.jobs) == 2 and len(stored_rows(tmp_path / "a")) == len(stored_rows(tmp_path / "b")) == 260


def test_jobs_queue_under_the_in_flight_quota(aws, tmp_path):
    from selfconsistency.backends.base import BackendConfig, flatten
    from selfconsistency.backends.bedrock_batch import BedrockBatchBackend, BedrockBatchOptions
    from selfconsistency.experiment import plan_requests

    aws.step_seconds = 0.05
    config = batch_config("anthropic.claude-3-haiku-20240307-v1:0", "bucket-quota", limit=8)
    task = config.get_task()
    requests = plan_requests(config, task, config.load(task))  # 8 x 13 = 104 records
    with SampleStore(tmp_path / "run") as store:
        backend = BedrockBatchBackend(BackendConfig(model=config.model, job_state=store, options=BedrockBatchOptions(
            bucket="bucket-quota", role_arn=ROLE, create_bucket=True, poll_seconds=0.02, min_records_per_job=10,
            max_records_per_job=20, max_jobs_in_flight=2)))
        generations = list(flatten(backend.generate(requests)))
    assert len(generations) == 104 and len(aws.jobs) == 6  # 104 records in jobs of at most 20
    assert aws.most_in_flight == 2


def test_token_budget_and_cumulative_cost_checked_before_each_round_of_jobs(aws, tmp_path):
    from selfconsistency.backends.base import BudgetExceeded

    run_dir = tmp_path / "run"
    with pytest.raises(BudgetExceeded, match="--max-tokens-total"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-tok", max_tokens_total=1000), run_dir)
    assert aws.jobs == {}
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"cohere.command-text-v14": {"on_demand": [1.5, 2.0]}}))  # x1000: visible sums
    run_experiment(batch_config("cohere.command-text-v14", "bucket-tok", paths=10, prices_file=str(prices)), run_dir)
    spent = sum(job["cost_usd"] for job in write_report(run_dir)["batch_jobs"])
    assert spent > 0
    # 5 more paths per temperature (40 records, on demand): their estimate alone fits, not with the spending
    more = batch_config("cohere.command-text-v14", "bucket-tok", paths=15, prices_file=str(prices))
    task = more.get_task()
    new = [r for r in plan_requests(more, task, more.load(task)) if r.path_index >= 10]
    estimate = sum(len(json.dumps(rec.body)) // 4 * 1.5 / 1000 + len(rec.requests) * 256 * 2.0 / 1000
                   for rec in pack(new, 5, ADAPTERS["cohere-command"].request, bedrock_line))
    with pytest.raises(BudgetExceeded, match="spent"):
        run_experiment(more.model_copy(update={"max_cost": estimate + spent / 2}), run_dir)
    assert len(stored_rows(run_dir)) == 20 * 21
    run_experiment(more.model_copy(update={"max_cost": estimate + spent + 1}), run_dir)
    assert len(stored_rows(run_dir)) == 20 * 31


CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def other_questions(tmp_path, start=100):
    """Another GSM8K data file: the same task and settings, other questions at the same positions."""
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(GSM8K_TEST.read_text().splitlines()[start: start + 20]) + "\n")
    return other


def expected_texts(config):
    """Each path's text as the emulator answers the run's own request body."""
    from selfconsistency.testing.bedrock_emulator import generated_text, output_seed

    task = config.get_task()
    adapter = ADAPTERS["anthropic-claude"]
    records = pack(plan_requests(config, task, config.load(task)), adapter.max_generations, adapter.request,
                   bedrock_line)
    return {(q.question_id, q.temperature, q.path_index): generated_text(output_seed(r.record_id, r.body), i).strip()
            for r in records for i, q in enumerate(r.requests)}


def test_another_data_file_in_another_run_dir_gets_its_own_answers(aws, tmp_path):
    run_experiment(batch_config(CLAUDE, "bucket-two"), tmp_path / "first")
    second = batch_config(CLAUDE, "bucket-two", data=str(other_questions(tmp_path)))
    run_experiment(second, tmp_path / "second")
    assert len(aws.jobs) == 2  # the second run's records made their own job, not the first run's
    expected = expected_texts(second)
    rows = stored_rows(tmp_path / "second")
    assert len(rows) == 260 and all(text.strip() == expected[(qid, t, i)] for qid, t, i, text, _, _ in rows)


def test_answers_echoing_another_request_are_refused(aws, tmp_path):
    import dataclasses

    from selfconsistency.backends.base import BackendConfig
    from selfconsistency.backends.bedrock_batch import BedrockBatchOptions, BedrockJobs

    config = batch_config(CLAUDE, "bucket-echo")
    run_experiment(config, tmp_path / "run")
    with SampleStore(tmp_path / "run", create=False) as store:
        (job,) = store.jobs()
    task = config.get_task()
    service = BedrockJobs(BackendConfig(model=CLAUDE, options=BedrockBatchOptions(bucket="bucket-echo", role_arn=ROLE)))
    records = service.pack(plan_requests(config, task, config.load(task)))
    same = service.results(job, {r.record_id: r for r in records})
    assert len(same.outputs) == 260 and not same.mismatched
    # the same ids, other bodies: what an id derived from positions alone allowed
    tampered = {r.record_id: dataclasses.replace(r, body={**r.body, "max_tokens": 7}) for r in records}
    refused = service.results(job, tampered)
    assert refused.outputs == {} and len(refused.mismatched) == 260


def test_a_kill_between_the_paths_of_a_record_leaves_whole_records_and_a_rerun_pays_nothing_twice(aws, tmp_path):
    run_dir = tmp_path / "run"
    config = batch_config("cohere.command-text-v14", "bucket-atomic")
    script = ("import os, signal, sys\n"
              "from selfconsistency.experiment import run_experiment\n"
              "from selfconsistency.settings import RunSettings\n"
              "def on_path(g):\n"
              "    if g.request.temperature > 0 and g.request.path_index == 1:\n"  # the 2nd path of a 5-path record
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "run_experiment(RunSettings.model_validate_json(sys.argv[1]), sys.argv[2], on_path=on_path)\n")
    killed = subprocess.run([sys.executable, "-c", script, config.model_dump_json(), str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    kept = {}
    for qid, temperature, index, *_ in stored_rows(run_dir):
        kept.setdefault((qid, temperature), []).append(index)
    assert kept and all(indexes in ([0], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [5]) for indexes in kept.values())
    resumed = cli(*run_args(run_dir, "cohere.command-text-v14", "bucket-atomic", "--limit", "20", "--paths", "6"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(aws.jobs) == 1 and not aws.runtime_calls  # the job's output was collected: nothing paid twice
    assert len(stored_rows(run_dir)) == 260


def test_records_refused_for_bad_input_are_stored_with_their_error_and_never_resubmitted(aws, tmp_path):
    aws.faults = Faults(bad_input="James decides to run 3 sprints")  # question 3's text
    run_dir = tmp_path / "run"
    config = batch_config(CLAUDE, "bucket-bad")
    with pytest.raises(BackendError, match=r"13 records were refused .*400 \(bad request"):
        run_experiment(config, run_dir)
    rerun = cli(*run_args(run_dir, CLAUDE, "bucket-bad"))  # a rerun does not start more rounds for them either
    assert rerun.returncode == 2 and rerun.stderr.count("\n") == 1 and "13 records were refused" in rerun.stderr
    assert len(aws.jobs) == 1 and not aws.runtime_calls
    assert load_results(run_dir)["questions"] == 19  # the report covers the questions that are complete
    assert len(stored_rows(run_dir)) == 260 - 13
    with SampleStore(run_dir, create=False) as store:
        errors = store.record_errors()
    assert len(errors) == 13 and {(e["code"], e["retryable"]) for e in errors} == {("400", 0)}
    status = cli("jobs", "status", str(run_dir))
    assert status.returncode == 0 and "not resubmitted, by code: 400" in status.stdout, status.stdout
    (job,) = write_report(run_dir)["batch_jobs"]
    assert job["paths"] == 260 and job["paths_collected"] == 260 - 13 and job["records_answered"] == 260 - 13


def test_a_token_cap_counts_the_job_a_crashed_run_left_in_flight(aws, tmp_path):
    from selfconsistency.backends.base import BackendConfig, BudgetExceeded
    from selfconsistency.backends.batch_jobs import BatchJobRunner
    from selfconsistency.backends.bedrock_batch import BedrockBatchOptions, BedrockJobs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = batch_config(CLAUDE, "bucket-cap", greedy=False, temperatures=(0.5,), max_tokens=8)
    task = first.get_task()
    with SampleStore(run_dir) as store:
        backend_config = BackendConfig(model=CLAUDE, job_state=store, options=BedrockBatchOptions(
            bucket="bucket-cap", role_arn=ROLE, create_bucket=True, poll_seconds=0.02))
        crashed = BatchJobRunner(BedrockJobs(backend_config), backend_config, store)
        records = crashed.service.pack(plan_requests(first, task, first.load(task)))
        crashed._submit(crashed._plan_job(records), {r.record_id: r for r in records})  # then the process died
    estimate = sum(len(json.dumps(r.body)) // 4 + 8 for r in records)
    cap = int(1.5 * estimate)  # room for one temperature's records, not two
    more = first.model_copy(update={"temperatures": (0.5, 0.7), "max_tokens_total": cap})
    with pytest.raises(BudgetExceeded, match="--max-tokens-total"):
        run_experiment(more, run_dir)
    with SampleStore(run_dir, create=False) as store:
        billed = sum(j["manifest"]["inputTokenCount"] + j["manifest"]["outputTokenCount"]
                     for j in store.jobs() if j["manifest"])
    assert len(aws.jobs) == 1 and len(stored_rows(run_dir)) == 120  # the paid job was collected first
    assert 0 < billed <= cap


def test_a_cost_cap_counts_on_demand_spend(aws, tmp_path):
    from selfconsistency.backends.base import BudgetExceeded

    prices = tmp_path / "prices.json"  # x1000: visible sums; batch at half price
    prices.write_text(json.dumps({"cohere.command-text-v14": {"on_demand": [1.5, 2.0], "batch": [0.75, 1.0]}}))
    run_dir = tmp_path / "run"

    def config(paths, **extra):
        return batch_config("cohere.command-text-v14", "bucket-spend", paths=paths, max_tokens=8,
                            prices_file=str(prices), **extra)

    run_experiment(config(10), run_dir)  # 100 records: one batch job
    run_experiment(config(15), run_dir)  # 40 more records: on demand
    spent = write_report(run_dir)["spend"]
    assert spent["batch_usd"] > 0 and spent["on_demand_usd"] > 0 and spent["on_demand_paths"] == 200
    assert [job["paths_collected"] for job in write_report(run_dir)["batch_jobs"]] == [20 * 21]
    with SampleStore(run_dir, create=False) as store:  # each setting's cost: batch paths at batch prices,
        tokens = {False: [0, 0], True: [0, 0]}         # the on-demand remainder at on-demand prices
        keys = store.on_demand_keys()
        for p in store.paths():
            tokens[(p.question_id, p.temperature, p.path_index) in keys][0] += p.prompt_tokens
            tokens[(p.question_id, p.temperature, p.path_index) in keys][1] += p.completion_tokens
    results = write_report(run_dir)
    settings = [results["greedy"], *results["sampled"]]
    assert len(keys) == 200 and sum(s["cost_usd"] for s in settings) == pytest.approx(
        (tokens[False][0] * 0.75 + tokens[False][1] * 1.0 + tokens[True][0] * 1.5 + tokens[True][1] * 2.0) / 1000)
    more = config(20)
    task = more.get_task()
    new = [r for r in plan_requests(more, task, more.load(task)) if r.path_index >= 15]
    estimate = sum(len(json.dumps(rec.body)) // 4 * 1.5 / 1000 + len(rec.requests) * 8 * 2.0 / 1000
                   for rec in pack(new, 5, ADAPTERS["cohere-command"].request, bedrock_line))
    cap = spent["batch_usd"] + estimate + spent["on_demand_usd"] / 2  # fits the batch spend, not the on-demand too
    with pytest.raises(BudgetExceeded, match="--max-cost"):
        run_experiment(more.model_copy(update={"max_cost": cap}), run_dir)
    assert write_report(run_dir)["spend"]["total_usd"] <= cap
    assert len(stored_rows(run_dir)) == 20 * 31


def test_converse_is_part_of_the_runs_identity(tmp_path):
    from selfconsistency.store import StoreMismatch

    plain = batch_config(CLAUDE, "bucket-id")
    task = plain.get_task()
    from selfconsistency.store import StoredPath

    with SampleStore(tmp_path) as store:
        store.bind_config(plain.identity(task), plain.model_dump(mode="json"))
        store.add_path(StoredPath("test-00000", 0.7, 0, 1, "The answer is 5.", "5", 10, 5, 0.1, "stop", None,
                                  "bedrock-batch", CLAUDE))  # a store holding paths is no longer rebound
        converse = plain.model_copy(update={"converse": True})  # another request body: another run
        with pytest.raises(StoreMismatch, match="converse"):
            store.bind_config(converse.identity(task), converse.model_dump(mode="json"))
