"""The bedrock-batch backend end to end: boto3's real clients against the emulator (Bedrock control
plane and runtime) and a moto server (S3), over loopback HTTP, with faults injected."""

import json
import subprocess
import sys

import boto3
import pytest

from conftest import GSM8K_TEST, run_cli, stored_rows
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


def test_packed_records_are_collected_and_priced_at_batch_prices(aws, tmp_path):
    """A model whose records pack several paths (Cohere: 5 generations a record); every path stored once
    under faults is the batch contract's (test_batch_contract.py, one record per path)."""
    aws.faults = Faults(record_error_rate=0.1)
    run_dir = tmp_path / "run"
    run_experiment(batch_config("cohere.command-text-v14", "bucket-packed"), run_dir)
    rows = stored_rows(run_dir)
    assert len(rows) == 20 * 13 and len({r[:3] for r in rows}) == 260
    with SampleStore(run_dir, create=False) as store:
        jobs = store.jobs("bedrock-batch")
    first = jobs[0]  # greedy + 2 x (5 + 1) packed generations: 5 records a question
    assert first["status"] == "collected" and len(first["records"]) == 20 * 5
    reported = write_report(run_dir)["batch_jobs"]
    assert len(reported) == len(jobs) and reported[0]["records"] == 20 * 5
    collected = [job for job in reported if job["input_tokens"]]  # priced in the packaged table: the
    assert collected and all(job["cost_usd"] > 0 for job in collected)  # manifest's tokens at batch prices


def test_small_plans_are_refused_with_advice(aws, tmp_path):
    with pytest.raises(BackendError, match="--backend bedrock"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-small", limit=2), tmp_path / "run")


def test_max_cost_below_the_estimate_submits_nothing(aws, tmp_path):
    from selfconsistency.tasks import DataError

    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match="cannot pay the worst case of its jobs"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-cost", max_cost=0.01), run_dir)
    assert aws.jobs == {} and not run_dir.exists()  # refused before the run directory
    s3 = boto3.client("s3")
    assert "bucket-cost" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # not even uploaded
    run_experiment(batch_config("cohere.command-text-v14", "bucket-cost", max_cost=50.0), run_dir)
    assert len(stored_rows(run_dir)) == 260


def run_args(run_dir, model, bucket, *extra):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "20", "--paths", "6", "--temperatures", "0.5,0.7",
            "--backend", "bedrock-batch", "--model", model, "--bucket", bucket, "--role-arn", ROLE,
            "--create-bucket", "--poll-seconds", "0.05", "--run-dir", str(run_dir), "--quiet", *extra]


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
    resumed = run_cli(*run_args(run_dir, "cohere.command-text-v14", "bucket-atomic", "--limit", "20", "--paths", "6"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(aws.jobs) == 1 and not aws.runtime_calls  # the job's output was collected: nothing paid twice
    assert len(stored_rows(run_dir)) == 260


def test_a_token_cap_counts_the_job_a_crashed_run_left_in_flight(aws, tmp_path):
    from selfconsistency.backends.base import BackendConfig, BudgetExceeded
    from selfconsistency.backends.batch_jobs import BatchJobRunner
    from selfconsistency.backends.bedrock_batch import BedrockBatchOptions, BedrockJobs
    from selfconsistency.runlock import prepare_run_dir

    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir)  # a run directory (its marker), as the crashed run had made it
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
