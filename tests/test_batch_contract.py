"""What every batch provider's backend keeps, end to end against its emulator over loopback HTTP (the
provider's real client library, the run's real store):

- every path is stored once, whatever the provider's faults (failed or expired jobs, failed records,
  throttling), and the report accounts for every job;
- a run killed once its job is submitted reattaches to that job: nothing is bought twice;
- `jobs stop` stops the job of a live run, which ends in one line; `jobs collect` then collects without
  resubmitting, and `jobs collect --resubmit` finishes the run;
- another data file never reattaches to another run's job, even after a crash around the create call;
- records the provider refuses for their own fault are stored with their error and never sent again;
- output lines that cannot be read are sent again when they are few, and when the whole output is
  unreadable or speaks another format the job is bought once: its records wait for `--resubmit`;
- a budgeted run sends the provider its budget of paths and not one more, in jobs (and, below a job's
  minimum, on demand); spent as --max-cost, its bill stays under the amount;

and every record the provider bills is collected and counted (its emulator's billing log against the run's
ledger and store):
- a run killed during its create call (the provider made the job, the run never heard back) finds and
  adopts that job: `jobs status` lists it, the resumed run collects it, nothing is bought twice;
- `jobs forget` asks the provider first: a job it still runs is refused (or stopped with --stop), a finished
  one is collected, and only a job it no longer has is forgotten;
- a run resumed with fewer paths after an interruption stores every path it paid for and buys nothing again;
- a job the provider refuses as a whole at validation is not sent again as it is: one line says what to change;
- results.md and report.html show what the ledger billed, batch and on demand, equal to the provider's bill.

The `provider` fixture is the one place that knows a provider: adding one (Anthropic's Message Batches)
is one class below and its name in PROVIDERS.
"""

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from conftest import GSM8K_TEST, load_results, run_cli, stored_rows, submitted_jobs
from selfconsistency.backends import create_job_service
from selfconsistency.backends.base import BackendError, flatten
from selfconsistency.backends.batch_jobs import BatchJobRunner
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore

pytestmark = pytest.mark.slow  # whole jobs through an emulator over HTTP; some runs are processes to kill

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"
REFUSED_QUESTION = "James decides to run 3 sprints"  # GSM8K test question 3's text


@dataclass
class Provider:
    """A batch provider as the contract sees it: its emulator, a run big enough for one job, and what the
    provider does that the contract checks (statuses, error codes, how it is told to break)."""

    emulator: Any
    settings: ClassVar[dict]  # RunSettings fields of the contract's run
    questions: ClassVar[int]
    records_per_question: ClassVar[int]  # records of one question in the contract's run
    refused_code: ClassVar[str]  # the stored code of a record refused for its own fault
    refused_message: ClassVar[str]  # and its stored message
    refused_said: ClassVar[str]  # how the run's one-line error names that code
    stopped_status: ClassVar[str]  # a stopped job's status at the provider
    in_flight_words: ClassVar[tuple[str, ...]]  # statuses of a job still running
    garbles: ClassVar[dict[str, str]]  # outputs in another format, each with words its error line says

    def __post_init__(self):
        pass

    @property
    def paths_per_question(self) -> int:
        return 1 + self.settings["paths"] * len(self.settings["temperatures"])

    @property
    def paths(self) -> int:
        return self.questions * self.paths_per_question

    def config(self, **overrides) -> RunSettings:
        return RunSettings(**{"data": str(GSM8K_TEST), "limit": self.questions, "poll_seconds": 0.02,
                            **self.settings, **overrides})

    def cli_args(self, run_dir, **overrides) -> list[str]:
        """`run` with the contract's settings as a user types them."""
        args = ["run", "gsm8k"]
        for key, value in {"data": str(GSM8K_TEST), "limit": self.questions, "poll_seconds": 0.05, **self.settings,
                           **overrides}.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not False:
                args += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
        return [*args, "--run-dir", str(run_dir), "--quiet"]

    def job_command(self, command: str, run_dir, *extra: str) -> list[str]:
        """`jobs COMMAND RUN_DIR`, with what the provider's job commands need named (its endpoint)."""
        return ["jobs", command, *extra, str(run_dir)]

    def jobs(self) -> list[dict]:
        """The provider's jobs, oldest first."""
        raise NotImplementedError

    def job_id(self, job: dict) -> str:
        raise NotImplementedError

    def status(self, job: dict) -> str:
        raise NotImplementedError

    def answered_records(self, job: dict) -> int:
        raise NotImplementedError

    def on_demand_calls(self) -> int:
        """Calls outside batch jobs (the remainder of a run too small for a job)."""
        return 0

    def break_jobs(self) -> None:
        """The first job fails (or expires) unanswered, some records fail retryably, some calls are throttled."""
        raise NotImplementedError

    def refuse(self, text: str) -> None:
        """Records holding `text` are refused for their own fault (a 400)."""
        raise NotImplementedError

    def unreadable(self, lines: int) -> None:
        """So many output lines of each job cannot be read."""
        raise NotImplementedError

    def garble(self, how: str) -> None:
        raise NotImplementedError

    def heal(self) -> None:
        self.emulator.faults = type(self.emulator.faults)()

    def delay_create(self, seconds: float) -> None:
        """The provider makes the job at once and answers the create call `seconds` later."""
        self.emulator.faults = type(self.emulator.faults)(create_reply_delay_s=seconds)

    def billed(self) -> dict[str, int]:
        """What the provider billed the run's jobs: records answered and their tokens."""
        billed = self.emulator.billed()
        return {key: billed[key] for key in ("records", "input_tokens", "output_tokens")}

    def refuse_whole_jobs(self, refuse: bool) -> None:
        """The provider's validation refuses (or accepts) every job as a whole."""
        raise NotImplementedError

    def answer_half(self) -> None:
        """The next job ends having answered about half of its records (partly completed, or expired)."""
        raise NotImplementedError

    def lose(self, job: dict) -> None:
        """The provider no longer has the job (another account, or gone)."""
        raise NotImplementedError

    def sent_ids(self) -> set[str]:
        """The record ids of every input line sent."""
        raise NotImplementedError

    def sent_paths(self) -> int:
        """Paths the provider was asked for, in jobs and on demand (the budget test counts them)."""
        raise NotImplementedError

    # provider-specific checks of a contract's run, beside the contract's own
    def check_broken_run(self, run_dir, results: dict) -> None:
        pass

    def check_live_commands(self, run_dir) -> None:
        pass

    def check_stopped(self, job: dict) -> None:
        pass

    def check_resent(self, proc) -> None:
        pass


