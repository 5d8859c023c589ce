"""Amazon Bedrock batch inference: records to S3, model invocation jobs, results joined back by record id.

The durable workflow (state saved around every call, reattaching after a crash, follow-up jobs) is
`batch_jobs.BatchJobRunner`; this module is Bedrock's side of it. A job's clientRequestToken is its key,
derived from the run and the job's records, so a create call retried after a crash starts no second job.
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
import time
from collections.abc import Container, Iterator
from typing import Annotated, Any

import msgspec
from pydantic import Field

from ..collector import collector_paused
from ..options import Cli
from .base import BackendConfig, BackendError, BackendSpec, GenerationRequest, ParsedOutput, show_body
from .batch_jobs import MALFORMED_CODE, BatchBackend, BatchOptions, JobResults, JobState, retryable_status
from .batch_plan import PerBody, Quotas, Record, input_file, pack, sent_json
from .bedrock_aws import aws_errors, aws_retries, bucket_name, explain_aws_error
from .bedrock_bodies import BodyAdapter, UnknownModel, adapter_for, bedrock_line
from .bedrock_ondemand import BedrockOptions

log = logging.getLogger(__name__)

BEDROCK_TOO_SMALL = ("use the on-demand backend (--backend bedrock) for a run this small, or ask for more "
                     "questions or paths")


BATCH = "Amazon Bedrock batch inference (--backend bedrock-batch)"


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
        import boto3

        self.options = options = config.options_as(BedrockBatchOptions)
        self.settings_hash = config.settings_hash
        self.run_dir = config.job_state.run_dir if config.job_state is not None else "RUN_DIR"  # for advice
        self.model = config.model
        self.adapter = batch_adapter(config.model, options)
        self.bucket = bucket_name(options.bucket) if options.bucket else None
        retries = aws_retries()
        self.s3 = boto3.client("s3", region_name=options.region, config=retries)
        self.bedrock = boto3.client("bedrock", region_name=options.region, config=retries)
        self.runtime = boto3.client("bedrock-runtime", region_name=options.region, config=retries)
        self.quotas = Quotas(min_records_per_job=options.min_records_per_job,
                             max_records_per_job=options.max_records_per_job,
                             max_jobs_in_flight=options.max_jobs_in_flight)

    def pack(self, requests: list[GenerationRequest]) -> list[Record]:
        return pack(requests, self.adapter.max_generations, self.adapter.request, bedrock_line)

    def locations(self, job_key: str) -> tuple[str, str]:
        base = f"s3://{self.bucket}/{self.options.s3_prefix.strip('/')}"
        return f"{base}/input/{job_key}/records.jsonl", f"{base}/output/{job_key}/"

    def submit(self, job: dict[str, Any], lines: list[str], retried: bool) -> str:
        bucket, key = _split_uri(job["input_uri"])
        with aws_errors(f"uploading the job input to {job['input_uri']}"):
            if self.options.create_bucket:
                self._ensure_bucket(bucket)
            self.s3.put_object(Bucket=bucket, Key=key, Body=input_file(lines))
        request = dict(jobName=f"sc-{self.settings_hash[:20]}-{job['job_key'][:12]}", roleArn=self.options.role_arn,
                       modelId=self.model, clientRequestToken=job["job_key"],  # makes a retried create idempotent
                       inputDataConfig={"s3InputDataConfig": {"s3Uri": job["input_uri"]}},
                       outputDataConfig={"s3OutputDataConfig": {"s3Uri": job["output_uri"]}},
                       timeoutDurationInHours=self.options.timeout_hours,
                       **({"modelInvocationType": "Converse"} if self.options.converse else {}),
                       **({"tags": [{"key": k, "value": v} for k, v in self.options.tags]}
                          if self.options.tags else {}))
        return self._create(request)

    def _create(self, request: dict[str, Any]) -> str:
        """Create the job; while the account's quota of jobs in flight for the model is full (another run
        holds it), wait with backoff and try again."""
        import botocore.exceptions as bx

        wait = self.options.poll_seconds
        while True:
            try:
                return self.bedrock.create_model_invocation_job(**request)["jobArn"]
            except bx.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ServiceQuotaExceededException":
                    raise BackendError(explain_aws_error(exc, "creating the batch job")) from None
            except bx.BotoCoreError as exc:
                raise BackendError(explain_aws_error(exc, "creating the batch job")) from None
            log.warning(f"the quota of batch jobs in flight for {self.model} is full (other runs' jobs?): "
                        f"waiting {wait:g}s before trying again")
            time.sleep(wait)
            wait = min(wait * 2, 10 * self.options.poll_seconds)

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
            gone = exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            raise BackendError(self._job_not_found(job) if gone else explain_aws_error(exc, action)) from None
        except bx.BotoCoreError as exc:
            raise BackendError(explain_aws_error(exc, action)) from None
        return JobState(status["status"], status.get("message"), status.get("processedRecordCount"),
                        status.get("totalRecordCount"))

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
        inference profile stays one) and API as the job would have used: Converse for Converse records."""
        for record in records:
            started = time.perf_counter()
            with aws_errors(f"calling {self.model} on demand"):
                if self.options.converse:
                    body = self.runtime.converse(modelId=self.model, **record.body)
                else:
                    response = self.runtime.invoke_model(modelId=self.model, body=json.dumps(record.body),
                                                         contentType="application/json", accept="application/json")
                    body = json.loads(response["body"].read())
            outputs = self.adapter.response(body, record.requests[0].params)
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


