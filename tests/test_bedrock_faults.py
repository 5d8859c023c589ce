"""What AWS can answer a Bedrock batch run, end to end: boto3's real clients against the emulator (Bedrock
control plane and runtime, botocore's error shapes) and a moto server (S3), over loopback HTTP. Each fault
ends in one line and exit code 2 (or is waited out), keeps what was stored, and a rerun finishes."""

import socket
import threading
import time

import pytest

from conftest import GSM8K_TEST, cli, run_cli, stored_rows, submitted_jobs
from selfconsistency.experiment import run_experiment
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.testing.bedrock_emulator import Emulator, EmulatorServer, Faults

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP, seconds each

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def aws(s3_endpoint, monkeypatch):
    """As conftest's `aws`, served by an EmulatorServer that can be taken down and brought back."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
                       "AWS_MAX_ATTEMPTS": "2"}.items():
        monkeypatch.setenv(key, value)
    emulator = Emulator(boto3.client("s3"), step_seconds=0.02)
    server = EmulatorServer(emulator)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
    emulator.server = server
    yield emulator
    server.down()


def run_args(run_dir, bucket, *extra, model=CLAUDE, limit=10):
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", str(limit), "--paths", "6", "--temperatures",
            "0.5,0.7", "--backend", "bedrock-batch", "--model", model, "--bucket", bucket, "--role-arn", ROLE,
            "--poll-seconds", "0.05", "--run-dir", str(run_dir), "--quiet", *extra]


def cli_with(env: dict, *args):
    """The CLI with these environment variables changed (None: unset)."""
    return run_cli(*args, env=env)


def one_line_error(proc, *needles):
    """Exit code 2, one error line naming what to do, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.02)
    assert condition()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_missing_bucket_then_created(aws, tmp_path):
    run_dir = tmp_path / "run"
    missing = run_cli(*run_args(run_dir, "no-such-bucket-here"))
    one_line_error(missing, "S3 bucket no-such-bucket-here does not exist", "--create-bucket")
    assert aws.jobs == {}
    finished = run_cli(*run_args(run_dir, "no-such-bucket-here", "--create-bucket"))
    assert finished.returncode == 0, finished.stderr
    assert len(stored_rows(run_dir)) == 10 * 13


def test_bucket_given_as_an_s3_uri(aws, tmp_path):
    run_dir = tmp_path / "run"
    finished = run_cli(*run_args(run_dir, "s3://uri-bucket/", "--create-bucket"))
    assert finished.returncode == 0, finished.stderr
    job = next(iter(aws.jobs.values()))
    assert job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].startswith("s3://uri-bucket/selfconsistency/input/")
    with_path = run_cli(*run_args(tmp_path / "other", "s3://uri-bucket/my/prefix", "--create-bucket"))
    one_line_error(with_path, "--bucket uri-bucket --s3-prefix my/prefix")


def test_access_denied_keeps_the_run(aws, tmp_path):
    aws.faults = Faults(access_denied=True)
    run_dir = tmp_path / "run"
    denied = run_cli(*run_args(run_dir, "denied-bucket", "--create-bucket"))
    one_line_error(denied, "AWS denied access (creating the batch job)", "role-policy")
    aws.faults = Faults()
    finished = run_cli(*run_args(run_dir, "denied-bucket", "--create-bucket"))
    assert finished.returncode == 0, finished.stderr
    assert len(aws.jobs) == 1 and len(stored_rows(run_dir)) == 130


def test_s3_unreachable(aws, tmp_path):
    run_dir = tmp_path / "run"
    port = closed_port()
    down = cli_with({"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"},
                    *run_args(run_dir, "s3-down", "--create-bucket"))
    one_line_error(down, f"cannot reach http://127.0.0.1:{port}", "run the same command again")
    assert aws.jobs == {}
    finished = run_cli(*run_args(run_dir, "s3-down", "--create-bucket"))
    assert finished.returncode == 0, finished.stderr
    assert len(aws.jobs) == 1 and len(stored_rows(run_dir)) == 130


def test_control_plane_down_mid_run_then_back(aws, tmp_path):
    aws.step_seconds = 1.0
    run_dir = tmp_path / "run"
    args = run_args(run_dir, "cp-down", "--create-bucket")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(proc=cli(*args)))
    worker.start()
    wait_for(lambda: (run_dir / "samples.sqlite").exists() and submitted_jobs(run_dir) == 1)
    aws.server.down()
    worker.join(timeout=120)
    one_line_error(outcome["proc"], f"cannot reach {aws.server.url}", "checking batch job")
    aws.server.up()
    aws.step_seconds = 0.02
    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    assert len(aws.jobs) == 1 and len(stored_rows(run_dir)) == 130  # reattached: the job was not paid twice