class BedrockBatch(Provider):
    settings = {"backend": "bedrock-batch", "model": "anthropic.claude-3-haiku-20240307-v1:0", "paths": 6,
                "temperatures": (0.5, 0.7), "role_arn": ROLE, "create_bucket": True}  # one record per path
    questions = 20  # 260 records: a job needs 100
    records_per_question = 13
    refused_code, refused_said = "400", r"400 \(bad request"
    refused_message = "bad request: emulated malformed input"
    stopped_status = "Stopped"
    in_flight_words = ("Submitted", "Validating", "Scheduled", "InProgress")
    garbles = {"altered_echo": "260 records were refused", "suffix": "malformed", "list": "malformed"}

    def __post_init__(self):
        self.settings = {**self.settings, "bucket": f"contract-{uuid.uuid4().hex[:12]}"}

    def jobs(self):
        return list(self.emulator.jobs.values())

    def job_id(self, job):
        return job["jobArn"]

    def status(self, job):
        return job["status"]

    def answered_records(self, job):
        return job.get("processedRecordCount", 0)

    def on_demand_calls(self):
        return len(self.emulator.runtime_calls)

    def break_jobs(self):
        from selfconsistency.testing.bedrock_emulator import Faults

        self.emulator.faults = Faults(fail_jobs=1, record_error_rate=0.1, throttle_every=7)

    def refuse(self, text):
        from selfconsistency.testing.bedrock_emulator import Faults

        self.emulator.faults = Faults(bad_input=text)

    def unreadable(self, lines):
        from selfconsistency.testing.bedrock_emulator import Faults

        self.emulator.faults = Faults(malformed_lines=lines)

    def garble(self, how):
        from selfconsistency.testing.bedrock_emulator import Faults

        self.emulator.faults = Faults(altered_echo=True) if how == "altered_echo" else Faults(foreign_ids=how)

    def sent_ids(self):
        import boto3

        s3 = boto3.client("s3")
        ids = set()
        for job in self.jobs():
            uri = job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].removeprefix("s3://")
            bucket, key = uri.split("/", 1)
            text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            ids |= {json.loads(line)["recordId"] for line in text.splitlines() if line.strip()}
        return ids

    def sent_paths(self):
        return len(self.sent_ids()) + self.on_demand_calls()  # one path per record (Claude: no n)

    def refuse_whole_jobs(self, refuse):
        self.emulator.min_records_per_job = 10**6 if refuse else 1  # Bedrock's record quota, as validation sees it

    def answer_half(self):
        from selfconsistency.testing.bedrock_emulator import Faults

        self.emulator.faults = Faults(partial_jobs=1)

    def lose(self, job):
        with self.emulator.lock:
            job["status"] = "Stopping"  # its thread ends
            del self.emulator.jobs[job["jobArn"].rsplit("/", 1)[-1]]

    def check_broken_run(self, run_dir, results):
        assert self.jobs()[0]["status"] == "Failed"
        (first, *_) = results["batch_jobs"]
        assert first["records"] == self.questions * self.records_per_question
        assert "batch job" in (run_dir / "results.md").read_text()
        assert (run_dir / "batch_runtime.png").read_bytes()[:4] == b"\x89PNG"

    def check_live_commands(self, run_dir):
        listed = run_cli("jobs", "list")
        assert listed.returncode == 0 and "sc-" in listed.stdout, listed.stderr

    def check_resent(self, proc):
        assert self.on_demand_calls() and len(self.jobs()) == 1  # too few for a job: the broken ones on demand


