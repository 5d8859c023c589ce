"""A local emulator of Amazon Bedrock's batch inference control plane, for tests and dry runs.

It speaks botocore's wire format for the four operations (CreateModelInvocationJob, GetModelInvocationJob,
ListModelInvocationJobs, StopModelInvocationJob), moves each job through Submitted -> Validating ->
Scheduled -> InProgress -> Completed on its own thread, reads the job's input JSONL from S3 and writes
`<output uri>/<job id>/<input file name>.out` (records in shuffled order, as AWS does not keep order) and
`manifest.json.out`, with outputs in each model family's response format from a deterministic generator.
Faults can be injected: failed, partially completed or expired jobs, per-record errors, malformed output
lines, throttling, access denied, the per-model quota of jobs in flight (ServiceQuotaExceededException),
and the whole service down (`EmulatorServer.down()` / `.up()`: connections refused on the same port).
Errors have botocore's shapes: the HTTP code of the service model and the code in `x-amzn-ErrorType`.
It also answers bedrock-runtime's InvokeModel and Converse (`POST /model/{id}/invoke|converse`), and,
like the real service, refuses an InvokeModel body that is not the model family's own (ValidationException).
Model ids may be cross-region inference profiles (`us.`...), their ARNs, or application inference profile
ARNs registered in `Emulator.profiles`, which GetInferenceProfile (`GET /inference-profiles/{id}`) describes
in the documented shape. The model families and their bodies are the emulator's own table (the Bedrock
model parameters pages), not the product's: Cohere Command R / R+ take their chat body (message,
chat_history, preamble) and refuse Command's text body.

What AWS documents and a money test needs: a create with a clientRequestToken already used and other
parameters is refused with ConflictException (400); a job is validated before it runs (a record count below
`min_records_per_job` fails it, as Bedrock's quota does); ListModelInvocationJobs can lag behind a create
(`Faults.list_lag_s`); a create can be registered and its reply delayed (`Faults.create_reply_delay_s`), so
that a test kills the client in between. `Emulator.billing` logs every record billed (batch and on demand)
with its tokens, so tests can check that every billed record is collected and counted; InvokeModel
answers carry the billed counts in X-Amzn-Bedrock-Input-Token-Count / -Output-Token-Count.

    python -m selfconsistency.testing.bedrock_emulator --port 8123 --s3-endpoint-url http://127.0.0.1:5000
    AWS_ENDPOINT_URL_BEDROCK=http://127.0.0.1:8123 aws bedrock list-model-invocation-jobs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..costs import CHARS_PER_TOKEN  # the emulated tokenizer: characters of text / CHARS_PER_TOKEN

ACCOUNT, REGION = "123456789012", "us-east-1"
_FLOW = ("Submitted", "Validating", "Scheduled", "InProgress")
_DONE = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")


@dataclass
class Faults:
    """What to break. Job faults apply to the first matching jobs created, in order."""

    fail_jobs: int = 0  # the next N jobs end Failed, no output
    expire_jobs: int = 0  # the next N jobs end Expired while Scheduled
    partial_jobs: int = 0  # the next N jobs end PartiallyCompleted with half their records processed
    record_error_rate: float = 0.0  # fraction of records answered with an error object (errorCode 500: retryable)
    bad_input: str | None = None  # records whose modelInput contains this text fail with errorCode 400 (bad request)
    throttle_every: int = 0  # every Nth API call gets a 429 ThrottlingException
    throttle_next: int = 0  # the next N API calls get a 429 ThrottlingException
    malformed_lines: int = 0  # per job, so many output lines are broken (half not JSON, half an odd shape)
    altered_echo: bool = False  # every output line echoes its modelInput with one more field (a normalised echo)
    foreign_ids: str | None = None  # every output line's recordId is another: "suffix" (id + "x") or "list" ([id])
    access_denied: bool = False  # every control-plane call gets a 403 AccessDeniedException
    in_flight_quota: int | None = None  # jobs not finished per model, past which create is refused
    runtime_delay_s: float = 0.0  # every on-demand call takes this long (after it is counted)
    create_reply_delay_s: float = 0.0  # a create registers its job, then waits this long before answering
    list_lag_s: float = 0.0  # ListModelInvocationJobs leaves out jobs created less than this long ago
    profile_access_denied: bool = False  # GetInferenceProfile gets a 403 AccessDeniedException


class ApiError(Exception):
    """An error answer with the service model's shape: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _validation(message: str) -> ApiError:
    return ApiError(400, "ValidationException", message)


