"""The OpenAI Batch API: a JSONL file of requests uploaded with purpose "batch", one batch per job,
results joined back on custom_id. Half the price of the synchronous API; results within 24 hours.

The durable workflow (state saved around every call, reattaching after a crash, follow-up jobs) is
`batch_jobs.BatchJobRunner`; this module is OpenAI's side of it. Each batch carries its job key in its
metadata, so a create call retried after a crash finds the batch it made instead of paying for a second.
Lines answered with an error (the error file), and lines a failed, expired or cancelled batch never
answered, go into follow-up batches. Paths of one (question, temperature) share a request as `n` choices.
The API key comes from OPENAI_API_KEY and is never written anywhere.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from functools import partial
from typing import Any

import msgspec

from ..audit import redact_message, redact_urls
from .base import BackendConfig, BackendError, BackendSpec, GenerationRequest, show_body
from .batch_jobs import (
    MALFORMED_CODE,
    STOPPED_CODE,
    BatchBackend,
    BatchOptions,
    JobGone,
    JobResults,
    JobState,
    retryable_status,
)
from .batch_plan import Quotas, Record, input_file, pack
from .bedrock_bodies import json_string
from .openai_compat import OpenAIServerOptions, parse_response, request_body

MAX_REQUESTS_PER_BATCH = 50_000
MAX_FILE_BYTES = 200_000_000
JOB_KEY = "selfconsistency_job"  # the metadata field that names a batch's job


class OpenAIBatchOptions(OpenAIServerOptions, BatchOptions):
    pass


class OpenAIBatchJobs:
    """OpenAI's side of the batch workflow (`batch_jobs.JobService`)."""

    name = "openai-batch"
    cancellable = ("validating", "in_progress", "finalizing")
    in_flight = (*cancellable, "cancelling")
    finished = ("completed", "failed", "expired", "cancelled")
    stopped = ("cancelled",)
    too_small = ""  # a batch may hold a single request

    def __init__(self, config: BackendConfig):
        import openai

        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise BackendError("set OPENAI_API_KEY for the OpenAI Batch API")
        self.options = options = config.options_as(OpenAIBatchOptions)
        self.model = config.model
        self.endpoint = "/v1/chat/completions" if options.api == "chat" else "/v1/completions"
        self.client = openai.OpenAI(api_key=api_key, base_url=options.base_url, timeout=options.timeout_s,
                                    max_retries=options.max_retries)
        self._api_error = openai.APIError
        self.quotas = Quotas(min_records_per_job=1,
                             max_records_per_job=min(options.max_records_per_job, MAX_REQUESTS_PER_BATCH),
                             max_file_bytes=MAX_FILE_BYTES, max_job_bytes=MAX_FILE_BYTES,
                             max_jobs_in_flight=options.max_jobs_in_flight)

    @contextmanager
    def _calling(self, what: str):
        try:
            yield
        except self._api_error as exc:
            raise BackendError(f"{redact_urls(self.options.base_url or 'OpenAI API')}: {what}: {type(exc).__name__}: "
                               f"{redact_message(str(getattr(exc, 'message', exc)), self.options.base_url)}"
                               ) from None

    def _line(self, record_id: str, body_json: str) -> str:
        """json.dumps({"custom_id": ..., "method": "POST", "url": ..., "body": body}, ensure_ascii=False)."""
        return (f'{{"custom_id": {json_string(record_id)}, "method": "POST", "url": {json_string(self.endpoint)}, '
                f'"body": {body_json}}}')

    def pack(self, requests: list[GenerationRequest]) -> list[Record]:
        build = partial(_body, self.model, self.options.api)
        return pack(requests, self.options.paths_per_request, build, self._line)

    def locations(self, job_key: str) -> tuple[str, str]:
        return f"sc-{job_key}.jsonl", ""  # the input file's name; the output file's id comes with the batch

    def request(self, job_key: str) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "completion_window": "24h", "metadata": {JOB_KEY: job_key}}

    def find(self, job: dict[str, Any]) -> str | None:
        return self._batch_for(job["job_key"], since=job["created_at"])

    def submit(self, job: dict[str, Any], lines: list[str]) -> str:
        key = job["job_key"]
        with self._calling("upload"):
            uploaded = self.client.files.create(file=(job["input_uri"], input_file(lines)), purpose="batch")
        with self._calling("create batch"):
            batch = self.client.batches.create(input_file_id=uploaded.id, **self.request(key))
        return batch.id

    def _batch_for(self, key: str, since: float) -> str | None:
        """The batch an earlier process created for this job, if it got that far (newest first, so the
        search stops at batches older than the job)."""
        with self._calling("list batches"):
            for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get(JOB_KEY) == key:
                    return batch.id
                if batch.created_at < since - 60:
                    return None
        return None

    def poll(self, job: dict[str, Any]) -> JobState:
        import openai

        with self._calling("retrieve batch"):
            try:
                batch = self.client.batches.retrieve(job["job_id"])
            except openai.NotFoundError:
                raise JobGone(f"{redact_urls(self.options.base_url or 'OpenAI API')} does not know batch "
                              f"{job['job_id']}") from None
        counts = batch.request_counts
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        message = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors)
        # OpenAI fails a batch only at validation (its input file): the same input would fail the same way
        return JobState(batch.status, message or None, counts.completed + counts.failed if counts else None,
                        counts.total if counts else None, invalid=batch.status == "failed")

    def cancel(self, job: dict[str, Any]) -> None:
        with self._calling("cancel batch"):
            self.client.batches.cancel(job["job_id"])

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults:
        with self._calling("retrieve batch"):
            batch = self.client.batches.retrieve(job["job_id"])
        results = JobResults()
        tokens = {"input": 0, "output": 0}
        ok = errors = 0
        for line in self._file_lines(batch.output_file_id) + self._file_lines(batch.error_file_id):
            if line.get("_unreadable"):  # not a JSON object: what it names gets its failure
                named = [rid for rid in line["_ids"] if rid in records]
                results.errors.update({rid: (MALFORMED_CODE, "not in the Batch API's output format", True)
                                       for rid in named})
                results.unreadable += not named
                errors += max(len(named), 1)
                continue
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or custom_id not in job["records"]:
                # a request this batch was never sent: filing it under that id would invent a record
                results.unreadable += 1
                errors += 1
                continue
            try:
                response = line.get("response") or {}
                if line.get("error") or response.get("status_code") != 200:
                    errors += 1
                    if custom_id in records:
                        results.errors[custom_id] = _line_error(line)
                    continue
                usage = response["body"].get("usage") or {}
                used = (int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
                outputs = parse_response(response["body"], self.options.api)
                if any(not isinstance(output.text, str) for output in outputs):
                    raise TypeError("an answer that is not text")
                if custom_id in records:
                    if len(outputs) < len(records[custom_id].requests):  # fewer choices than the n asked
                        raise ValueError("fewer choices than asked")
                    results.outputs[custom_id] = outputs
                ok += 1
                tokens["input"] += used[0]
                tokens["output"] += used[1]
            except Exception:  # whatever one line's body breaks is that record's failure, not the collection's
                errors += 1
                if custom_id in records:
                    results.errors[custom_id] = (MALFORMED_CODE, "not in the Batch API's output format", True)
        results.manifest = {"totalRecordCount": len(job["records"]), "processedRecordCount": ok + errors,
                            "successRecordCount": ok, "errorRecordCount": errors,
                            "inputTokenCount": tokens["input"], "outputTokenCount": tokens["output"]}
        return results

    def _file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        with self._calling("download results"):
            text = self.client.files.content(file_id).text
        return file_lines(text)

    def close(self) -> None:
        self.client.close()


_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def file_lines(text: str) -> list[dict[str, Any]]:
    """A result file's lines, split at newlines only: a JSON text may hold U+2028 or U+0085 unescaped (in
    an answer's text), where str.splitlines would cut it."""
    return [_parsed(line) for line in text.split("\n") if line.strip()]


_JSON = msgspec.json.Decoder()


def _parsed(raw: str) -> dict[str, Any]:
    """A result line (by msgspec, or json for what only json reads, e.g. NaN); one that is not a JSON object
    keeps what can be read of its custom_ids (a whole file as one JSON array names them all), to be counted
    as those records' failures rather than abort the collection."""
    try:
        line = _JSON.decode(raw)
    except msgspec.MsgspecError:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
    if isinstance(line, dict):
        return line
    return {"_unreadable": True, "_ids": [found.group(1) for found in _CUSTOM_ID.finditer(raw)]}


def _line_error(line: dict[str, Any]) -> tuple[str, str, bool]:
    """(code, message, retryable) of an output or error file line that failed: the request's HTTP status
    and the API's error object, or the line's own error object when the request was never made
    (documented codes: batch_cancelled, a user's stop; batch_expired and request_timeout, worth again)."""
    response = line.get("response") or {}
    status = response.get("status_code")
    error = line.get("error") or (response.get("body") or {}).get("error") or {}
    if error.get("code") == "batch_cancelled":
        return STOPPED_CODE, str(error.get("message", "the batch was cancelled before this request ran")), False
    name = error.get("code") or error.get("type") or ""
    code = " ".join(str(part) for part in (status, name) if part) or "error"
    return code, str(error.get("message", "")), retryable_status(status) if status else True


def _body(model: str, api: str, prompt, params, n: int) -> dict[str, Any]:
    return request_body(model, prompt, params, n, api, server_fields=False)  # the Batch API is OpenAI's own


class OpenAIBatchBackend(BatchBackend):
    def __init__(self, config: BackendConfig):
        super().__init__(OpenAIBatchJobs(config), config)


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    options = config.options_as(OpenAIBatchOptions)
    return show_body(_body(config.model, options.api, request.prompt, request.params, 1))


def _plan_records(config: BackendConfig, requests: list[GenerationRequest]) -> list[Record]:
    options = config.options_as(OpenAIBatchOptions)
    return pack(requests, options.paths_per_request, partial(_body, config.model, options.api), lambda rid, body: "")


BACKEND = BackendSpec(OpenAIBatchBackend, OpenAIBatchOptions, OpenAIBatchJobs, summary="the OpenAI Batch API",
                      preview=_preview, on_demand="openai", plan_records=_plan_records)