class OpenAIBatch(Provider):
    settings = {"backend": "openai-batch", "model": "gpt-4o-mini", "prompt_format": "chat", "paths": 10,
                "temperatures": (0.5, 0.7)}
    questions = 6  # greedy + 2 x (8 + 2) paths as n-choice requests: 5 records a question
    records_per_question = 5
    refused_code, refused_said = "400 invalid_prompt", "400 invalid_prompt"
    refused_message = "emulated invalid prompt"
    stopped_status = "cancelled"
    in_flight_words = ("validating", "in_progress", "finalizing")
    garbles = {how: "--resubmit" for how in ("foreign_id", "list_id", "fewer_choices", "no_choices", "list_content",
                                             "array_file")}

    def __post_init__(self):
        self.emulator, self.url = self.emulator
        self.settings = {**self.settings, "base_url": self.url}

    def job_command(self, command, run_dir, *extra):
        # a key goes only to an endpoint the command names, never to one the run directory stored
        return ["jobs", command, *extra, str(run_dir), "--base-url", self.url]

    def jobs(self):
        return sorted(self.emulator.batches.values(), key=lambda b: b["_order"])

    def job_id(self, job):
        return job["id"]

    def status(self, job):
        return job["status"]

    def answered_records(self, job):
        return job["request_counts"]["completed"]

    def break_jobs(self):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(failed_lines=3, expire_batches=1, throttle_every=5)

    def refuse(self, text):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(bad_input=text)

    def unreadable(self, lines):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(malformed_lines=lines)

    def garble(self, how):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(garble=how)

    def sent_ids(self):
        return {json.loads(line)["custom_id"] for batch in self.jobs()
                for line in self.emulator.contents[batch["input_file_id"]].decode().splitlines()}

    def sent_paths(self):
        return sum(json.loads(line)["body"].get("n", 1) for batch in self.jobs()
                   for line in self.emulator.contents[batch["input_file_id"]].decode().splitlines())

    def check_broken_run(self, run_dir, results):
        first = self.jobs()[0]
        # 6 greedy requests + 6 x 2 temperatures x (8 + 2) paths as n-choice requests = 30 lines in the first
        assert first["status"] == "expired" and first["request_counts"]["total"] == 30
        assert all(b["status"] in ("expired", "completed") for b in self.jobs())
        line = json.loads(self.emulator.contents[first["input_file_id"]].decode().splitlines()[1])
        assert set(line) == {"custom_id", "method", "url", "body"} and line["url"] == "/v1/chat/completions"
        assert line["body"]["n"] == 8 and "top_k" not in line["body"] and line["body"]["logprobs"] is True
        with SampleStore(run_dir, create=False) as store:
            jobs = store.jobs("openai-batch")
            logprobs = [p.logprob_sum for p in store.paths()]
        # 3 failed lines, and the 15 requests the expired batch never ran (documented batch_expired lines)
        assert sum(j["manifest"]["errorRecordCount"] for j in jobs) == 3 + 15
        assert all(lp is not None and lp < 0 for lp in logprobs)  # the Batch API's log-probs reach the store
        for job, reported in zip(jobs, results["batch_jobs"], strict=True):  # tokens at the batch price (half)
            tokens = job["manifest"]["inputTokenCount"] * 0.075 + job["manifest"]["outputTokenCount"] * 0.3
            assert reported["cost_usd"] == pytest.approx(tokens / 1e6, abs=1e-6)
        for setting in results["sampled"]:  # and each setting's stored tokens at batch prices
            dollars = (setting["prompt_tokens"] * 0.075 + setting["completion_tokens"] * 0.3) / 1e6
            assert setting["cost_usd"] == pytest.approx(dollars, abs=1e-6) and dollars > 0
        assert "cost (USD)" in (run_dir / "results.md").read_text()

    def refuse_whole_jobs(self, refuse):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(fail_batches=10**6 if refuse else 0)  # OpenAI fails a batch at validation

    def lose(self, job):
        with self.emulator.lock:
            del self.emulator.batches[job["id"]]

    def answer_half(self):
        from selfconsistency.testing.openai_batch_emulator import Faults

        self.emulator.faults = Faults(expire_batches=1)

    def check_stopped(self, job):
        # as documented: the requests a cancel kept from running are error-file lines with code batch_cancelled
        never_ran = [json.loads(line) for line in self.emulator.contents[job["error_file_id"]].decode().splitlines()]
        assert never_ran
        assert {(line["response"], line["error"]["code"]) for line in never_ran} == {(None, "batch_cancelled")}

    def check_resent(self, proc):
        assert len(self.jobs()) == 2 and "2 output lines unreadable" in proc.stderr  # in a second batch


