"""Bedrock's part of "every billed record is collected and counted" (the provider-generic part is in
test_batch_contract.py): a changed option after a create the run never heard back from, a resumed adaptive
run, inference profiles priced as the model Bedrock names, Command R's body, on-demand refusals, one-line
errors, S3 paths in errors, reported spend and the providers' token counts. boto3's real clients against
the Bedrock emulator and moto's S3 server over loopback HTTP; the emulator's billing log is the bill."""

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import GSM8K_TEST, run_cli, stored_rows, submitted_jobs
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.bedrock_emulator import Faults

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP; some runs are processes to kill

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"
COHERE = "cohere.command-text-v14"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"


def run_args(run_dir, bucket, *extra, model=CLAUDE, limit=10, paths=6, temperatures="0.5,0.7"):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", str(limit), "--paths", str(paths),
            "--temperatures", temperatures, "--backend", "bedrock-batch", "--model", model, "--bucket", bucket,
            "--role-arn", ROLE, "--create-bucket", "--poll-seconds", "0.05", "--run-dir", str(run_dir), "--quiet",
            *extra]


def one_line_error(proc, *needles: str) -> str:
    """Exit code 2, one error line (beside the run's log lines) naming what to do, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def cli_with(env: dict, *args):
    """The CLI as a process with these environment variables changed (None: unset)."""
    changed = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "selfconsistency", *args], capture_output=True, text=True,
                          timeout=600, env={k: v for k, v in changed.items() if v is not None})


def config(bucket, **overrides):
    return RunSettings(**{"data": str(GSM8K_TEST), "limit": 10, "paths": 6, "temperatures": (0.5, 0.7),
                          "backend": "bedrock-batch", "model": CLAUDE, "bucket": bucket, "role_arn": ROLE,
                          "create_bucket": True, "poll_seconds": 0.02, **overrides})


def kill_during_create(aws, args):
    """Run the CLI until Bedrock has made its job, then kill it before it hears back (the create reply waits)."""
    aws.faults = Faults(create_reply_delay_s=60)
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not aws.jobs:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert len(aws.jobs) == 1


def assert_every_billed_record_collected_and_counted(aws, run_dir):
    """Every record the emulator billed is a record of one of the run's jobs whose paths are all stored, and
    the run's ledger counts exactly the billed tokens."""
    with SampleStore(run_dir, create=False) as store:
        jobs = {job["job_id"].rsplit("/", 1)[-1]: job for job in store.jobs() if job["job_id"]}
        stored = store.stored_keys()
        calls = store.spend()
        manifests = [job["manifest"] for job in jobs.values() if job["manifest"]]
    for bill in aws.billing:
        if bill["job"] is not None:
            paths = jobs[bill["job"]]["records"][bill["record"]]
            assert all(tuple(path) in stored for path in paths), bill
    billed = aws.billed()
    assert sum(m["inputTokenCount"] for m in manifests) + sum(c["input_tokens"] for c in calls) == \
        billed["input_tokens"]
    assert sum(m["outputTokenCount"] for m in manifests) + sum(c["output_tokens"] for c in calls) == \
        billed["output_tokens"]


# -- a job the run never heard back from --------------------------------------------------------------

def test_a_changed_option_after_an_unanswered_create_adopts_the_job_that_was_made(aws, tmp_path):
    """Killed during its create call, resumed with another --timeout-hours: the job Bedrock made (and bills)
    is found and collected as it was made, not re-sent into a ConflictException nor bought again."""
    run_dir = tmp_path / "run"
    kill_during_create(aws, run_args(run_dir, "created-bucket"))
    aws.faults = Faults()
    resumed = run_cli(*run_args(run_dir, "created-bucket", "--timeout-hours", "48", "--tag", "team=x"))
    assert resumed.returncode == 0, resumed.stderr
    (job,) = aws.jobs.values()
    assert job["timeoutDurationInHours"] == 24 and job["_tags"] == []  # as it was made
    assert len(stored_rows(run_dir)) == 130
    assert_every_billed_record_collected_and_counted(aws, run_dir)
    assert write_report(run_dir)["spend"]["total_usd"] > 0  # not "$0.00 spent so far"


