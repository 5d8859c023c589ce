"""Amazon Bedrock batch inference: records to S3, model invocation jobs, results joined back by record id.

Every step's state is saved in the run's store before and after its API call, so a crashed run, started
again, reattaches to its jobs instead of paying for new ones; a job's clientRequestToken is derived from
the run and the job's records, so even a create call retried after a crash starts no second job. Records
that come back with an error, or that a Failed / Expired / Stopped / PartiallyCompleted job never
processed, go into a follow-up job, or, when fewer than a job's minimum remain, to on-demand InvokeModel
calls. boto3 finds credentials and endpoints itself (profiles, environment, AWS_ENDPOINT_URL_*).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence

from ..costs import PriceTable
from ..store import SampleStore
from .base import BackendConfig, BackendError, BudgetExceeded, Generation, GenerationRequest
from .bedrock_bodies import ParsedOutput, adapter_for
from .bedrock_plan import PlanError, Quotas, Record, pack, split_jobs

IN_FLIGHT = ("planned", "creating", "Submitted", "Validating", "Scheduled", "InProgress", "Stopping")
FINISHED = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
MAX_ROUNDS = 4  # follow-up rounds for records that keep failing


class BedrockBatchBackend:
    name = "bedrock-batch"

    def __init__(self, config: BackendConfig):
        import boto3
        from botocore.config import Config

        if not (config.bucket and config.role_arn and config.run_dir):
            raise BackendError("bedrock-batch needs --bucket and --role-arn (the batch job's service role; "
                               "see 'selfconsistency bedrock role-policy')")
        self.config = config
        self.model = config.model
        self.adapter = adapter_for(config.model, converse=config.converse)
        retries = Config(retries={"mode": "adaptive", "max_attempts": 10})
        self.s3 = boto3.client("s3", region_name=config.region, config=retries)
        self.bedrock = boto3.client("bedrock", region_name=config.region, config=retries)
        self.runtime = boto3.client("bedrock-runtime", region_name=config.region, config=retries)
        self.store = SampleStore(config.run_dir)
        self.quotas = Quotas(min_records_per_job=config.min_records_per_job,
                             max_records_per_job=config.max_records_per_job,
                             max_jobs_in_flight=config.max_jobs_in_flight)
        self.created_jobs = 0  # create calls this process made (tests check reattachment with it)

    # -- the whole workflow ----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        records = {r.record_id: r for r in pack(list(requests), self.adapter)}
        done: set[str] = set()
        for round_number in range(MAX_ROUNDS):
            remaining = {rid: r for rid, r in records.items() if rid not in done}
            if not remaining:
                return
            attached = [j for j in self.store.jobs(self.name) if j["status"] in IN_FLIGHT + FINISHED
                        and set(j["records"]) & remaining.keys()]
            covered = {rid for j in attached for rid in j["records"]}
            fresh = [r for rid, r in remaining.items() if rid not in covered]
            continuing = round_number > 0 or bool(self.store.jobs(self.name))
            if fresh and not attached and len(fresh) < self.quotas.min_records_per_job and continuing:
                self._check_cost(fresh, batch=False)
                yield from self._on_demand(fresh, done)  # too few left for a job: the remainder of a run
                continue
            chunks = self._split(fresh)
            if chunks:
                self._check_cost(fresh)
            for chunk in chunks:
                attached.append(self._plan_job(chunk, round_number))
            yield from self._run_jobs(attached, remaining, done)
        missing = len(records) - len(done)
        if missing:
            raise BackendError(f"{missing} records still failed after {MAX_ROUNDS} rounds; run again to retry")

    def _check_cost(self, records: list[Record], batch: bool = True) -> None:
        """Print the estimate of the jobs about to be planned; refuse them if, with what the run already
        spent, they could pass --max-cost or --max-tokens-total. Nothing is uploaded before this check.

        Prompt tokens are estimated at 4 characters each; output at max_tokens for every generation.
        """
        prompt = sum(len(json.dumps(r.model_input)) // 4 for r in records)
        output = sum(len(r.requests) * r.requests[0].params.max_tokens for r in records)
        limit = self.config.max_tokens_total
        if limit is not None and self.config.tokens_spent + prompt + output > limit:
            raise BudgetExceeded(f"the next jobs could use {prompt + output:,} tokens on top of "
                                 f"{self.config.tokens_spent:,} spent, past --max-tokens-total {limit:,}; "
                                 "nothing was submitted")
        try:
            table = PriceTable.from_file(self.config.prices_file)
            price, batch_price = table.price(self.model, batch=batch), table.price(self.model, batch=True)
        except KeyError as exc:
            if self.config.max_cost is not None:
                raise BackendError(f"--max-cost needs a price: {exc.args[0]}") from None
            sys.stderr.write(f"no price known for {self.model}: no cost estimate (give a price file)\n")
            return
        spent = sum(batch_price.cost(j["manifest"].get("inputTokenCount", 0), j["manifest"].get("outputTokenCount", 0))
                    for j in self.store.jobs(self.name) if j["manifest"])
        estimate = price.cost(prompt, output)
        sys.stderr.write(f"{'batch' if batch else 'on-demand'} estimate: {len(records)} records, ~{prompt:,} "
                         f"prompt tokens, at most {output:,} output tokens: at most ${estimate:,.2f} "
                         f"(${spent:,.2f} spent so far by batch jobs)\n")
        if self.config.max_cost is not None and spent + estimate > self.config.max_cost:
            raise BudgetExceeded(f"the estimate ${estimate:,.2f} on top of ${spent:,.2f} spent is above "
                                 f"--max-cost ${self.config.max_cost:,.2f}; nothing was submitted")

    def _split(self, records: list[Record]) -> list[list[Record]]:
        if not records:
            return []
        try:
            return split_jobs(records, self.quotas)
        except PlanError as exc:
            raise BackendError(str(exc)) from None

    def _plan_job(self, records: list[Record], round_number: int) -> dict:
        ids = sorted(r.record_id for r in records)
        key = hashlib.sha256(f"{self.config.run_id}|{self.model}|{round_number}|{','.join(ids)}".encode()).hexdigest()
        key = key[:40]
        base = f"s3://{self.config.bucket}/{self.config.s3_prefix.strip('/')}"
        self.store.put_job(key, self.name, self.model, f"{base}/input/{key}/records.jsonl", f"{base}/output/{key}/",
                           {r.record_id: [[q.question_id, q.temperature, q.path_index] for q in r.requests]
                            for r in records})
        return next(j for j in self.store.jobs(self.name) if j["job_key"] == key)

    # -- jobs ------------------------------------------------------------------------------------

    def _run_jobs(self, jobs: list[dict], records: dict[str, Record], done: set[str]) -> Iterator[Generation]:
        waiting = [j for j in jobs if j["status"] in ("planned", "creating")]
        running = [j for j in jobs if j["status"] in IN_FLIGHT and j not in waiting]
        finished = [j for j in jobs if j["status"] in FINISHED]
        for job in finished:  # ended before a crash but not collected
            yield from self._collect(job, records, done)
        while waiting or running:
            while waiting and len(running) < self.quotas.max_jobs_in_flight:
                job = waiting.pop(0)
                self._submit(job, records)
                running.append(job)
            time.sleep(self.config.poll_seconds)
            for job in list(running):
                status = self.bedrock.get_model_invocation_job(jobIdentifier=job["arn"])
                progress = (status["status"], status.get("processedRecordCount"), status.get("totalRecordCount"))
                if progress != job.get("_progress"):
                    job["_progress"] = progress
                    counted = f", {progress[1]}/{progress[2]} records" if progress[2] else ""
                    sys.stderr.write(f"batch job {job['job_key'][:12]}: {status['status']}{counted}\n")
                if status["status"] != job["status"]:
                    self.store.update_job(job["job_key"], status=status["status"], message=status.get("message"))
                    job["status"] = status["status"]
                if job["status"] in FINISHED:
                    running.remove(job)
                    self.store.update_job(job["job_key"], ended_at=time.time())
                    yield from self._collect(job, records, done)

    def _submit(self, job: dict, records: dict[str, Record]) -> None:
        bucket, key = _split_uri(job["input_uri"])
        if self.config.create_bucket:
            self._ensure_bucket(bucket)
        lines = [records[rid].line() for rid in job["records"] if rid in records]
        self.s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
        self.store.update_job(job["job_key"], status="creating")
        response = self.bedrock.create_model_invocation_job(
            jobName=f"sc-{self.config.run_id[:20]}-{job['job_key'][:12]}", roleArn=self.config.role_arn,
            modelId=self.model, clientRequestToken=job["job_key"],
            inputDataConfig={"s3InputDataConfig": {"s3Uri": job["input_uri"]}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": job["output_uri"]}},
            timeoutDurationInHours=24,
            **({"modelInvocationType": "Converse"} if self.config.converse else {}))
        self.created_jobs += 1
        job.update(arn=response["jobArn"], status="Submitted")
        self.store.update_job(job["job_key"], arn=response["jobArn"], status="Submitted", submitted_at=time.time())

    def _ensure_bucket(self, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except self.s3.exceptions.ClientError:
            region = self.s3.meta.region_name
            extra = {} if region in (None, "us-east-1") else \
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
            self.s3.create_bucket(Bucket=bucket, **extra)

    def _collect(self, job: dict, records: dict[str, Record], done: set[str]) -> Iterator[Generation]:
        job_id = job["arn"].rsplit("/", 1)[-1] if job.get("arn") else None
        if job_id is None:
            return
        bucket, prefix = _split_uri(job["output_uri"])
        manifest = self._read_json(bucket, f"{prefix}{job_id}/manifest.json.out")
        lines = self._read_lines(bucket, f"{prefix}{job_id}/records.jsonl.out")
        started = job.get("submitted_at") or job["created_at"]
        wall = max(time.time() - started, 0.0)
        paths = sum(len(records[line["recordId"]].requests) for line in lines if line.get("recordId") in records)
        for line in lines:
            record = records.get(line.get("recordId"))
            if record is None or record.record_id in done or "modelOutput" not in line:
                continue
            outputs = self.adapter.response(line["modelOutput"], record.requests[0].params)
            if len(outputs) < len(record.requests):
                continue  # fewer generations than asked: the record goes round again
            done.add(record.record_id)
            yield from _generations(record, outputs, wall / max(paths, 1))
        self.store.update_job(job["job_key"], status="collected", manifest=manifest)
        job["status"] = "collected"

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

    # -- the small remainder -----------------------------------------------------------------------

    def _on_demand(self, records: list[Record], done: set[str]) -> Iterator[Generation]:
        for record in records:
            started = time.perf_counter()
            response = self.runtime.invoke_model(modelId=self.model, body=json.dumps(record.model_input),
                                                 contentType="application/json", accept="application/json")
            outputs = self.adapter.response(json.loads(response["body"].read()), record.requests[0].params)
            if len(outputs) < len(record.requests):
                continue
            done.add(record.record_id)
            yield from _generations(record, outputs, (time.perf_counter() - started) / len(record.requests))

    def close(self) -> None:
        self.store.close()


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _generations(record: Record, outputs: list[ParsedOutput], seconds_each: float) -> Iterator[Generation]:
    """One Generation per path of a record. The prompt is billed once per record: its input tokens go to
    the record's first path; paths without counts get a characters/4 estimate."""
    for position, (request, output) in enumerate(zip(record.requests, outputs, strict=False)):
        prompt_tokens = (output.input_tokens or len(json.dumps(record.model_input)) // 4) if position == 0 else 0
        completion = output.output_tokens if output.output_tokens is not None else max(1, len(output.text) // 4)
        yield Generation(request=request, text=output.text, prompt_tokens=prompt_tokens,
                         completion_tokens=completion, latency_s=seconds_each, finish_reason=output.finish_reason)