class AnthropicBatch(Provider):
    settings = {"backend": "anthropic-batch", "model": "claude-haiku-4-5", "paths": 6,
                "temperatures": (0.5, 0.7)}  # a request per path (no n): 13 a question
    questions = 6
    records_per_question = 13
    refused_code, refused_said = "invalid_request_error", "invalid_request_error"
    refused_message = "emulated: the prompt is refused"
    stopped_status = "ended"  # a canceled batch ends; its canceled results name what it never ran
    in_flight_words = ("in_progress", "canceling")
    garbles = {"foreign_id": "--resubmit", "list_id": "--resubmit"}

    def __post_init__(self):
        self.emulator, self.url = self.emulator  # reached through ANTHROPIC_BASE_URL, as the SDK reads it

    def jobs(self):
        return sorted(self.emulator.batches.values(), key=lambda b: b["_order"])

    def job_id(self, job):
        return job["id"]

    def status(self, job):
        return job["processing_status"]

    def answered_records(self, job):
        return job["request_counts"]["succeeded"]

    def on_demand_calls(self):
        return self.emulator.message_calls

    def break_jobs(self):
        from selfconsistency.testing.anthropic_emulator import Faults

        # half the first batch expires (39 records: a second batch), server errors and throttling besides
        self.emulator.faults = Faults(expire_batches=1, overloaded=2, api_errors=1, cut_results=1, throttle_every=7)

    def refuse(self, text):
        from selfconsistency.testing.anthropic_emulator import Faults

        self.emulator.faults = Faults(bad_input=text)

    def unreadable(self, lines):
        from selfconsistency.testing.anthropic_emulator import Faults

        self.emulator.faults = Faults(malformed_lines=lines)

    def garble(self, how):
        from selfconsistency.testing.anthropic_emulator import Faults

        self.emulator.faults = Faults(garble=how)

    def sent_ids(self):
        return {request["custom_id"] for batch in self.jobs() for request in batch["_requests"]}

    def sent_paths(self):
        return sum(len(batch["_requests"]) for batch in self.jobs()) + self.emulator.message_calls

    def check_broken_run(self, run_dir, results):
        first = self.jobs()[0]
        assert first["request_counts"]["expired"] == self.questions * self.records_per_question // 2
        assert all(b["_version"] == "2023-06-01" for b in self.jobs())  # the version that takes a temperature
        billed = sum(e["input"] + e["output"] for e in self.emulator.billed)  # every billed request, counted once
        assert results["spend"]["tokens"] == billed

    def check_stopped(self, job):
        assert job["request_counts"]["canceled"] > 0  # documented: what a cancel kept from running is `canceled`

    def billed(self):
        entries = list(self.emulator.billed)  # a request's cache writes and reads are the manifest's own keys
        return {"records": len(entries), "input_tokens": sum(e["input"] for e in entries),
                "output_tokens": sum(e["output"] for e in entries)}

    def refuse_whole_jobs(self, refuse):
        pytest.skip("the Message Batches API checks a batch when it is created: a refused create is one line")

    def answer_half(self):
        from selfconsistency.testing.anthropic_emulator import Faults

        self.emulator.faults = Faults(expire_batches=1)

    def lose(self, job):
        with self.emulator.lock:
            del self.emulator.batches[job["id"]]

    def check_resent(self, proc):
        assert self.on_demand_calls() and len(self.jobs()) == 1  # two records: below on_demand_below, on demand


PROVIDER_CLASSES = {"bedrock-batch": BedrockBatch, "openai-batch": OpenAIBatch, "anthropic-batch": AnthropicBatch}
PROVIDERS = list(PROVIDER_CLASSES)
EMULATOR_FIXTURES = {"bedrock-batch": "aws", "openai-batch": "batch_api", "anthropic-batch": "anthropic_api"}


@pytest.fixture(params=PROVIDERS)
def provider(request) -> Provider:
    return PROVIDER_CLASSES[request.param](request.getfixturevalue(EMULATOR_FIXTURES[request.param]))


def one_line_error(proc) -> str:
    """Exit code 2, one error line, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def kill_once_submitted(args, run_dir) -> None:
    """Start the CLI as a process and SIGKILL it as soon as its first job's id is stored."""
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.02)
    proc.kill()
    proc.wait()


def test_every_path_is_stored_once_despite_faults(provider, tmp_path):
    provider.break_jobs()
    run_dir = tmp_path / "run"
    run_experiment(provider.config(), run_dir)
    rows = stored_rows(run_dir)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == provider.paths and len({r[:3] for r in rows}) == provider.paths
    with SampleStore(run_dir, create=False) as store:
        jobs = store.jobs(provider.settings["backend"])
    assert len(provider.jobs()) == len(jobs) >= 2  # the broken job was followed by another; nothing made twice
    assert all(job["status"] == "collected" for job in jobs)
    assert len(jobs[0]["records"]) == provider.questions * provider.records_per_question  # the whole run
    assert any(job["manifest"] and job["manifest"]["errorRecordCount"] > 0 for job in jobs)
    results = write_report(run_dir)
    reported = results["batch_jobs"]
    assert len(reported) == len(jobs) and [job["status"] for job in reported] == ["collected"] * len(jobs)
    assert all(job["runtime"]["seconds"] is not None and job["runtime"]["seconds"] >= 0 for job in reported)
    assert sum(job["paths"] for job in reported) >= provider.paths
    provider.check_broken_run(run_dir, results)


def test_a_run_killed_once_its_job_is_submitted_reattaches_instead_of_resubmitting(provider, tmp_path):
    provider.emulator.step_seconds = 1.0  # the job stays in flight long enough to be killed and inspected
    run_dir = tmp_path / "run"
    args = provider.cli_args(run_dir)
    kill_once_submitted(args, run_dir)
    assert len(provider.jobs()) == 1 and stored_rows(run_dir) == []
    status = run_cli(*provider.job_command("status", run_dir))
    (job,) = provider.jobs()
    assert status.returncode == 0 and provider.job_id(job) in status.stdout, status.stderr
    assert any(word in status.stdout for word in (*provider.in_flight_words, "completed", "Completed"))
    provider.emulator.step_seconds = 0.02
    finished = run_cli(*args)  # reattaches to the job in flight
    assert finished.returncode == 0, finished.stderr
    assert len(provider.jobs()) == 1 and len(stored_rows(run_dir)) == provider.paths  # no second paid job