def test_a_conflict_names_the_option_that_changed_and_how_to_keep_the_job(aws, tmp_path):
    """While Bedrock's listing has not caught up, the job cannot be found: the create meets ConflictException,
    and the one-line error says which option changed (both values) and how to collect the job made."""
    run_dir = tmp_path / "run"
    kill_during_create(aws, run_args(run_dir, "conflict-bucket"))
    aws.faults = Faults(list_lag_s=600)
    conflict = run_cli(*run_args(run_dir, "conflict-bucket", "--timeout-hours", "48"))
    line = one_line_error(conflict, "--timeout-hours: 24 when it was made, 48 now", "--timeout-hours 24")
    assert "fix that and run again" not in line and len(aws.jobs) == 1
    aws.faults = Faults()
    kept = run_cli(*run_args(run_dir, "conflict-bucket", "--timeout-hours", "48"))  # now listed: adopted
    assert kept.returncode == 0, kept.stderr
    assert len(aws.jobs) == 1 and len(stored_rows(run_dir)) == 130
    assert_every_billed_record_collected_and_counted(aws, run_dir)


def test_a_job_the_provider_never_made_is_created_with_todays_options(aws, tmp_path):
    """Left 'creating' by a process killed before Bedrock had it: created, once, with today's options."""
    from selfconsistency.backends import create_job_service
    from selfconsistency.backends.base import flatten
    from selfconsistency.backends.batch_jobs import BatchJobRunner
    from selfconsistency.experiment import plan_requests

    earlier, today = config("never-bucket"), config("never-bucket", timeout_hours=72)
    task = today.get_task()
    requests = plan_requests(today, task, today.load(task))
    with SampleStore(tmp_path / "run") as store:
        planned_with = earlier.backend_config(job_state=store, settings_hash=earlier.settings_hash(task))
        planner = BatchJobRunner(create_job_service(earlier.backend, planned_with), planned_with, store)
        job = planner._plan_job(planner.service.pack(requests))
        store.update_job(job["job_key"], status="creating")
        assert store.jobs()[0]["request"]["timeoutDurationInHours"] == 24
        backend_config = today.backend_config(job_state=store, settings_hash=today.settings_hash(task))
        runner = BatchJobRunner(create_job_service(today.backend, backend_config), backend_config, store)
        assert len(list(flatten(runner.generate(requests)))) == 130
        (stored_job,) = store.jobs()
    (made,) = aws.jobs.values()
    assert made["timeoutDurationInHours"] == 72 and stored_job["request"]["timeoutDurationInHours"] == 72


# -- growth decisions do not depend on a restart ------------------------------------------------------------

def test_a_resumed_adaptive_run_grows_its_waves_as_an_uninterrupted_one(aws, tmp_path):
    """The first wave is the run's, as its store tells, not the process's: a run stopped after its first job
    and resumed buys what an uninterrupted run buys (it grew its next wave into a job with no cost check)."""
    settings = config("waves-bucket", limit=40, paths=16, round_size=1, stop="beta:0.9", temperatures=(0.7,))

    def bill():
        return len(aws.jobs), len(aws.runtime_calls), aws.billed()

    run_experiment(settings, tmp_path / "whole")
    jobs, calls, billed = bill()
    whole = len(stored_rows(tmp_path / "whole"))

    class Stopped(Exception):
        pass

    seen = []

    def stop_after_the_first_job(generation):
        seen.append(generation)
        if len(seen) == 130:  # the first job is collected; the waves after it go on demand
            raise Stopped

    with pytest.raises(Stopped):
        run_experiment(settings, tmp_path / "resumed", on_path=stop_after_the_first_job)
    run_experiment(settings, tmp_path / "resumed")  # a new process would start here: nothing it remembers
    jobs_after, calls_after, billed_after = bill()
    assert (jobs_after - jobs, calls_after - calls) == (jobs, calls)
    assert {k: billed_after[k] - billed[k] for k in billed} == billed
    assert len(stored_rows(tmp_path / "resumed")) == whole


# -- an application inference profile is priced as the model Bedrock names -----------------------------

