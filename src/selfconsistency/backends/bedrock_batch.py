"""Amazon Bedrock batch inference: records to S3, model invocation jobs, results joined back by record id.

The durable workflow (state saved around every call, reattaching after a crash, follow-up jobs) is
`batch_jobs.BatchJobRunner`; this module is Bedrock's side of it. A job's clientRequestToken is its key,
derived from the run and the job's records, and its name holds the key's first characters: a job whose
create call a killed process never heard back from is found (ListModelInvocationJobs, by name and token)
and adopted as it was made. Bedrock answers a create with the same token and other options (a changed
--timeout-hours, --tag or --role-arn) with ConflictException: the error names the option and both values.
Records that come back with an error, or that a Failed / Expired / Stopped / PartiallyCompleted job never
processed, go into a follow-up job, or, when fewer than a job's minimum remain, to on-demand InvokeModel
calls. boto3 finds credentials and endpoints itself (profiles, environment, AWS_ENDPOINT_URL_*).

Every AWS error a user can cause or meet (a missing bucket, denied access, an unreachable endpoint, a job
the region does not know) becomes a one-line BackendError saying what to do; the run's state is saved
around every call, so running the same command again continues. A full quota of jobs in flight (another
run of the model holds it) is waited out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from ..options import Cli
from .base import BackendConfig, BackendError, BackendSpec, GenerationRequest, ParsedOutput, show_body
from .batch_jobs import BatchBackend, BatchOptions, JobGone, JobResults, JobState
from .batch_plan import Quotas, Record, input_file, pack
from .bedrock_aws import aws_client, aws_errors, bucket_name, explain_aws_error, resolve_base_model
from .bedrock_bodies import BodyAdapter, UnknownModel, adapter_for, bedrock_line
from .bedrock_ondemand import BedrockOptions, invoke
from .bedrock_output import read_output  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

BEDROCK_TOO_SMALL = ("use the on-demand backend (--backend bedrock) for a run this small, or ask for more "
                     "questions or paths")


BATCH = "Amazon Bedrock batch inference (--backend bedrock-batch)"
# Bedrock validates a job before it runs (the role's access to S3, the files' format, the record quotas,
# the model's support for batch): a job failing it fails as a whole, and would fail again as it is.
_VALIDATION = re.compile(r"(?i)validat|minimum|maximum|quota|format|permission|access|not supported")
# What each option of a create request is given by, for the error that names a changed one.
_OPTIONS = {"roleArn": "--role-arn", "timeoutDurationInHours": "--timeout-hours", "tags": "--tag",
            "modelId": "--model", "modelInvocationType": "--converse", "jobName": "the run's settings"}


def _tags(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag: expected KEY=VALUE, got {value!r}")
        pairs.append((key, tag_value))
    return tuple(pairs)


class BedrockBatchOptions(BedrockOptions, BatchOptions):
    bucket: Annotated[str | None, Cli("S3 bucket for job input and output.", BATCH)] = None
    s3_prefix: Annotated[str, Cli("Key prefix in the bucket.", BATCH)] = "selfconsistency"
    role_arn: Annotated[str | None, Cli(
        "The service role jobs run as (see 'selfconsistency bedrock role-policy').", BATCH)] = None
    create_bucket: Annotated[bool, Cli("Create the bucket if missing.", BATCH)] = False
    timeout_hours: Annotated[int, Field(ge=24, le=168), Cli(
        "Hours after which a job times out (timeoutDurationInHours).", BATCH)] = 24
    tags: Annotated[tuple[tuple[str, str], ...], Cli(
        "KEY=VALUE tag for each job (cost allocation); repeat for several.", BATCH, flags=("--tag",),
        cli_type=list[str], parse=_tags, metavar="KEY=VALUE")] = ()


class BedrockJobs:
    """Bedrock's side of the batch workflow (`batch_jobs.JobService`)."""

    name = "bedrock-batch"
    cancellable = ("Submitted", "Validating", "Scheduled", "InProgress")
    in_flight = (*cancellable, "Stopping")
    finished = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
    stopped = ("Stopped",)
    too_small = BEDROCK_TOO_SMALL

    def __init__(self, config: BackendConfig):
        self.options = options = config.options_as(BedrockBatchOptions)
        self.settings_hash = config.settings_hash
        self.run_dir = config.job_state.run_dir if config.job_state is not None else "RUN_DIR"  # for advice
        self.model = config.model
        self.bucket = bucket_name(options.bucket) if options.bucket else None
        # built where a missing or malformed region or an unknown AWS_PROFILE is one line, not a traceback
        self.s3 = aws_client("s3", options.region)
        self.bedrock = aws_client("bedrock", options.region)
        self.runtime = aws_client("bedrock-runtime", options.region)
        resolved = resolve_base_model(self.bedrock, config.model, options.base_model)
        self.priced_as, self.priced_how = resolved.model, resolved.how
        self.adapter = batch_adapter(config.model, options, self.priced_as)
        self.quotas = Quotas(min_records_per_job=options.min_records_per_job,
                             max_records_per_job=options.max_records_per_job,
                             max_jobs_in_flight=options.max_jobs_in_flight)

    def pack(self, requests: list[GenerationRequest]) -> list[Record]:
        return pack(requests, self.adapter.max_generations, self.adapter.request, bedrock_line)

    def locations(self, job_key: str) -> tuple[str, str]:
        base = f"s3://{self.bucket}/{self.options.s3_prefix.strip('/')}"
        return f"{base}/input/{job_key}/records.jsonl", f"{base}/output/{job_key}/"

    def request(self, job_key: str) -> dict[str, Any]:
        """CreateModelInvocationJob's parameters but its token (the job's key) and locations (stored with
        the job): today's options."""
        return dict(jobName=f"sc-{self.settings_hash[:20]}-{job_key[:12]}", roleArn=self.options.role_arn,
                    modelId=self.model, timeoutDurationInHours=self.options.timeout_hours,
                    **({"modelInvocationType": "Converse"} if self.options.converse else {}),
                    **({"tags": [{"key": k, "value": v} for k, v in self.options.tags]} if self.options.tags else {}))

    def find(self, job: dict[str, Any]) -> str | None:
        """The job an earlier process created with this job's token (its name holds the key's first 12
        characters), if Bedrock lists it."""
        key = job["job_key"]
        with aws_errors(f"looking for batch job {key[:12]} at Bedrock"):
            pages = self.bedrock.get_paginator("list_model_invocation_jobs").paginate(nameContains=key[:12])
            for page in pages:
                for summary in page.get("invocationJobSummaries", []):
                    if summary.get("clientRequestToken") == key:
                        return summary["jobArn"]
        return None

    def submit(self, job: dict[str, Any], lines: list[str]) -> str:
        bucket, key = _split_uri(job["input_uri"])
        with aws_errors(f"uploading the job input to {job['input_uri']}"):
            if self.options.create_bucket:
                self._ensure_bucket(bucket)
            self.s3.put_object(Bucket=bucket, Key=key, Body=input_file(lines))
        request = {**self.request(job["job_key"]), "clientRequestToken": job["job_key"],  # a retried create: one job
                   "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job["input_uri"]}},
                   "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job["output_uri"]}}}
        return self._create(job, request)

    def _create(self, job: dict[str, Any], request: dict[str, Any]) -> str:
        """Create the job; while the account's quota of jobs in flight for the model is full (another run
        holds it), wait with backoff and try again."""
        import botocore.exceptions as bx

        wait = self.options.poll_seconds
        while True:
            try:
                return self.bedrock.create_model_invocation_job(**request)["jobArn"]
            except bx.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "ConflictException":
                    raise BackendError(self._conflict(job, request)) from None
                if code != "ServiceQuotaExceededException":
                    raise BackendError(explain_aws_error(exc, "creating the batch job")) from None
            except bx.BotoCoreError as exc:
                raise BackendError(explain_aws_error(exc, "creating the batch job")) from None
            log.warning(f"the quota of batch jobs in flight for {self.model} is full (other runs' jobs?): "
                        f"waiting {wait:g}s before trying again")
            time.sleep(wait)
            wait = min(wait * 2, 10 * self.options.poll_seconds)

    def _conflict(self, job: dict[str, Any], request: dict[str, Any]) -> str:
        """Bedrock has a job with this token, made with other options (a run stopped during its create call,
        resumed with changed options): which option changed, and how to keep the job that exists."""
        key, earlier = job["job_key"], job.get("request") or {}
        changed = [(name, earlier[name], request[name]) for name in _OPTIONS
                   if name in earlier and earlier.get(name) != request.get(name)]
        if not changed:
            return (f"Bedrock already has batch job {key[:12]} (clientRequestToken {key}), made with other options "
                    f"than today's: run again with the options the run was started with to collect it (it may be "
                    f"billed), or 'selfconsistency jobs status {self.run_dir}' to see it")
        said = "; ".join(f"{_OPTIONS[name]}: {_shown(name, was)} when it was made, {_shown(name, now)} now"
                         for name, was, now in changed)
        keep = " ".join(_given(name, was) for name, was, _ in changed if name in _KEEPABLE)
        return (f"Bedrock already has batch job {key[:12]} (a run stopped during its create call made it, and it "
                f"may be billed), made with other options: {said}; run again with {keep or 'the earlier options'} "
                "to collect it (a later run may change them again for new jobs)")

    def _ensure_bucket(self, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except self.s3.exceptions.ClientError:
            region = self.s3.meta.region_name
            extra = {} if region in (None, "us-east-1") else \
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
            self.s3.create_bucket(Bucket=bucket, **extra)

    def poll(self, job: dict[str, Any]) -> JobState:
        import botocore.exceptions as bx

        action = f"checking batch job {job['job_id']}"
        try:
            status = self.bedrock.get_model_invocation_job(jobIdentifier=job["job_id"])
        except bx.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise JobGone(self._job_not_found(job)) from None
            raise BackendError(explain_aws_error(exc, action)) from None
        except bx.BotoCoreError as exc:
            raise BackendError(explain_aws_error(exc, action)) from None
        failed = status["status"] == "Failed" and bool(_VALIDATION.search(status.get("message") or ""))
        return JobState(status["status"], status.get("message"), status.get("processedRecordCount"),
                        status.get("totalRecordCount"), invalid=failed)

    def _job_not_found(self, job: dict[str, Any]) -> str:
        job_region = job["job_id"].split(":")[3]
        here = self.bedrock.meta.region_name
        if job_region != here:
            return (f"batch job {job['job_id']} was made in {job_region}, but this run talks to Bedrock in {here}: "
                    f"run again with --region {job_region} (or AWS_DEFAULT_REGION={job_region})")
        return (f"Bedrock in {here} does not know batch job {job['job_id']}: if it was made with other AWS "
                "credentials (another account), use those and run again; if the job is gone, run "
                f"'selfconsistency jobs forget {self.run_dir} {job['job_key'][:12]}' and run again to "
                "resubmit its records")

    def cancel(self, job: dict[str, Any]) -> None:
        with aws_errors(f"stopping batch job {job['job_id']}"):
            self.bedrock.stop_model_invocation_job(jobIdentifier=job["job_id"])

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults:
        """The job's outputs by record id (see read_output)."""
        job_id = job["job_id"].rsplit("/", 1)[-1]
        bucket, prefix = _split_uri(job["output_uri"])
        with aws_errors(f"reading the output of batch job {job['job_id']} from {job['output_uri']}"):
            manifest = self._read_json(bucket, f"{prefix}{job_id}/manifest.json.out")
            data = self._read_bytes(bucket, f"{prefix}{job_id}/records.jsonl.out")
        results = read_output(data, job["records"], records, self.adapter)
        results.manifest = manifest
        return results

    def _read_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return b""

    def _read_json(self, bucket: str, key: str) -> dict | None:
        try:
            manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None
        except ValueError:  # an unreadable manifest: the job's counts are unknown, its records are not lost
            return None
        return manifest if isinstance(manifest, dict) else None

    def remainder(self, records: list[Record]) -> Iterator[tuple[Record, list[ParsedOutput], float]]:
        """Too few records left for a job: on demand, one call per record, with the same model id (an
        inference profile stays one) and API as the job would have used: Converse for Converse records.
        A call refused for its record's own fault raises RecordRefused (the runner stores it)."""
        for record in records:
            started = time.perf_counter()
            outputs = invoke(self.runtime, self.model, self.adapter, record)
            yield record, outputs, (time.perf_counter() - started) / len(record.requests)


class BedrockBatchBackend(BatchBackend):
    def __init__(self, config: BackendConfig):
        options = config.options_as(BedrockBatchOptions)
        if not (options.bucket and options.role_arn):
            raise BackendError("bedrock-batch needs --bucket and --role-arn (the batch job's service role; "
                               "see 'selfconsistency bedrock role-policy')")
        super().__init__(BedrockJobs(config), config)
        self.min_records_per_job = options.min_records_per_job

    def count_records(self, requests: list[GenerationRequest]) -> int:
        """How many batch records these paths make (adaptive stopping grows its waves to a job's minimum)."""
        return len(self.service.pack(list(requests)))


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def batch_adapter(model: str, options: BedrockBatchOptions, base_model: str | None = None) -> BodyAdapter:
    """The body format of the model (`base_model`: the foundation model an application inference profile
    runs, as Bedrock names it; else --base-model)."""
    try:
        return adapter_for(model, converse=options.converse, base_model=base_model or options.base_model)
    except UnknownModel as exc:
        raise BackendError(str(exc)) from None


_KEEPABLE = ("roleArn", "timeoutDurationInHours", "tags")  # options a user gives again to match a made job


def _shown(name: str, value: Any) -> str:
    """An option's value as it is typed."""
    if name == "tags":
        return " ".join(f"{t['key']}={t['value']}" for t in value) if value else "(none)"
    return str(value)


def _given(name: str, value: Any) -> str:
    """The option as it is given on the command line to have this value."""
    if name == "tags":
        return " ".join(f"--tag {t['key']}={t['value']}" for t in value) if value else "no --tag"
    return f"{_OPTIONS[name]} {value}"


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    adapter = batch_adapter(config.model, config.options_as(BedrockBatchOptions))
    return show_body(adapter.request(request.prompt, request.params, 1))


def _plan_records(config: BackendConfig, requests: list[GenerationRequest]) -> list[Record]:
    """The batch records, as BedrockJobs packs them, with no client (an application inference profile's
    format: --base-model's, unchecked)."""
    adapter = batch_adapter(config.model, config.options_as(BedrockBatchOptions))
    return pack(requests, adapter.max_generations, adapter.request, bedrock_line)


BACKEND = BackendSpec(BedrockBatchBackend, BedrockBatchOptions, BedrockJobs,
                      summary="Amazon Bedrock batch inference, see --bucket and --role-arn", preview=_preview,
                      on_demand="bedrock", plan_records=_plan_records)