def test_jobs_stop_ends_the_live_run_and_collect_resubmits_only_when_asked(provider, tmp_path):
    provider.emulator.step_seconds = 2.0
    run_dir = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-m", "selfconsistency", *provider.cli_args(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.02)
    provider.check_live_commands(run_dir)
    status = run_cli(*provider.job_command("status", run_dir))
    assert status.returncode == 0 and "records" in status.stdout, status.stderr
    stopped = run_cli(*provider.job_command("stop", run_dir))
    assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stderr
    provider.emulator.step_seconds = 0.02
    _, stderr = live.communicate(timeout=60)
    last = stderr.strip().splitlines()[-1]
    assert live.returncode == 2 and "stopped" in last and "--resubmit" in last and "Traceback" not in stderr
    (job,) = provider.jobs()  # the live run submitted no replacement
    assert provider.status(job) == provider.stopped_status
    provider.check_stopped(job)
    records = provider.questions * provider.records_per_question
    answered = provider.answered_records(job)  # a stop can land after some records were answered
    assert answered < records
    with SampleStore(run_dir, create=False) as store:
        unwanted = [e for e in store.record_errors() if e["code"] == "stopped"]
    assert len(unwanted) == records - answered  # every record the stopped job left, kept as not wanted
    collected = run_cli(*provider.job_command("collect", run_dir))  # the stop is respected: nothing resubmitted
    assert collected.returncode == 2 and "--resubmit" in collected.stderr and len(provider.jobs()) == 1
    assert len(stored_rows(run_dir)) < provider.paths
    resubmitted = run_cli(*provider.job_command("collect", run_dir, "--resubmit"))
    assert resubmitted.returncode == 0 and f"SC@{provider.settings['paths']}" in resubmitted.stdout, \
        resubmitted.stderr
    assert len(provider.jobs()) == 2 and len(stored_rows(run_dir)) == provider.paths
    nothing = run_cli(*provider.job_command("stop", run_dir))
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout, nothing.stderr


def test_another_data_file_never_reattaches_to_another_runs_job(provider, tmp_path):
    """The second run crashed around its create call (its job left 'creating'): looking for the job it may
    have made must not find the first run's, made for other questions at the same positions."""
    from selfconsistency.testing.bedrock_emulator import generated_text, output_seed

    run_experiment(provider.config(), tmp_path / "first")
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(GSM8K_TEST.read_text().splitlines()[100: 100 + provider.questions]) + "\n")
    second = provider.config(data=str(other))
    task = second.get_task()
    requests = plan_requests(second, task, second.load(task))
    with SampleStore(tmp_path / "second") as store:
        backend_config = second.backend_config(job_state=store, settings_hash=second.settings_hash(task))
        runner = BatchJobRunner(create_job_service(second.backend, backend_config), backend_config, store)
        records = runner.service.pack(requests)
        store.update_job(runner._plan_job(records)["job_key"], status="creating")
        generations = list(flatten(runner.generate(requests)))
    assert len(provider.jobs()) == 2 and len(generations) == len(requests)  # its own job, not the first run's
    expected = {(q.question_id, q.temperature, q.path_index):
                generated_text(output_seed(r.record_id, r.body), i).strip()
                for r in records for i, q in enumerate(r.requests)}
    assert all(g.text.strip() == expected[(g.request.question_id, g.request.temperature, g.request.path_index)]
               for g in generations)


def test_records_refused_for_their_own_fault_are_stored_with_their_error_and_never_sent_again(provider, tmp_path):
    provider.refuse(REFUSED_QUESTION)
    run_dir = tmp_path / "run"
    refused = provider.records_per_question
    with pytest.raises(BackendError, match=rf"{refused} records were refused .*{provider.refused_said}"):
        run_experiment(provider.config(), run_dir)
    rerun = run_cli(*provider.cli_args(run_dir))  # a rerun does not start more rounds for them either
    assert rerun.returncode == 2 and rerun.stderr.count("\n") == 1 and f"{refused} records were refused" in rerun.stderr
    assert len(provider.jobs()) == 1 and not provider.on_demand_calls()
    assert load_results(run_dir)["questions"] == provider.questions - 1  # the report covers complete questions
    assert len(stored_rows(run_dir)) == provider.paths - provider.paths_per_question
    with SampleStore(run_dir, create=False) as store:
        errors = store.record_errors()
    assert len(errors) == refused
    assert {(e["code"], e["message"], e["retryable"]) for e in errors} == {
        (provider.refused_code, provider.refused_message, 0)}
    status = run_cli(*provider.job_command("status", run_dir))
    assert status.returncode == 0 and f"not resubmitted, by code: {provider.refused_code}" in status.stdout, \
        status.stdout
    (job,) = write_report(run_dir)["batch_jobs"]
    assert job["paths"] == provider.paths and job["paths_collected"] == provider.paths - provider.paths_per_question
    assert job["records_answered"] == provider.questions * provider.records_per_question - refused