def test_an_application_profile_is_priced_as_the_model_it_runs_not_as_base_model_says(aws, tmp_path):
    """A profile wrapping Claude 3.5 Haiku, told --base-model Claude 3 Haiku: priced (and capped) as 3.5 Haiku,
    the model GetInferenceProfile names, and the report, read without AWS, prices it so too."""
    aws.profiles[PROFILE] = CLAUDE_35
    run_dir = tmp_path / "run"
    capped = run_cli(*run_args(run_dir, "profile-bucket", "--base-model", CLAUDE, "--max-cost", "0.06", model=PROFILE))
    line = one_line_error(capped, "above --max-cost $0.06")
    assert aws.jobs == {} and "is not what inference profile" in capped.stderr  # 3 Haiku's price would pass it
    finished = run_cli(*run_args(run_dir, "profile-bucket", "--base-model", CLAUDE, model=PROFILE))
    assert finished.returncode == 0, finished.stderr
    results = write_report(run_dir)
    billed = aws.billed()
    from selfconsistency.costs import PriceTable

    price = PriceTable().price(CLAUDE_35, batch=True)
    assert results["spend"]["total_usd"] == pytest.approx(price.cost(billed["input_tokens"], billed["output_tokens"]),
                                                          abs=1e-6)
    with SampleStore.open_readonly(run_dir) as store:
        assert store.priced_as() == {"model": CLAUDE_35, "how": f"inference profile {PROFILE}"}
    assert "nothing was submitted" in line


def test_a_profile_the_caller_may_not_read_takes_base_model_on_trust_and_says_so(aws, tmp_path):
    aws.profiles[PROFILE] = CLAUDE_35
    aws.faults = Faults(profile_access_denied=True)
    run_dir = tmp_path / "run"
    one_line_error(run_cli(*run_args(run_dir, "denied-profile", model=PROFILE)), "bedrock:GetInferenceProfile",
                   "--base-model")
    trusted = run_cli(*run_args(run_dir, "denied-profile", "--base-model", CLAUDE_35, model=PROFILE))
    assert trusted.returncode == 0, trusted.stderr
    assert "taken on trust" in trusted.stderr and len(stored_rows(run_dir)) == 130


# -- Command R, on-demand refusals, validation ----------------------------------------------------------

def test_command_r_gets_its_own_body_and_every_record_is_answered(aws, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(*run_args(run_dir, "command-r", model="cohere.command-r-v1:0", limit=10))
    assert proc.returncode == 0, proc.stderr
    assert len(stored_rows(run_dir)) == 130
    with SampleStore.open_readonly(run_dir) as store:
        assert store.record_errors() == []
        assert all(p.answer is not None for p in store.paths())


def test_an_on_demand_refusal_is_stored_as_a_refused_record_and_the_run_goes_on(aws, tmp_path):
    """A remainder record the model refuses (400) is stored with its error, as a job's refused records are:
    the other calls go on, and a rerun neither sends it again nor stops at it."""
    run_dir = tmp_path / "run"
    run_experiment(config("od-bucket", model=COHERE, limit=20, paths=10), run_dir)  # 100 records: a job
    aws.faults = Faults(bad_input="James decides to run 3 sprints")  # question 3's text
    more = run_cli(*run_args(run_dir, "od-bucket", model=COHERE, limit=20, paths=15))  # 40 records on demand
    one_line_error(more, "2 records were refused", "400")
    calls = len(aws.runtime_calls)
    assert calls == 40 - 2 and len(stored_rows(run_dir)) == 20 * 31 - 10  # every other record answered, stored
    rerun = run_cli(*run_args(run_dir, "od-bucket", model=COHERE, limit=20, paths=15))
    one_line_error(rerun, "2 records were refused")
    assert len(aws.runtime_calls) == calls  # not sent again
    with SampleStore.open_readonly(run_dir) as store:
        assert {(e["code"], e["retryable"]) for e in store.record_errors()} == {("400", 0)}


def test_the_on_demand_backend_stores_a_refusal_and_answers_the_rest(aws, tmp_path):
    aws.faults = Faults(bad_input="James decides to run 3 sprints")
    run_dir = tmp_path / "run"
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "4", "--paths", "2", "--backend", "bedrock",
            "--model", CLAUDE, "--run-dir", str(run_dir), "--quiet"]
    one_line_error(run_cli(*args), "3 records were refused", "400")
    calls = len(aws.runtime_calls)
    assert len(stored_rows(run_dir)) == 3 * 3
    one_line_error(run_cli(*args), "3 records were refused")
    assert len(aws.runtime_calls) == calls


def test_a_job_below_the_models_record_minimum_is_not_created_four_times(aws, tmp_path):
    """min_records_per_job set below the model's quota: Bedrock fails the job at validation; one job, and
    one line saying what Bedrock said and what to change."""
    aws.min_records_per_job = 200
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match="as a whole: Validation failed: the input has 130 records, below the minimum"):
        run_experiment(config("small-bucket"), run_dir)
    assert len(aws.jobs) == 1