def test_job_unknown_to_the_region_or_gone(aws, tmp_path):
    aws.step_seconds = 2.0  # the job stays in flight while another CLI looks at it
    run_dir = tmp_path / "run"
    args = run_args(run_dir, "gone-bucket", "--create-bucket")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(proc=cli(*args)))
    worker.start()
    wait_for(lambda: (run_dir / "samples.sqlite").exists() and submitted_jobs(run_dir) == 1)
    # the run holds its directory's lock: another region is tried through the jobs command
    other_region = cli_with({"AWS_DEFAULT_REGION": "eu-west-1"}, "jobs", "status", str(run_dir))
    one_line_error(other_region, "was made in us-east-1", "--region us-east-1")
    aws.step_seconds = 0.02
    worker.join(timeout=60)
    assert outcome["proc"].returncode == 0, outcome["proc"].stderr
    # a second run of more paths: its job vanishes from Bedrock
    more = [*args[:args.index("--paths") + 1], "12", *args[args.index("--paths") + 2:]]  # 120 records more
    outcome.clear()
    aws.step_seconds = 2.0
    worker = threading.Thread(target=lambda: outcome.update(proc=cli(*more)))
    worker.start()
    wait_for(lambda: submitted_jobs(run_dir) == 2)
    with aws.lock:
        second = list(aws.jobs)[1]
        aws.jobs[second]["status"] = "Stopping"  # its thread ends; the job is then forgotten by the service
        del aws.jobs[second]
    worker.join(timeout=60)
    line = one_line_error(outcome["proc"], "does not know batch job", "jobs forget")
    stored = len(stored_rows(run_dir))
    assert stored == 130
    key = line.split("jobs forget ")[1].split()[1].rstrip("'")
    forgot = run_cli("jobs", "forget", str(run_dir), key)
    assert forgot.returncode == 0, forgot.stderr
    aws.step_seconds = 0.02
    finished = run_cli(*more)
    assert finished.returncode == 0, finished.stderr
    assert len(stored_rows(run_dir)) == 10 * 25


@pytest.mark.parametrize("backend", ["bedrock", "bedrock-batch"])
def test_unknown_model_family(aws, tmp_path, backend):
    batch = ["--bucket", "b-unknown", "--role-arn", ROLE] if backend == "bedrock-batch" else []  # its options only
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "2", "--backend", backend, "--model",
                   "acme.wonder-v1:0", *batch, "--run-dir", str(tmp_path / "run"))
    one_line_error(proc, "no request format known for Bedrock model 'acme.wonder-v1:0'", "--converse")


