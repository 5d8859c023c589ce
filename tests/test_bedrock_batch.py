"""The bedrock-batch backend end to end: boto3's real clients against the emulator (Bedrock control
plane and runtime) and a moto server (S3), over loopback HTTP, with faults injected."""

import json
import sqlite3
import subprocess
import sys
import threading
import time

import boto3
import pytest

from conftest import GSM8K_TEST, cli, stored_rows
from selfconsistency.backends.batch_plan import pack
from selfconsistency.backends.bedrock_batch import bedrock_line
from selfconsistency.backends.bedrock_bodies import ADAPTERS
from selfconsistency.bedrock_emulator import Faults
from selfconsistency.experiment import RunConfig, plan_requests, run_experiment
from selfconsistency.extract import NumberExtractor
from selfconsistency.report import write_report
from selfconsistency.store import SampleStore

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"


def batch_config(model, bucket, **overrides):
    return RunConfig(**{"data": str(GSM8K_TEST), "limit": 20, "paths": 6, "temperatures": (0.5, 0.7),
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
    rows = stored_rows(run_dir)
    assert len(rows) == 20 * 13 and len({r[:3] for r in rows}) == 260
    extract = NumberExtractor()
    assert all(answer == extract(text) and answer is not None for _, _, _, text, answer, _ in rows)
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
    for path in run_dir.iterdir():  # AWS secrets never reach the run directory
        assert b"testing-secret-value" not in path.read_bytes(), path


def test_small_plans_are_refused_with_advice(aws, tmp_path):
    with pytest.raises(Exception, match="--backend bedrock"):
        run_experiment(batch_config("cohere.command-text-v14", "bucket-small", limit=2), tmp_path / "run")


def test_killed_cli_reattaches_instead_of_resubmitting(aws, tmp_path):
    aws.step_seconds = 1.0  # jobs stay in flight long enough to be killed
    run_dir = tmp_path / "run"
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "20", "--paths", "6", "--temperatures", "0.5,0.7",
            "--backend", "bedrock-batch", "--model", "anthropic.claude-3-haiku-20240307-v1:0", "--bucket",
            "bucket-kill", "--role-arn", ROLE, "--create-bucket", "--poll-seconds", "0.1", "--run-dir", str(run_dir),
            "--quiet"]

    def submitted():
        db = sqlite3.connect(run_dir / "samples.sqlite")
        try:
            return db.execute("SELECT count(*) FROM jobs WHERE arn IS NOT NULL").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args])
    deadline = time.time() + 60
    while time.time() < deadline and not ((run_dir / "samples.sqlite").exists() and submitted()):
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


def test_jobs_commands(aws, tmp_path):
    aws.step_seconds = 1.0
    run_dir = tmp_path / "run"
    config = batch_config("cohere.command-text-v14", "bucket-jobs", poll_seconds=0.05)
    worker = threading.Thread(target=run_experiment, args=(config, run_dir))
    worker.start()
    deadline = time.time() + 30
    while time.time() < deadline and not aws.jobs:
        time.sleep(0.05)
    listed = cli("jobs", "list")
    assert listed.returncode == 0 and "sc-" in listed.stdout
    status = cli("jobs", "status", str(run_dir))
    assert status.returncode == 0 and "records" in status.stdout
    stopped = cli("jobs", "stop", str(run_dir))
    assert stopped.returncode == 0 and "stopping" in stopped.stdout
    aws.step_seconds = 0.02
    worker.join(timeout=60)
    first, *follow_ups = aws.jobs.values()
    assert first["status"] == "Stopped" and len(follow_ups) == 1  # the stopped job's records went round again
    assert len(stored_rows(run_dir)) == 260
    collected = cli("jobs", "collect", str(run_dir))  # nothing left: reattaches, creates nothing, reports
    assert collected.returncode == 0 and "SC@6" in collected.stdout, collected.stderr
    assert len(aws.jobs) == 2


def test_jobs_queue_under_the_in_flight_quota(aws, tmp_path):
    from selfconsistency.backends.base import BackendConfig
    from selfconsistency.backends.bedrock_batch import BedrockBatchBackend
    from selfconsistency.experiment import plan_requests

    aws.step_seconds = 0.05
    config = batch_config("anthropic.claude-3-haiku-20240307-v1:0", "bucket-quota", limit=8)
    task = config.get_task()
    requests = plan_requests(config, task, config.load(task))  # 8 x 13 = 104 records
    (tmp_path / "run").mkdir()
    backend = BedrockBatchBackend(BackendConfig(
        model=config.model, bucket="bucket-quota", role_arn=ROLE, create_bucket=True, poll_seconds=0.02,
        run_dir=str(tmp_path / "run"), min_records_per_job=10, max_records_per_job=20, max_jobs_in_flight=2))
    generations = list(backend.generate(requests))
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