# -- one-line errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, extra, said", [
    ({"AWS_DEFAULT_REGION": None, "AWS_REGION": None}, (), "no AWS region: give --region"),
    ({"AWS_PROFILE": "no-such-profile"}, (), "AWS profile 'no-such-profile' not found"),
    ({}, ("--region", "us east 1"), "--region 'us east 1' is not an AWS region name"),
])
@pytest.mark.parametrize("backend", ["bedrock-batch", "bedrock"])
def test_a_missing_region_an_unknown_profile_or_a_malformed_region_is_one_line(aws, tmp_path, env, extra, said,
                                                                               backend):
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "10", "--backend", backend, "--model", CLAUDE,
            "--run-dir", str(tmp_path / "run"), "--quiet", *extra]
    if backend == "bedrock-batch":
        args += ["--bucket", "region-bucket", "--role-arn", ROLE]
    one_line_error(cli_with(env, *args), said)  # a process: boto3's default session reads AWS_PROFILE once
    one_line_error(cli_with(env, "jobs", "list", *extra), said)


def test_s3_paths_in_errors_name_the_job_key(aws, tmp_path):
    """The job key (40 hex digits) is a name, not a secret: an error about the input shows where it is."""
    run_dir = tmp_path / "run"
    args = run_args(run_dir, f"absent-{time.time_ns()}")  # moto's server lives for the session: a new name
    line = one_line_error(run_cli(*[a for a in args if a != "--create-bucket"]))
    with SampleStore.open_readonly(run_dir) as store:
        (job,) = store.jobs()
    assert job["input_uri"] in line and "[redacted]" not in line


# -- what the reports count ------------------------------------------------------------------------------

def test_an_adaptive_runs_setting_costs_count_every_stored_path(aws, tmp_path):
    """Each setting's cost is its stored paths' (each question's, however many it took), not the fewest any
    question took times the questions: the settings add up to the paths' cost, and results.md shows the
    ledger's total beside them, equal to the bill."""
    run_dir = tmp_path / "run"
    run_experiment(config("adaptive-bucket", limit=40, paths=16, round_size=1, stop="beta:0.9",
                          temperatures=(0.7,)), run_dir)
    results = write_report(run_dir)
    settings = [results["greedy"], *results["sampled"]]
    with SampleStore.open_readonly(run_dir) as store:
        keys = store.on_demand_keys()
        paths = list(store.paths(text=False))
    batch, on_demand = config("adaptive-bucket").price(), config("adaptive-bucket").price(on_demand=True)
    cost = sum((on_demand if (p.question_id, p.temperature, p.path_index) in keys else batch)
               .cost(p.prompt_tokens, p.completion_tokens) for p in paths)
    assert sum(s["paths"] for s in settings) == len(paths)
    assert sum(s["cost_usd"] for s in settings) == pytest.approx(cost, abs=1e-5)
    billed = aws.billed()
    assert results["spend"]["tokens"] == billed["input_tokens"] + billed["output_tokens"]
    table = (run_dir / "results.md").read_text()
    assert f"| total | {results['spend']['total_usd']:.4f} |" in table
    assert f"| on-demand calls | {results['spend']['on_demand_usd']:.4f} |" in table


def test_cohere_on_demand_token_counts_are_the_providers(aws, tmp_path):
    """Cohere Command's body has no token counts: InvokeModel's billing headers give them."""
    run_dir = tmp_path / "run"
    run_experiment(RunSettings(data=str(GSM8K_TEST), limit=3, paths=5, backend="bedrock", model=COHERE), run_dir)
    billed = aws.billed()
    with SampleStore.open_readonly(run_dir) as store:
        paths = list(store.paths(text=False))
    assert sum(p.prompt_tokens for p in paths) == billed["input_tokens"]
    assert sum(p.completion_tokens for p in paths) == billed["output_tokens"]


def test_jobs_status_lists_a_job_the_provider_does_not_have_yet(aws, tmp_path):
    run_dir = tmp_path / "run"
    kill_during_create(aws, run_args(run_dir, "status-bucket"))
    aws.faults = Faults(list_lag_s=600)  # not listed yet
    status = run_cli("jobs", "status", str(run_dir))
    assert status.returncode == 0 and "creating" in status.stdout and "not listed by the provider yet" in status.stdout
    with sqlite3.connect(run_dir / "samples.sqlite") as db:
        assert db.execute("SELECT status, job_id FROM jobs").fetchall() == [("creating", None)]
    assert not submitted_jobs(run_dir)
