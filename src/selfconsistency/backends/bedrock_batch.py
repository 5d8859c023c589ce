"""Amazon Bedrock batch inference: records to S3, model invocation jobs, results joined back by record id.

The durable workflow (state saved around every call, reattaching after a crash, follow-up jobs) is
`batch_jobs.BatchJobRunner`; this module is Bedrock's side of it. A job's clientRequestToken is its key,
derived from the run and the job's records, so a create call retried after a crash starts no second job.
Records that come back with an error, or that a Failed / Expired / Stopped / PartiallyCompleted job never
processed, go into a follow-up job, or, when fewer than a job's minimum remain, to on-demand InvokeModel
calls. boto3 finds credentials and endpoints itself (profiles, environment, AWS_ENDPOINT_URL_*).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from .base import BackendConfig, BackendError, GenerationRequest, ParsedOutput
from .batch_jobs import BatchBackend, JobResults, JobState, retryable_status
from .batch_plan import Quotas, Record, pack
from .bedrock_bodies import adapter_for

BEDROCK_TOO_SMALL = ("use the on-demand backend (--backend bedrock) for a run this small, or ask for more "
                     "questions or paths")


def bedrock_line(record_id: str, body: dict[str, Any]) -> str:
    return json.dumps({"recordId": record_id, "modelInput": body}, ensure_ascii=False)


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
        from botocore.config import Config

        self.config = config
        self.model = config.model
        self.adapter = adapter_for(config.model, converse=config.converse)
        retries = Config(retries={"mode": "adaptive", "max_attempts": 10})
        self.s3 = boto3.client("s3", region_name=config.region, config=retries)
        self.bedrock = boto3.client("bedrock", region_name=config.region, config=retries)
        self.runtime = boto3.client("bedrock-runtime", region_name=config.region, config=retries)
        self.quotas = Quotas(min_records_per_job=config.min_records_per_job,
                             max_records_per_job=config.max_records_per_job,
                             max_jobs_in_flight=config.max_jobs_in_flight)

    def pack(self, requests: list[GenerationRequest]) -> list[Record]:
        return pack(requests, self.adapter.max_generations, self.adapter.request, bedrock_line)

    def locations(self, job_key: str) -> tuple[str, str]:
        base = f"s3://{self.config.bucket}/{self.config.s3_prefix.strip('/')}"
        return f"{base}/input/{job_key}/records.jsonl", f"{base}/output/{job_key}/"

    def submit(self, job: dict[str, Any], lines: list[str], retried: bool) -> str:
        bucket, key = _split_uri(job["input_uri"])
        if self.config.create_bucket:
            self._ensure_bucket(bucket)
        self.s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
        response = self.bedrock.create_model_invocation_job(  # the token makes a retried create idempotent
            jobName=f"sc-{self.config.run_id[:20]}-{job['job_key'][:12]}", roleArn=self.config.role_arn,
            modelId=self.model, clientRequestToken=job["job_key"],
            inputDataConfig={"s3InputDataConfig": {"s3Uri": job["input_uri"]}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": job["output_uri"]}},
            timeoutDurationInHours=24,
            **({"modelInvocationType": "Converse"} if self.config.converse else {}))
        return response["jobArn"]

    def _ensure_bucket(self, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except self.s3.exceptions.ClientError:
            region = self.s3.meta.region_name
            extra = {} if region in (None, "us-east-1") else \
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
            self.s3.create_bucket(Bucket=bucket, **extra)

    def poll(self, job: dict[str, Any]) -> JobState:
        status = self.bedrock.get_model_invocation_job(jobIdentifier=job["arn"])
        return JobState(status["status"], status.get("message"), status.get("processedRecordCount"),
                        status.get("totalRecordCount"))

    def cancel(self, job: dict[str, Any]) -> None:
        self.bedrock.stop_model_invocation_job(jobIdentifier=job["arn"])

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults:
        job_id = job["arn"].rsplit("/", 1)[-1]
        bucket, prefix = _split_uri(job["output_uri"])
        results = JobResults(manifest=self._read_json(bucket, f"{prefix}{job_id}/manifest.json.out"))
        for line in self._read_lines(bucket, f"{prefix}{job_id}/records.jsonl.out"):
            record = records.get(line.get("recordId"))
            if record is None:
                continue
            if line.get("modelInput") != record.body:  # the output echoes its input: it must be what we sent
                results.mismatched.append(record.record_id)
            elif "modelOutput" in line:
                params = record.requests[0].params
                results.outputs[record.record_id] = self.adapter.response(line["modelOutput"], params)
            elif isinstance(line.get("error"), dict):
                code = line["error"].get("errorCode")
                results.errors[record.record_id] = (str(code), str(line["error"].get("errorMessage", "")),
                                                    retryable_status(code))
        return results

    def _read_lines(self, bucket: str, key: str) -> list[dict]:
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except self.s3.exceptions.NoSuchKey:
            return []
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def _read_json(self, bucket: str, key: str) -> dict | None:
        try:
            return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def remainder(self, records: list[Record]) -> Iterator[tuple[Record, list[ParsedOutput], float]]:
        """Too few records left for a job: on-demand InvokeModel, one call per record."""
        for record in records:
            started = time.perf_counter()
            response = self.runtime.invoke_model(modelId=self.model, body=json.dumps(record.body),
                                                 contentType="application/json", accept="application/json")
            outputs = self.adapter.response(json.loads(response["body"].read()), record.requests[0].params)
            yield record, outputs, (time.perf_counter() - started) / len(record.requests)


class BedrockBatchBackend(BatchBackend):
    def __init__(self, config: BackendConfig):
        if not (config.bucket and config.role_arn):
            raise BackendError("bedrock-batch needs --bucket and --role-arn (the batch job's service role; "
                               "see 'selfconsistency bedrock role-policy')")
        super().__init__(BedrockJobs(config), config)


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key