# InvokeModel bodies per family: (required keys, allowed keys), as the real service validates them
_BODY_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "anthropic-claude": ({"anthropic_version", "max_tokens", "messages"},
                         {"anthropic_version", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
                          "stop_sequences"}),
    "meta-llama3": ({"prompt"}, {"prompt", "temperature", "top_p", "max_gen_len"}),
    "mistral": ({"prompt"}, {"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop"}),
    "cohere-command": ({"prompt"}, {"prompt", "temperature", "p", "k", "max_tokens", "num_generations",
                                    "stop_sequences", "return_likelihoods", "stream", "truncate"}),
    "cohere-command-r": ({"message"}, {"message", "chat_history", "documents", "search_queries_only", "preamble",
                                       "max_tokens", "temperature", "p", "k", "prompt_truncation",
                                       "frequency_penalty", "presence_penalty", "seed", "return_prompt", "tools",
                                       "tool_results", "stop_sequences", "raw_prompting"}),
    "ai21-j2": ({"prompt"}, {"prompt", "temperature", "topP", "maxTokens", "numResults", "stopSequences"}),
    "amazon-titan-text": ({"inputText"}, {"inputText", "textGenerationConfig"}),
    "amazon-nova": ({"messages"}, {"schemaVersion", "messages", "system", "inferenceConfig", "toolConfig"}),
    "converse": ({"messages"}, {"messages", "system", "inferenceConfig", "additionalModelRequestFields"}),
}


# Model id prefixes of each family (Bedrock's model ids), longest first where one prefixes another.
_FAMILIES = (("cohere.command-r", "cohere-command-r"), ("cohere.command", "cohere-command"), ("ai21.j2", "ai21-j2"),
             ("anthropic.claude", "anthropic-claude"), ("meta.llama3", "meta-llama3"), ("mistral.", "mistral"),
             ("amazon.nova", "amazon-nova"), ("amazon.titan-text", "amazon-titan-text"))
_GEOGRAPHIES = ("us", "us-gov", "eu", "apac", "jp", "au", "ca", "global")  # cross-region inference profiles
# CreateModelInvocationJob's parameters a repeated clientRequestToken must repeat
_CREATE_PARAMETERS = ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig", "timeoutDurationInHours",
                      "modelInvocationType", "tags", "vpcConfig")


def foundation_model(model_id: str, profiles: dict[str, str]) -> str:
    """The foundation model a model id, inference profile id or ARN runs (application profiles: `profiles`)."""
    bare = profiles.get(model_id, model_id)
    if bare.startswith("arn:"):
        kind, _, bare = bare.split(":", 5)[-1].partition("/")
        if kind not in ("inference-profile", "foundation-model"):
            raise _validation("The provided model identifier is invalid.")
    geography, _, rest = bare.partition(".")
    return rest if geography in _GEOGRAPHIES and "." in rest else bare


def family_of(model_id: str, converse: bool = False, profiles: dict[str, str] | None = None) -> str:
    if converse:
        return "converse"
    base = foundation_model(model_id, profiles or {})
    for prefix, family in _FAMILIES:
        if base.startswith(prefix):
            return family
    raise _validation("The provided model identifier is invalid.")


def check_body(family: str, body: dict[str, Any]) -> None:
    """Refuse a body that is not the family's format, with the real service's wording."""
    required, allowed = _BODY_KEYS[family]
    problems = [f"#: required key [{k}] not found" for k in sorted(required - body.keys())]
    problems += [f"#: extraneous key [{k}] is not permitted" for k in sorted(body.keys() - allowed)]
    if problems:
        raise _validation(f"Malformed input request: {''.join(problems)}, please reformat your input and try again.")