def test_a_few_unreadable_output_lines_are_sent_again(provider, tmp_path):
    provider.unreadable(2)  # one not JSON, one of another shape
    run_dir = tmp_path / "run"
    proc = run_cli(*provider.cli_args(run_dir))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = stored_rows(run_dir)
    assert len(rows) == provider.paths and len({r[:3] for r in rows}) == provider.paths
    provider.check_resent(proc)


def test_an_output_that_cannot_be_read_at_all_is_bought_once(provider, tmp_path):
    provider.unreadable(10_000)  # every line: the same records would come back the same
    run_dir = tmp_path / "run"
    line = one_line_error(run_cli(*provider.cli_args(run_dir)))
    assert "malformed" in line and "--resubmit" in line
    assert len(provider.jobs()) == 1 and not provider.on_demand_calls() and stored_rows(run_dir) == []
    provider.heal()
    collected = run_cli(*provider.job_command("collect", run_dir, "--resubmit"))
    assert collected.returncode == 0, collected.stderr
    assert len(stored_rows(run_dir)) == provider.paths and len(provider.jobs()) == 2


GARBLED = [(name, how) for name, cls in PROVIDER_CLASSES.items() for how in cls.garbles]


@pytest.mark.parametrize("name, how", GARBLED, ids=[f"{name}-{how}" for name, how in GARBLED])
def test_output_in_another_format_is_bought_once_and_filed_under_our_ids(request, tmp_path, name, how):
    """Foreign or non-string ids, an echo that never matches, too few choices, list contents, a file as one
    JSON array: most of the job is unreadable, so its records wait for `jobs collect --resubmit` (one job
    bought, not four); every failure is filed under an id that was sent."""
    provider = PROVIDER_CLASSES[name](request.getfixturevalue(EMULATOR_FIXTURES[name]))
    provider.garble(how)
    run_dir = tmp_path / "run"
    line = one_line_error(run_cli(*provider.cli_args(run_dir)))
    assert "--resubmit" in line and provider.garbles[how] in line
    if how == "altered_echo":  # every answer looks foreign: refused as a mismatch
        assert "mismatch" in line
    assert len(provider.jobs()) == 1 and not provider.on_demand_calls()
    greedy_came = how == "fewer_choices"  # greedy asks one choice: it came
    assert len(stored_rows(run_dir)) == (provider.questions if greedy_came else 0)
    with sqlite3.connect(run_dir / "samples.sqlite") as db:
        filed = {row[0] for row in db.execute("SELECT record_id FROM record_errors")}
    assert filed and filed <= provider.sent_ids()  # none under "None" or "...x"
    provider.heal()
    collected = run_cli(*provider.job_command("collect", run_dir, "--resubmit"))
    assert collected.returncode == 0, collected.stderr
    assert len(stored_rows(run_dir)) == provider.paths and len(provider.jobs()) == 2


def test_a_budgeted_run_sends_its_budget_and_not_one_path_more(provider, tmp_path):
    """--budget-paths is what the provider is asked for: greedy, then the budget at each temperature, each
    question at most --paths, in waves the allocator plans; every stored path was sent once."""
    questions, temperatures = provider.questions, provider.settings["temperatures"]
    per_temperature = 4 * questions + 3  # not a multiple of anything a wave is made of
    settings = provider.config(budget_paths=per_temperature, min_paths=3)
    run_experiment(settings, tmp_path / "run")
    budget = questions + per_temperature * len(temperatures)  # greedy paths are not in the budget
    assert provider.sent_paths() == budget
    assert len(stored_rows(tmp_path / "run")) == budget
    with SampleStore.open_readonly(tmp_path / "run") as store:
        stops = store.stops(settings.stops_name())
    for temperature in temperatures:
        used = [u for (_, t), (u, _, _) in stops.items() if t == temperature]
        assert len(used) == questions and sum(used) == per_temperature and max(used) <= settings.sampling.paths
    results = write_report(tmp_path / "run")
    assert all(s["adaptive"]["mean_paths_used"] == pytest.approx(per_temperature / questions)
               for s in results["sampled"])


def test_a_budgets_waves_go_as_jobs_at_the_batch_price(provider, tmp_path):
    """By default every wave of a budget but the last is big enough to go as a job (a provider's minimum of
    records, and the backend's on_demand_below: smaller follow-up rounds go on demand at twice the price);
    only a last wave too small for a job goes on demand."""
    per_temperature = 4 * provider.questions + 3
    settings = provider.config(budget_paths=per_temperature)
    run_experiment(settings, tmp_path / "run")
    as_a_job = max(getattr(settings.options, "min_records_per_job", 1), getattr(settings.options, "on_demand_below", 0))
    with SampleStore.open_readonly(tmp_path / "run") as store:
        on_demand = len(store.on_demand_keys())
    assert on_demand < max(as_a_job, 1) * len(provider.settings["temperatures"]), on_demand