class _OutputLine(msgspec.Struct):
    """A well-formed output line, its modelInput left as the bytes Bedrock wrote (compared before decoded)."""

    recordId: str
    modelInput: msgspec.Raw
    modelOutput: Any = msgspec.UNSET
    error: Any = None


_OUTPUT_LINE = msgspec.json.Decoder(_OutputLine)


_Line = tuple[Any, Any, bool, Any, Any]  # recordId, modelInput, has modelOutput, modelOutput, error


def _read_lines(data: bytes) -> list[_Line | None]:
    """Each output line as (recordId, modelInput, has modelOutput, modelOutput, error), None for one that
    is not a JSON object. Well-formed lines are read by msgspec, all at once, their echoes left undecoded
    (compared as bytes first); when any line is not, each line on its own, the others by json as before.
    Lines end at newlines only: a JSON text may hold U+2028 or U+0085 unescaped (str.splitlines cuts there)."""
    try:
        return [(line.recordId, line.modelInput, line.modelOutput is not msgspec.UNSET, line.modelOutput, line.error)
                for line in _OUTPUT_LINE.decode_lines(data)]
    except msgspec.MsgspecError:
        pass
    lines: list[_Line | None] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = _OUTPUT_LINE.decode(raw)
            lines.append((line.recordId, line.modelInput, line.modelOutput is not msgspec.UNSET, line.modelOutput,
                          line.error))
            continue
        except msgspec.MsgspecError:
            pass
        try:
            parsed = json.loads(raw.decode("utf-8", errors="replace"))
            lines.append((parsed.get("recordId"), parsed.get("modelInput"), "modelOutput" in parsed,
                          parsed.get("modelOutput"), parsed.get("error")))
        except (ValueError, AttributeError):
            lines.append(None)
    return lines


def _echoes(echoed: Any, record: Record, sent: PerBody) -> bool:
    """Whether the output's modelInput is the record's body: the bytes it was sent as, or else the same
    JSON value."""
    if isinstance(echoed, msgspec.Raw):
        if bytes(echoed) == sent(record.body):
            return True
        try:
            echoed = json.loads(bytes(echoed))
        except ValueError:
            return False
    return echoed == record.body


def read_output(data: bytes, job_records: Container[str], records: dict[str, Record],
                adapter: BodyAdapter) -> JobResults:
    """A job's records.jsonl.out: outputs, errors and mismatched echoes by record id (`records`: those of
    the job's records this run wants). A line that is not JSON or whose modelOutput is not the model's
    format is a failed record (the runner decides whether it goes round again), never an abort."""
    with collector_paused():
        return _read_output(data, job_records, records, adapter)


def _read_output(data: bytes, job_records: Container[str], records: dict[str, Record],
                 adapter: BodyAdapter) -> JobResults:
    results = JobResults()
    sent = sent_json()
    for line in _read_lines(data):
        if line is None:
            results.unreadable += 1
            continue
        record_id, echoed, has_output, output, error = line
        if not isinstance(record_id, str) or record_id not in job_records:
            results.unreadable += 1  # names no record of this job: many such lines make the job suspect
            continue
        record = records.get(record_id)
        if record is None:
            continue
        try:
            if not _echoes(echoed, record, sent):  # the output echoes its input: it must be what we sent
                results.mismatched.append(record.record_id)
            elif has_output:
                results.outputs[record.record_id] = adapter.response(output, record.requests[0].params)
            elif isinstance(error, dict):
                code = error.get("errorCode")
                results.errors[record.record_id] = (str(code), str(error.get("errorMessage", "")),
                                                    retryable_status(code))
            else:
                raise ValueError("neither modelOutput nor error")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            results.errors[record.record_id] = (MALFORMED_CODE, f"not in {adapter.family}'s output format", True)
    return results


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def batch_adapter(model: str, options: BedrockBatchOptions) -> BodyAdapter:
    try:
        return adapter_for(model, converse=options.converse, base_model=options.base_model)
    except UnknownModel as exc:
        raise BackendError(str(exc)) from None


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    adapter = batch_adapter(config.model, config.options_as(BedrockBatchOptions))
    return show_body(adapter.request(request.prompt, request.params, 1))


BACKEND = BackendSpec(BedrockBatchBackend, BedrockBatchOptions, BedrockJobs,
                      summary="Amazon Bedrock batch inference, see --bucket and --role-arn", preview=_preview,
                      on_demand="bedrock")