def test_jobs_list_retries_throttling_and_explains_denial(aws, tmp_path):
    run_experiment(RunSettings(data=str(GSM8K_TEST), limit=10, paths=6, temperatures=(0.5, 0.7),
                             backend="bedrock-batch", model=CLAUDE, bucket="list-bucket", role_arn=ROLE,
                             create_bucket=True, poll_seconds=0.02, seed=3), tmp_path / "run")
    aws.faults = Faults(throttle_next=3)  # botocore's default of 3 attempts would give up
    listed = cli_with({"AWS_MAX_ATTEMPTS": None}, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Completed" in listed.stdout and aws.faults.throttle_next == 0
    aws.faults = Faults(access_denied=True)
    one_line_error(run_cli("jobs", "list"), "AWS denied access (listing Bedrock batch jobs)")
    one_line_error(run_cli("jobs", "status", str(tmp_path / "run")), "AWS denied access (checking batch job")


def test_two_runs_of_one_model_queue_on_the_quota(aws, tmp_path, caplog):
    aws.faults = Faults(in_flight_quota=1)
    aws.step_seconds = 0.5  # a job is in flight for 2 s: the other run's create meets it
    configs = [RunSettings(data=str(GSM8K_TEST), limit=10, paths=6, temperatures=(0.5, 0.7),
                         backend="bedrock-batch", model=CLAUDE, bucket="quota-bucket", role_arn=ROLE,
                         create_bucket=True, poll_seconds=0.02, seed=seed) for seed in (1, 2)]
    errors = []

    def run(config, run_dir):
        try:
            run_experiment(config, run_dir)
        except BaseException as exc:  # reported below: the test needs both runs to finish
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(config, tmp_path / f"run{i}")) for i, config in enumerate(configs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert all(len(stored_rows(tmp_path / f"run{i}")) == 130 for i in range(2))
    assert len(aws.jobs) == 2 and aws.most_in_flight == 1  # one at a time: the second waited for the first
    assert any("quota of batch jobs in flight" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    for i in range(2):
        with SampleStore(tmp_path / f"run{i}", create=False) as store:
            assert [j["status"] for j in store.jobs()] == ["collected"]


def test_converse_leftovers_use_the_converse_api(aws, tmp_path):
    aws.faults = Faults(record_error_rate=0.1)  # failed records come back as a remainder too small for a job
    run_dir = tmp_path / "run"
    run_experiment(RunSettings(data=str(GSM8K_TEST), limit=10, paths=6, temperatures=(0.5, 0.7),
                             backend="bedrock-batch", model=CLAUDE, converse=True, bucket="conv-bucket",
                             role_arn=ROLE, create_bucket=True, poll_seconds=0.02), run_dir)
    assert len(stored_rows(run_dir)) == 130
    assert aws.runtime_calls and set(aws.runtime_calls) == {("converse", CLAUDE)}
    assert next(iter(aws.jobs.values()))["modelInvocationType"] == "Converse"


def test_cross_region_profile_with_timeout_and_tags(aws, tmp_path):
    profile = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    aws.faults = Faults(record_error_rate=0.1)
    run_dir = tmp_path / "run"
    proc = run_cli(*run_args(run_dir, "profile-bucket", "--create-bucket", "--timeout-hours", "72", "--tag",
                         "project=selfconsistency", "--tag", "team=research", model=profile))
    assert proc.returncode == 0, proc.stderr
    assert len(stored_rows(run_dir)) == 130
    job = next(iter(aws.jobs.values()))
    assert job["modelId"] == profile and job["timeoutDurationInHours"] == 72
    assert job["_tags"] == [{"key": "project", "value": "selfconsistency"}, {"key": "team", "value": "research"}]
    assert aws.runtime_calls and {model for _, model in aws.runtime_calls} == {profile}  # leftovers: same id
    assert "batch estimate" in proc.stderr and "no price known" not in proc.stderr  # priced as its base model
    too_long = run_cli(*run_args(tmp_path / "other", "profile-bucket", "--timeout-hours", "200", model=profile))
    assert too_long.returncode == 2 and "timeout-hours" in too_long.stderr


def test_application_inference_profile(aws, tmp_path):
    """Bedrock names the model an application profile runs (GetInferenceProfile): its format and price."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    aws.profiles[arn] = "anthropic.claude-3-5-haiku-20241022-v1:0"
    aws.faults = Faults(record_error_rate=0.1)
    run_dir = tmp_path / "run"
    proc = run_cli(*run_args(run_dir, "app-profile", "--create-bucket", "--max-cost", "5", model=arn))
    assert proc.returncode == 0, proc.stderr
    assert "batch estimate" in proc.stderr  # priced as the model the profile names: --max-cost holds
    assert len(stored_rows(run_dir)) == 130
    assert next(iter(aws.jobs.values()))["modelId"] == arn
    assert aws.runtime_calls and {model for _, model in aws.runtime_calls} == {arn}


def test_adaptive_stopping_waves_reach_the_batch_minimum(aws, tmp_path):
    """30 questions: the greedy round alone (30 records) would be refused; with the first sampled round,
    grown to 100 records, it is one job; later rounds are grown while that costs no more than on demand."""
    run_dir = tmp_path / "run"
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "30", "--paths", "8", "--round-size", "2",
               "--stop", "beta:0.95", "--backend", "bedrock-batch", "--model", CLAUDE, "--bucket", "waves",
               "--role-arn", ROLE, "--create-bucket", "--poll-seconds", "0.02", "--run-dir", str(run_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = stored_rows(run_dir)
    assert sum(1 for r in rows if r[1] == 0.0) == 30
    sampled = [r for r in rows if r[1] == 0.7]
    first_job = next(iter(aws.jobs.values()))
    assert first_job["totalRecordCount"] >= 100  # greedy and the first sampled round together
    assert len(aws.jobs) >= 2 and "wave grown" in proc.stderr
    assert len(aws.runtime_calls) <= len(sampled) // 4  # at most the last, small wave went on demand