def test_max_cost_as_the_amount_to_spend_is_spent_and_never_passed(provider, tmp_path):
    """--allocate with --max-cost: the run spends the amount in waves, each cut to what is left at its
    worst case (every path's prompt and --max-tokens, as the ledger estimates it), and ends when not one
    more path could be paid: what the provider billed (job manifests, on-demand calls) is under the
    amount, by less than the dearest path's worst case."""
    from selfconsistency.backends.batch_ledger import SpendLedger, _worst
    from selfconsistency.costs import PriceTable

    settings = provider.config(allocate="blend-asc", max_cost=1.0)  # the amount is set below
    task = settings.get_task()
    data = settings.load(task)
    service = create_job_service(settings.backend, settings.backend_config())
    prices = [PriceTable().price(settings.model, batch=batch) for batch in (True, False)]
    dearest = max(_worst(record, price) for record in service.pack(plan_requests(settings, task, data))
                  for price in prices)
    first = settings.budget_plan(provider.questions, getattr(service.quotas, "min_records_per_job", 1)).min_paths
    first_wave = service.pack(plan_requests(settings, task, data, {
        **{(q.id, t): first for q in data.questions for t in provider.settings["temperatures"]},
        **{(q.id, 0.0): 1 for q in data.questions}}))
    # the first wave fits at its worst case, with a little over: far less than the whole run costs
    amount = round(1.15 * sum(_worst(record, prices[0]) for record in first_wave), 6)
    settings = provider.config(allocate="blend-asc", max_cost=amount)
    run_experiment(settings, tmp_path / "run")
    with SampleStore(tmp_path / "run", create=False) as store:
        _, billed = SpendLedger(store, settings.backend, settings.model, settings.backend_config()).spent()
        stops = store.stops(settings.stops_name())
    assert len(stops) == provider.questions * len(provider.settings["temperatures"])
    everything = all(used == settings.sampling.paths for used, _, _ in stops.values())
    assert billed <= amount
    assert everything or amount - billed < dearest, (billed, amount, dearest)


# -- every billed record is collected and counted ---------------------------------------------------------

def ledger(run_dir) -> dict[str, int]:
    """What the run's ledger counts: the jobs' manifests (records answered, tokens) and its on-demand calls."""
    with SampleStore(run_dir, create=False) as store:
        manifests = [j["manifest"] for j in store.jobs() if j["manifest"]]
        calls = store.spend()
    return {"records": sum(m["successRecordCount"] for m in manifests) + sum(c["records"] for c in calls),
            "input_tokens": sum(m["inputTokenCount"] for m in manifests) + sum(c["input_tokens"] for c in calls),
            "output_tokens": sum(m["outputTokenCount"] for m in manifests) + sum(c["output_tokens"] for c in calls)}


def job_status(run_dir) -> str:
    with sqlite3.connect(run_dir / "samples.sqlite") as db:
        return db.execute("SELECT status FROM jobs").fetchone()[0]


def test_a_run_killed_during_its_create_call_adopts_the_job_it_made(provider, tmp_path):
    """The provider made the job (and bills it); the run was killed before it heard back: the job is found,
    listed by `jobs status`, and collected by the resumed run, never bought again."""
    provider.delay_create(60)
    run_dir = tmp_path / "run"
    args = provider.cli_args(run_dir)
    killed = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not provider.jobs():
        time.sleep(0.02)
    killed.kill()
    killed.wait()
    assert len(provider.jobs()) == 1 and job_status(run_dir) == "creating" and not submitted_jobs(run_dir)
    provider.heal()
    status = run_cli(*provider.job_command("status", run_dir))
    (made,) = provider.jobs()
    assert status.returncode == 0 and provider.job_id(made) in status.stdout, status.stderr
    assert "stopped during its create call" in status.stdout
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert len(provider.jobs()) == 1 and len(stored_rows(run_dir)) == provider.paths  # adopted, not bought again
    assert ledger(run_dir) == provider.billed() and provider.billed()["records"] > 0  # every billed record counted


def test_jobs_forget_asks_the_provider_first(provider, tmp_path):
    """A job the provider still runs is not forgotten (its records would be bought again and its spend lost):
    refused, or stopped with --stop; a finished job is collected; only a job the provider lost is forgotten."""
    provider.emulator.step_seconds = 2.0
    run_dir = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-m", "selfconsistency", *provider.cli_args(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not submitted_jobs(run_dir):
        time.sleep(0.02)
    with SampleStore.open_readonly(run_dir) as store:
        key = store.jobs()[0]["job_key"][:12]
    refused = one_line_error(run_cli(*provider.job_command("forget", run_dir), key))
    assert "still" in refused and "--stop" in refused
    (job,) = provider.jobs()
    assert provider.status(job) in provider.in_flight_words  # still running, still ours
    stopping = run_cli(*provider.job_command("forget", run_dir, "--stop"), key)
    assert stopping.returncode == 0 and "stopping" in stopping.stdout, stopping.stderr
    provider.emulator.step_seconds = 0.02
    _, stderr = live.communicate(timeout=60)
    assert live.returncode == 2 and "stopped" in stderr.strip().splitlines()[-1]
    assert provider.status(job) == provider.stopped_status
    with SampleStore.open_readonly(run_dir) as store:
        (stored_job,) = store.jobs()
    assert stored_job["status"] == "collected" and ledger(run_dir) == provider.billed()  # what it processed: counted
    finished = run_cli(*provider.job_command("forget", run_dir), key)
    assert finished.returncode == 0 and "nothing was forgotten" in finished.stdout, finished.stderr
    provider.lose(job)
    gone = run_cli(*provider.job_command("forget", run_dir), key)
    assert gone.returncode == 0 and "forgot" in gone.stdout, gone.stderr
    assert len(provider.jobs()) == 0 and ledger(run_dir)["records"] == provider.answered_records(job)  # still counted