@dataclass
class Emulator:
    s3: Any  # a boto3 S3 client
    step_seconds: float = 0.05  # time spent in each status before the next
    faults: Faults = field(default_factory=Faults)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    most_in_flight: int = 0  # the most jobs ever not finished at once (quota checks)
    profiles: dict[str, str] = field(default_factory=dict)  # application inference profile ARN -> base model
    runtime_calls: list[tuple[str, str]] = field(default_factory=list)  # (invoke | converse, model id)
    # every record billed: {"job": job id (None on demand), "api": batch | invoke | converse, "model", "record":
    # the batch record id, "generations", "input_tokens", "output_tokens"}
    billing: list[dict[str, Any]] = field(default_factory=list)
    min_records_per_job: int = 1  # Bedrock's quota is 100 for most models: tests that need it set it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def family(self, model_id: str, converse: bool = False) -> str:
        """The body format of a model id, inference profile id or ARN (unknown ones are refused as AWS does)."""
        return family_of(model_id, converse, self.profiles)

    def billed(self, job: str | None = None) -> dict[str, int]:
        """What was billed (of one job: its ARN or id; None: everything): records, generations and tokens."""
        entries = [b for b in self.billing if job is None or b["job"] == job.rsplit("/", 1)[-1]]
        return {"records": len(entries), "generations": sum(b["generations"] for b in entries),
                "input_tokens": sum(b["input_tokens"] for b in entries),
                "output_tokens": sum(b["output_tokens"] for b in entries)}

    # -- operations --------------------------------------------------------------------------------

    def create(self, body: dict[str, Any], region: str = REGION) -> tuple[int, dict[str, Any]]:
        missing = [k for k in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig") if k not in body]
        if missing:
            raise _validation(f"missing required fields: {', '.join(missing)}")
        hours = body.get("timeoutDurationInHours", 24)
        if not 24 <= hours <= 168:
            raise _validation("timeoutDurationInHours must be between 24 and 168")
        invocation = body.get("modelInvocationType", "InvokeModel")
        self.family(body["modelId"], converse=invocation == "Converse")
        parameters = {name: body.get(name) for name in _CREATE_PARAMETERS}
        with self.lock:
            token = body.get("clientRequestToken")
            for job in self.jobs.values():
                if token and job["clientRequestToken"] == token:
                    if job["_parameters"] != parameters:  # the same token must repeat the same request
                        raise ApiError(400, "ConflictException",
                                       "Error occurred because of a conflict while performing an operation.")
                    return 200, {"jobArn": job["jobArn"]}  # idempotent: the same request, the same job
            quota = self.faults.in_flight_quota
            if quota is not None and sum(j["modelId"] == body["modelId"] and j["status"] not in _DONE
                                         for j in self.jobs.values()) >= quota:
                raise ApiError(400, "ServiceQuotaExceededException",
                               f"You have reached the maximum number ({quota}) of in-progress and submitted batch "
                               f"inference jobs for model {body['modelId']}.")
            job_id = hashlib.sha256(f"{body['jobName']}{token}{time.time_ns()}".encode()).hexdigest()[:12]
            now = _now()
            job = {"jobArn": f"arn:aws:bedrock:{region}:{ACCOUNT}:model-invocation-job/{job_id}",
                   "jobName": body["jobName"], "modelId": body["modelId"], "roleArn": body["roleArn"],
                   "clientRequestToken": token or job_id, "status": "Submitted", "submitTime": now,
                   "lastModifiedTime": now, "inputDataConfig": body["inputDataConfig"],
                   "outputDataConfig": body["outputDataConfig"],
                   "timeoutDurationInHours": hours, "modelInvocationType": invocation, "_id": job_id,
                   "_tags": body.get("tags", []), "_parameters": parameters, "_created": time.monotonic(),
                   "_fate": self._take_fate()}
            self.jobs[job_id] = job
            self.most_in_flight = max(self.most_in_flight,
                                      sum(j["status"] not in _DONE for j in self.jobs.values()))
        threading.Thread(target=self._run, args=(job_id,), daemon=True).start()
        time.sleep(self.faults.create_reply_delay_s)  # the job exists; its creator has not heard so yet
        return 200, {"jobArn": job["jobArn"]}

    def _take_fate(self) -> str:
        for name in ("fail_jobs", "expire_jobs", "partial_jobs"):
            if getattr(self.faults, name) > 0:
                setattr(self.faults, name, getattr(self.faults, name) - 1)
                return name
        return "complete"

    def get(self, identifier: str, region: str = REGION) -> tuple[int, dict[str, Any]]:
        job = self._job(identifier, region)
        return 200, {k: v for k, v in job.items() if not k.startswith("_")}

    def list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        lag = time.monotonic() - self.faults.list_lag_s  # a listing lags behind creates
        jobs = sorted((j for j in self.jobs.values() if j["_created"] <= lag), key=lambda j: j["submitTime"])
        if "statusEquals" in query:
            jobs = [j for j in jobs if j["status"] == query["statusEquals"]]
        if "nameContains" in query:
            jobs = [j for j in jobs if query["nameContains"] in j["jobName"]]
        start = int(query.get("nextToken", 0))
        size = int(query.get("maxResults", 1000))
        page = [{k: v for k, v in j.items() if not k.startswith("_")} for j in jobs[start: start + size]]
        out: dict[str, Any] = {"invocationJobSummaries": page}
        if start + size < len(jobs):
            out["nextToken"] = str(start + size)
        return 200, out

    def inference_profile(self, identifier: str, region: str = REGION) -> tuple[int, dict[str, Any]]:
        """GetInferenceProfile: an application profile registered in `profiles`, or a cross-region one."""
        if self.faults.profile_access_denied:
            raise ApiError(403, "AccessDeniedException", "User: arn:aws:iam::123456789012:user/test is not "
                           f"authorized to perform: bedrock:GetInferenceProfile on resource: {identifier}")
        application = identifier in self.profiles
        if not application and identifier.split(".", 1)[0] not in _GEOGRAPHIES:
            raise ApiError(404, "ResourceNotFoundException", f"Inference profile {identifier} not found.")
        base = foundation_model(identifier, self.profiles)
        regions = [region] if application else [region, "us-west-2"]
        now = _now()
        return 200, {"inferenceProfileName": identifier.rsplit("/", 1)[-1], "inferenceProfileArn": identifier if
                     application else f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{identifier}",
                     "inferenceProfileId": identifier.rsplit("/", 1)[-1], "status": "ACTIVE",
                     "type": "APPLICATION" if application else "SYSTEM_DEFINED", "createdAt": now, "updatedAt": now,
                     "models": [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/{base}"} for r in regions]}

    def stop(self, identifier: str, region: str = REGION) -> tuple[int, dict[str, Any]]:
        job = self._job(identifier, region)
        if job["status"] in _DONE:
            raise _validation(f"job is already {job['status']}")
        self._set(job, "Stopping")
        return 200, {}

    def _job(self, identifier: str, region: str) -> dict[str, Any]:
        """A job of this region (each region has its own jobs, as on AWS)."""
        job = self.jobs.get(identifier.rsplit("/", 1)[-1])
        if job is None or job["jobArn"].split(":")[3] != region:
            raise ApiError(404, "ResourceNotFoundException", f"The specified job {identifier} was not found.")
        return job

    # -- the job's life ----------------------------------------------------------------------------

    def _set(self, job: dict[str, Any], status: str, **extra: Any) -> None:
        with self.lock:
            job.update(status=status, lastModifiedTime=_now(), **extra)
            if status in _DONE:
                job["endTime"] = job["lastModifiedTime"]

    def _run(self, job_id: str) -> None:
        job = self.jobs[job_id]
        for status in _FLOW[1:]:
            time.sleep(self.step_seconds)
            if job["status"] == "Stopping":
                self._set(job, "Stopped")
                return
            if status == "Scheduled" and self._invalid(job):
                return
            if status == "InProgress" and job["_fate"] == "expire_jobs":
                self._set(job, "Expired", message="job timed out before it started")
                return
            self._set(job, status)
        if job["_fate"] == "fail_jobs":
            self._set(job, "Failed", message="emulated failure")
            return
        try:
            self._process(job)
        except Exception as exc:  # unreadable input, bad JSON: what AWS reports as a failed job
            self._set(job, "Failed", message=f"{type(exc).__name__}: {exc}")

    def _invalid(self, job: dict[str, Any]) -> bool:
        """Validation, as Bedrock's before a job is scheduled: the record quota (a job below it fails whole)."""
        source = urllib.parse.urlparse(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        try:
            text = self.s3.get_object(Bucket=source.netloc, Key=source.path.lstrip("/"))["Body"].read().decode()
        except Exception:  # noqa: BLE001 - no input to read: the role cannot reach it, as AWS reports it
            self._set(job, "Failed", message="Validation failed: the input data could not be read from S3 (check the "
                                             "service role's access)")
            return True
        count = sum(1 for line in text.splitlines() if line.strip())
        if count < self.min_records_per_job:
            self._set(job, "Failed", message=f"Validation failed: the input has {count} records, below the minimum "
                                             f"of {self.min_records_per_job} records per batch inference job")
            return True
        return False

    def _process(self, job: dict[str, Any]) -> None:
        source = urllib.parse.urlparse(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        target = urllib.parse.urlparse(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        name = source.path.rsplit("/", 1)[-1]
        text = self.s3.get_object(Bucket=source.netloc, Key=source.path.lstrip("/"))["Body"].read().decode()
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        job["totalRecordCount"] = len(records)
        family = self.family(job["modelId"], converse=job["modelInvocationType"] == "Converse")
        rng = random.Random(job["_id"])
        processed = records[: len(records) // 2] if job["_fate"] == "partial_jobs" else records
        lines, counts = [], {"input": 0, "output": 0, "ok": 0, "error": 0}
        for record in processed:
            if job["status"] == "Stopping":
                break
            error = None
            if self.faults.bad_input and self.faults.bad_input in json.dumps(record["modelInput"]):
                error = {"errorCode": 400, "errorMessage": "bad request: emulated malformed input"}
            elif rng.random() < self.faults.record_error_rate:
                error = {"errorCode": 500, "errorMessage": "emulated internal error"}
            if error is not None:  # the documented shape: an error object replaces modelOutput
                counts["error"] += 1
                lines.append({"recordId": record.get("recordId"), "modelInput": record["modelInput"], "error": error})
                continue
            try:
                check_body(family, record["modelInput"])
            except ApiError as exc:  # a record the model cannot take fails alone, as on AWS
                counts["error"] += 1
                lines.append({"recordId": record.get("recordId"), "modelInput": record["modelInput"],
                              "error": {"errorCode": 400, "errorMessage": exc.message}})
                continue
            output, used_in, used_out = model_output(family, record["modelInput"],
                                                     output_seed(record.get("recordId", ""), record["modelInput"]))
            with self.lock:  # processed and answered: billed
                self.billing.append({"job": job["_id"], "api": "batch", "model": job["modelId"],
                                     "record": record.get("recordId"), "generations": _generations(output),
                                     "input_tokens": used_in, "output_tokens": used_out})
            counts["ok"] += 1
            counts["input"] += used_in
            counts["output"] += used_out
            lines.append({"recordId": record.get("recordId"), "modelInput": record["modelInput"],
                          "modelOutput": output})
            job["processedRecordCount"] = counts["ok"] + counts["error"]
        if self.faults.altered_echo:
            for line in lines:
                line["modelInput"] = {**line["modelInput"], "normalised": True}
        for line in lines if self.faults.foreign_ids else ():
            line["recordId"] = [line["recordId"]] if self.faults.foreign_ids == "list" else f"{line['recordId']}x"
        rng.shuffle(lines)  # AWS does not keep input order
        texts = [json.dumps(line) for line in lines]
        for index in range(min(self.faults.malformed_lines, len(texts))):  # the first lines after shuffling
            texts[index] = texts[index][: len(texts[index]) // 2] if index % 2 == 0 else \
                json.dumps({"recordId": lines[index]["recordId"], "modelOutput": {"unexpected": True}})
        prefix = f"{target.path.strip('/')}/{job['_id']}/".lstrip("/")
        self.s3.put_object(Bucket=target.netloc, Key=f"{prefix}{name}.out",
                           Body="".join(text + "\n" for text in texts).encode())
        manifest = {"totalRecordCount": len(records), "processedRecordCount": len(lines),
                    "successRecordCount": counts["ok"], "errorRecordCount": counts["error"],
                    "inputTokenCount": counts["input"], "outputTokenCount": counts["output"]}
        self.s3.put_object(Bucket=target.netloc, Key=f"{prefix}manifest.json.out", Body=json.dumps(manifest).encode())
        final = "Stopped" if job["status"] == "Stopping" else \
            "PartiallyCompleted" if job["_fate"] == "partial_jobs" else "Completed"
        self._set(job, final, processedRecordCount=len(lines), successRecordCount=counts["ok"],
                  errorRecordCount=counts["error"])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9 // 10**6:03d}Z"


def output_seed(record_id: str, model_input: dict[str, Any]) -> str:
    """What a record's generated text depends on: its id and its request body (another question, another text)."""
    digest = hashlib.sha256(json.dumps(model_input, sort_keys=True).encode()).hexdigest()[:12]
    return f"{record_id}:{digest}"


def _text_length(value: Any) -> int:
    """Characters of the text in a request body (its strings, not its keys, numbers and punctuation): what the
    emulated tokenizer counts, so that billed counts differ from an estimate made from the body's JSON."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_length(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    return 0


def generated_text(record_id: str, index: int) -> str:
    """Deterministic reasoning text with a small-number answer, the same for the same record and index."""
    rng = random.Random(f"{record_id}:{index}")
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f" {a} + {b} = {a + b}. The answer is {a + b}."


def model_output(family: str, model_input: dict[str, Any], record_id: str) -> tuple[dict[str, Any], int, int]:
    """(response body in the family's format, input tokens, output tokens) for one record."""
    n = int(model_input.get("num_generations") or model_input.get("numResults") or 1)
    texts = [generated_text(record_id, i) for i in range(n)]
    used_in = max(1, _text_length(model_input) // CHARS_PER_TOKEN)  # the text a tokenizer sees, not the JSON
    used_out = sum(max(1, len(t) // CHARS_PER_TOKEN) for t in texts)
    if family == "cohere-command":
        body: dict[str, Any] = {"generations": [{"text": t, "finish_reason": "COMPLETE"} for t in texts]}
    elif family == "cohere-command-r":
        body = {"response_id": record_id[:36], "text": texts[0].strip(), "generation_id": record_id[-36:],
                "finish_reason": "COMPLETE", "chat_history": [*model_input.get("chat_history", []),
                                                              {"role": "USER", "message": model_input["message"]},
                                                              {"role": "CHATBOT", "message": texts[0].strip()}],
                "meta": {"api_version": {"version": "1"},
                         "billed_units": {"input_tokens": used_in, "output_tokens": used_out}}}
    elif family == "ai21-j2":
        body = {"prompt": {"tokens": [{}] * used_in}, "completions": [
            {"data": {"text": t, "tokens": [{}] * max(1, len(t) // CHARS_PER_TOKEN)},
             "finishReason": {"reason": "endoftext"}}
            for t in texts]}
    elif family == "anthropic-claude":
        body = {"content": [{"type": "text", "text": texts[0].strip()}], "stop_reason": "end_turn",
                "usage": {"input_tokens": used_in, "output_tokens": used_out}}
    elif family == "meta-llama3":
        body = {"generation": texts[0], "prompt_token_count": used_in, "generation_token_count": used_out,
                "stop_reason": "stop"}
    elif family == "mistral":
        body = {"outputs": [{"text": t, "stop_reason": "stop"} for t in texts]}
    elif family == "amazon-titan-text":
        body = {"inputTextTokenCount": used_in,
                "results": [{"tokenCount": used_out, "outputText": texts[0], "completionReason": "FINISH"}]}
    else:  # amazon-nova and converse share the message shape
        body = {"output": {"message": {"role": "assistant", "content": [{"text": texts[0].strip()}]}},
                "stopReason": "end_turn", "usage": {"inputTokens": used_in, "outputTokens": used_out}}
    return body, used_in, used_out


def _generations(output: dict[str, Any]) -> int:
    """How many generations a response body holds (Cohere Command and Jurassic-2 several, others one)."""
    return len(output.get("generations") or output.get("completions") or output.get("outputs") or [None])


def make_server(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict[str, Any], error: str | None = None,
                   headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if error:
                    self.send_header("x-amzn-ErrorType", error)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a test killed it)
                pass

        def _answer(self, operation: Any) -> None:
            """Run an operation; faults and ApiErrors become the service model's error answers."""
            with emulator.lock:
                emulator.calls += 1
                every, faults = emulator.faults.throttle_every, emulator.faults
                throttled = (bool(every) and emulator.calls % every == 0) or faults.throttle_next > 0
                faults.throttle_next = max(0, faults.throttle_next - 1)
            try:
                if throttled:
                    raise ApiError(429, "ThrottlingException", "Rate exceeded")
                status, payload, *headers = operation()
            except ApiError as exc:
                self._reply(exc.status, {"message": exc.message}, exc.code)
                return
            self._reply(status, payload, headers=headers[0] if headers else None)

        def _region(self) -> str:
            """The region the client signed for (SigV4 credential scope), as AWS routes by region."""
            scope = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", self.headers.get("Authorization", ""))
            return scope.group(1) if scope else REGION

        def _control(self, operation: Any) -> Any:
            if emulator.faults.access_denied:
                raise ApiError(403, "AccessDeniedException", "User: arn:aws:iam::123456789012:user/test is not "
                                                             "authorized to perform this action")
            return operation()

        def _runtime(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
            model_id, _, operation = path[len("/model/"):].rpartition("/")
            family = emulator.family(model_id, converse=operation == "converse")
            check_body(family, body)
            if emulator.faults.bad_input and emulator.faults.bad_input in json.dumps(body):
                raise _validation("Malformed input request: emulated bad input")
            record_id = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:11]
            output, used_in, used_out = model_output(family, body, record_id)
            with emulator.lock:  # answered calls: paid on-demand work
                emulator.runtime_calls.append((operation, model_id))
                emulator.billing.append({"job": None, "api": operation, "model": model_id, "record": None,
                                         "generations": _generations(output), "input_tokens": used_in,
                                         "output_tokens": used_out})
            time.sleep(emulator.faults.runtime_delay_s)
            # InvokeModel's documented billing headers (Converse reports usage in its body)
            return 200, output, {"X-Amzn-Bedrock-Input-Token-Count": str(used_in),
                                 "X-Amzn-Bedrock-Output-Token-Count": str(used_out)}

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if path.startswith("/model/") and path.endswith(("/invoke", "/converse")):  # bedrock-runtime
                self._answer(lambda: self._runtime(path, body))
            elif path == "/model-invocation-job":
                self._answer(lambda: self._control(lambda: emulator.create(body, self._region())))
            elif path.startswith("/model-invocation-job/") and path.endswith("/stop"):
                job = path[len("/model-invocation-job/"): -len("/stop")]
                self._answer(lambda: self._control(lambda: emulator.stop(job, self._region())))
            else:
                self._reply(404, {"message": f"no operation at {path}"}, "UnknownOperationException")

        def do_GET(self) -> None:  # noqa: N802
            parsed = urllib.parse.urlparse(self.path)
            path = urllib.parse.unquote(parsed.path)
            if path == "/model-invocation-jobs":
                query = dict(urllib.parse.parse_qsl(parsed.query))
                self._answer(lambda: self._control(lambda: emulator.list(query)))
            elif path.startswith("/model-invocation-job/"):
                job = path[len("/model-invocation-job/"):]
                self._answer(lambda: self._control(lambda: emulator.get(job, self._region())))
            elif path.startswith("/inference-profiles/"):
                profile = path[len("/inference-profiles/"):]
                self._answer(lambda: self._control(lambda: emulator.inference_profile(profile, self._region())))
            else:
                self._reply(404, {"message": f"no operation at {path}"}, "UnknownOperationException")

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


class EmulatorServer:
    """The emulator served on one port that can be taken down (connections refused, as with an unreachable
    endpoint) and brought back on the same port; jobs go on running meanwhile."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0):
        self.emulator, self.host = emulator, host
        self._server = make_server(emulator, host, port)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._start()

    def _start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self._server.shutdown()
        self._server.server_close()  # the port no longer listens: clients get "connection refused"

    def up(self) -> None:
        self._server = make_server(self.emulator, self.host, self.port)
        self._start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--s3-endpoint-url", help="S3 endpoint (a moto server for dry runs); default: AWS")
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--record-error-rate", type=float, default=0.0)
    parser.add_argument("--in-flight-quota", type=int, help="jobs in flight per model before create is refused")
    args = parser.parse_args()
    import boto3

    s3 = boto3.client("s3", endpoint_url=args.s3_endpoint_url)
    emulator = Emulator(s3, step_seconds=args.step_seconds, faults=Faults(record_error_rate=args.record_error_rate,
                                                                         in_flight_quota=args.in_flight_quota))
    server = make_server(emulator, args.host, args.port)
    print(f"Bedrock batch emulator on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