def test_a_finished_job_is_collected_by_forget_not_forgotten(provider, tmp_path):
    run_dir = tmp_path / "run"
    kill_once_submitted(provider.cli_args(run_dir), run_dir)
    (job,) = provider.jobs()
    deadline = time.time() + 60
    while time.time() < deadline and provider.status(job) in provider.in_flight_words:
        time.sleep(0.02)
    with SampleStore.open_readonly(run_dir) as store:
        key = store.jobs()[0]["job_key"][:12]
    collected = run_cli(*provider.job_command("forget", run_dir), key)
    assert collected.returncode == 0 and "its answers are stored" in collected.stdout, collected.stderr
    assert len(stored_rows(run_dir)) == provider.paths and len(provider.jobs()) == 1  # paid, stored, not bought again
    assert ledger(run_dir) == provider.billed()


def test_fewer_paths_after_an_interruption_store_every_paid_path_and_buy_nothing_again(provider, tmp_path):
    """Killed with its job submitted, resumed asking fewer paths: the job's records are the same records (the
    paths it names are planned too), so it is collected and every path it paid for stored, for a later run."""
    run_dir = tmp_path / "run"
    kill_once_submitted(provider.cli_args(run_dir), run_dir)
    fewer = provider.cli_args(run_dir, paths=2)
    resumed = run_cli(*fewer)
    assert resumed.returncode == 0, resumed.stderr
    assert len(provider.jobs()) == 1 and not provider.on_demand_calls()  # nothing bought again
    assert len(stored_rows(run_dir)) == provider.paths  # beyond today's plan: paid, so stored
    assert ledger(run_dir) == provider.billed()
    again = run_cli(*provider.cli_args(run_dir))  # the larger run later needs nothing more
    assert again.returncode == 0 and len(provider.jobs()) == 1, again.stderr


def test_fewer_paths_buy_only_what_todays_plan_misses(provider, tmp_path):
    """The interrupted job answered half of its records: all it answered is stored, and what is bought after
    it is only what today's plan (2 paths) lacks, never the paths beyond it that the job left unanswered."""
    provider.answer_half()
    run_dir = tmp_path / "run"
    kill_once_submitted(provider.cli_args(run_dir), run_dir)
    (first,) = provider.jobs()
    resumed = run_cli(*provider.cli_args(run_dir, paths=2))
    assert resumed.returncode == 0, resumed.stderr
    with SampleStore(run_dir, create=False) as store:
        jobs = store.jobs()
        bought_later = [tuple(p) for job in jobs[1:] for paths in job["records"].values() for p in paths]
        bought_later += list(store.on_demand_keys())
        stored = store.stored_keys()
    assert bought_later and all(t == 0.0 or index < 2 for _, t, index in bought_later)
    assert {(q, t, i) for q, t, i in stored if t != 0.0 and i >= 2}  # beyond today's plan: the first job's answers
    assert 0 < provider.answered_records(first) < len(jobs[0]["records"])
    assert ledger(run_dir) == provider.billed()


def test_a_job_refused_as_a_whole_is_not_sent_again_as_it_is(provider, tmp_path):
    """A job the provider's validation refuses would be refused again: one job, and one line naming what the
    provider said and what to change, not the same job four times and 'run again'."""
    provider.refuse_whole_jobs(True)
    run_dir = tmp_path / "run"
    line = one_line_error(run_cli(*provider.cli_args(run_dir)))
    assert "as a whole" in line and "change what it names" in line and len(provider.jobs()) == 1
    provider.refuse_whole_jobs(False)
    fixed = run_cli(*provider.cli_args(run_dir))
    assert fixed.returncode == 0, fixed.stderr
    assert len(stored_rows(run_dir)) == provider.paths and len(provider.jobs()) == 2


def test_the_reports_show_what_the_ledger_billed(provider, tmp_path):
    """results.md and report.html show the run's total spend from its ledger, split into batch and on-demand,
    equal to the provider's bill at the run's prices."""
    provider.break_jobs()
    run_dir = tmp_path / "run"
    run_experiment(provider.config(), run_dir)
    results = write_report(run_dir)
    billed = provider.billed()
    settings = provider.config()
    batch, on_demand = settings.price(), settings.price(on_demand=True)
    with SampleStore(run_dir, create=False) as store:
        calls = store.spend()
    on_demand_tokens = (sum(c["input_tokens"] for c in calls), sum(c["output_tokens"] for c in calls))
    expected = batch.cost(billed["input_tokens"] - on_demand_tokens[0], billed["output_tokens"] - on_demand_tokens[1]) \
        + on_demand.cost(*on_demand_tokens)
    assert results["spend"]["total_usd"] == pytest.approx(expected, abs=1e-5)
    total = f"| total | {results['spend']['total_usd']:.4f} | {results['spend']['tokens']:,} |"
    assert total in (run_dir / "results.md").read_text()
    page = (run_dir / "report.html").read_text()
    assert "billed (the run's ledger)" in page and f"{results['spend']['total_usd']:.4f}" in page
