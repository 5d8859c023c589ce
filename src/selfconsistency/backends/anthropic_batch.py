"""Anthropic's Message Batches API: one batch per job (`requests: [{custom_id, params}]`, params a Messages
request), polled until `ended`, its JSONL results joined back on custom_id. Half the price of the Messages
API; prompt caching stacks with it (1-hour cache breakpoints: a batch may run longer than 5 minutes).

The durable workflow (state saved around every call, reattaching after a crash, follow-up jobs) is
`batch_jobs.BatchJobRunner`; this module is Anthropic's side of it. Every path is its own request (there is
no `n`); a batch holds at most 100,000 requests or 256 MB (split above that).

Results, as documented: `succeeded` lines are stored; `errored` ones are retried when the error is the
server's (overloaded_error, api_error, rate_limit_error, timeout_error) and stored with their type, never
resent, when the request's own (invalid_request_error...); `expired` requests go into a follow-up batch;
`canceled` ones (a `jobs stop`) wait for `jobs collect --resubmit`. A results stream cut short (fewer
lines than the batch counted, or a last line cut mid-way) is downloaded again; a half line is never
stored. Follow-up rounds smaller than `on_demand_below` records go to the Messages API, in the same ledger.
A create refused for a full queue of batches (429) waits and tries again.

A batch has no idempotency key and no metadata: a job a killed process left 'creating' is looked for as a
batch made after the job was planned with exactly the job's number of requests (`find`); its answers are
still checked against the job's record ids, so another run's batch can never be stored as this one's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ..costs import CHARS_PER_TOKEN
from .anthropic import (
    AnthropicServerOptions,
    api_errors,
    check_model,
    check_settings,
    checked_size,
    create_message,
    make_client,
    sampling_note,
    where,
)
from .anthropic_bodies import (
    RETRYABLE_ERRORS,
    Usage,
    cache_prefix_chars,
    cacheable,
    manifest_of,
    parse_message,
    request_body,
    usage_of,
)
from .base import BackendConfig, BackendError, BackendSpec, GenerationRequest, ParsedOutput, show_body
from .batch_jobs import (
    MALFORMED_CODE,
    STOPPED_CODE,
    BatchBackend,
    BatchOptions,
    JobGone,
    JobResults,
    JobState,
    RecordRefused,
)
from .batch_plan import Quotas, Record, pack
from .bedrock_bodies import json_string
from .openai_batch import file_lines

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 250_000_000  # the documented 256 MB, with room for the request's own JSON
DOWNLOADS = 3  # tries at a complete results stream


class AnthropicBatchOptions(AnthropicServerOptions, BatchOptions):
    min_records_per_job: int = Field(default=1, ge=1)  # Message Batches take a batch of any size
    on_demand_below: int = Field(default=20, ge=0)  # follow-up rounds this small go to the Messages API


class AnthropicBatchJobs:
    """Anthropic's side of the batch workflow (`batch_jobs.JobService`)."""

    name = "anthropic-batch"
    cancellable = ("in_progress",)
    in_flight = ("in_progress", "canceling")
    finished = ("ended", "failed")  # failed: a job `jobs forget` gave up (Anthropic's batches only end)
    stopped = ()  # a canceled batch ends; its `canceled` results name the requests it never ran
    too_small = ""  # a batch may hold one request

    def __init__(self, config: BackendConfig):
        self.options = options = config.options_as(AnthropicBatchOptions)
        self.model = config.model
        self.client = make_client(options, self.model)
        self.context: int | None = None  # the model's context window, once the Models API said
        self.quotas = Quotas(min_records_per_job=1,
                             max_records_per_job=min(options.max_records_per_job, MAX_REQUESTS_PER_BATCH),
                             max_file_bytes=MAX_BATCH_BYTES, max_job_bytes=MAX_BATCH_BYTES,
                             max_jobs_in_flight=options.max_jobs_in_flight, on_demand_below=options.on_demand_below)

    def _body(self, prompt, params, n: int) -> dict[str, Any]:
        ttl = "1h" if cacheable(self.model, prompt, self.options.cache_prompt) else None
        return request_body(self.model, prompt, params, ttl)

    def pack(self, requests: list[GenerationRequest]) -> list[Record]:
        records = pack(requests, 1, self._body, _line)
        sized = {id(r.body): r for r in records}  # a question's records share their body
        for record in sized.values():
            checked_size(record.requests[0], record.body, self.context)
        return records

    def cacheable_tokens(self, records: list[Record]) -> int:
        """The prompt tokens of `records` a cache hit would serve (the ledger's estimate with hits)."""
        return sum(cache_prefix_chars(r.requests[0].prompt) // CHARS_PER_TOKEN for r in records
                   if '"cache_control"' in r.line)

    def locations(self, job_key: str) -> tuple[str, str]:
        return f"anthropic-batch:{job_key}", ""  # the batch holds its input; its results_url comes when it ends

    def request(self, job_key: str) -> dict[str, Any]:
        return {}  # a batch's create takes its requests only: no option of the run's goes with it

    def find(self, job: dict[str, Any]) -> str | None:
        return self._batch_for(job)

    def submit(self, job: dict[str, Any], lines: list[str]) -> str:
        requests = [json.loads(line) for line in lines]
        wait = self.options.poll_seconds
        while True:
            try:
                with api_errors(self.client, "creating the batch"):
                    return self.client.messages.batches.create(requests=requests).id
            except BackendError as exc:
                if "rate_limit_error" not in str(exc):
                    raise
            log.warning(f"Anthropic's API refused a new batch (rate limit: a full queue of batches?): waiting "
                        f"{wait:g}s before trying again")
            time.sleep(wait)
            wait = min(wait * 2, 10 * self.options.poll_seconds)

    def _batch_for(self, job: dict[str, Any]) -> str | None:
        """The batch an earlier process created for this job before it crashed, if any: made after the job
        was planned (newest first, so the search stops at older ones), with the job's number of requests."""
        with api_errors(self.client, "listing batches"):
            for batch in self.client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < job["created_at"]:
                    return None
                if _total(batch.request_counts) == len(job["records"]):
                    return batch.id
        return None

    def poll(self, job: dict[str, Any]) -> JobState:
        import anthropic

        with api_errors(self.client, f"retrieving batch {job['job_id']}"):
            try:
                batch = self.client.messages.batches.retrieve(job["job_id"])
            except anthropic.NotFoundError:
                raise JobGone(f"{where(self.client)} does not know batch {job['job_id']}") from None
        total = _total(batch.request_counts)
        return JobState(batch.processing_status, None, total - batch.request_counts.processing, total)

    def cancel(self, job: dict[str, Any]) -> None:
        with api_errors(self.client, f"canceling batch {job['job_id']}"):
            self.client.messages.batches.cancel(job["job_id"])

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults:
        if job["status"] == "failed":  # forgotten: whatever it made is not known here
            return JobResults(manifest=manifest_of([], len(job["records"]), 0))
        with api_errors(self.client, f"retrieving batch {job['job_id']}"):
            batch = self.client.messages.batches.retrieve(job["job_id"])
        counts = batch.request_counts
        expected = counts.succeeded + counts.errored + counts.canceled + counts.expired
        lines = self._download(job["job_id"], expected)
        return read_results(lines, job["records"], records)

    def _download(self, batch_id: str, expected: int) -> list[dict[str, Any]]:
        """The results' lines; a stream with fewer complete lines than the batch counted (cut short, or cut
        mid-line) is downloaded again, and after DOWNLOADS tries what it had is read (a cut line is unreadable)."""
        import anthropic

        lines: list[dict[str, Any]] = []
        for attempt in range(1, DOWNLOADS + 1):
            try:
                with api_errors(self.client, f"downloading the results of batch {batch_id}"):
                    with self.client.messages.batches.with_streaming_response.results(batch_id) as response:
                        data = response.read()
            except (BackendError, anthropic.APIError) as exc:
                if "cannot reach" not in str(exc) and attempt == DOWNLOADS:
                    raise
                log.warning(f"batch {batch_id}: results download failed ({exc}): downloading again")
                continue
            lines = file_lines(data.decode("utf-8", errors="replace"))
            whole = sum(1 for line in lines if not line.get("_unreadable"))
            if whole >= expected:
                return lines
            log.warning(f"batch {batch_id}: the results stream held {whole} of {expected} results (cut short): "
                        f"downloading again ({attempt} of {DOWNLOADS})")
        return lines

    def remainder(self, records: list[Record]) -> Iterator[tuple[Record, list[ParsedOutput], float]]:
        """Records too few for a batch: the Messages API, one call each, with the same body."""
        import anthropic

        for record in records:
            started = time.perf_counter()
            with api_errors(self.client, f"calling {self.model} on demand"):
                try:
                    message = create_message(self.client, record.body)
                except anthropic.BadRequestError as exc:  # the request's own fault: a refused record, not an abort
                    body = exc.body if isinstance(exc.body, dict) else {}
                    error = body.get("error") if isinstance(body.get("error"), dict) else {}
                    raise RecordRefused(str(error.get("type") or "invalid_request_error"),
                                        str(error.get("message") or exc.message)) from None
            yield record, [parse_message(message, record.requests[0].params)], time.perf_counter() - started

    def close(self) -> None:
        self.client.close()


def _line(record_id: str, body_json: str) -> str:
    """json.dumps({"custom_id": ..., "params": body}, ensure_ascii=False)."""
    return f'{{"custom_id": {json_string(record_id)}, "params": {body_json}}}'


def _total(counts) -> int:
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def read_results(lines: list[dict[str, Any]], job_records: dict[str, Any], records: dict[str, Record]) -> JobResults:
    """A batch's result lines: outputs and errors by record id (`records`: those of the job's records this
    run wants), and the job's manifest (every line of the job counted: all of it was billed)."""
    results = JobResults()
    usages: list[Usage] = []
    errors = 0
    for line in lines:
        if line.get("_unreadable"):  # not JSON (a line cut mid-way): what it names gets its failure
            named = [rid for rid in line["_ids"] if rid in records]
            results.errors.update({rid: (MALFORMED_CODE, "not in the Message Batches result format", True)
                                   for rid in named})
            results.unreadable += not named
            errors += 1
            continue
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or custom_id not in job_records:
            results.unreadable += 1  # a request this batch was never sent
            errors += 1
            continue
        record = records.get(custom_id)
        try:
            result = line["result"]
            kind = result["type"]
            if kind == "succeeded":
                usages.append(usage_of(result["message"].get("usage")))
                if record is not None:
                    results.outputs[custom_id] = [parse_message(result["message"], record.requests[0].params)]
                continue
            errors += 1
            if record is None:
                continue
            if kind == "errored":
                error = (result.get("error") or {}).get("error") or {}
                code = str(error.get("type") or "error")
                results.errors[custom_id] = (code, str(error.get("message", "")), code in RETRYABLE_ERRORS)
            elif kind == "canceled":
                results.errors[custom_id] = (STOPPED_CODE, "the batch was canceled before this request ran", False)
            elif kind == "expired":
                results.errors[custom_id] = ("expired", "the batch ended (24 hours) before this request ran", True)
            else:
                raise ValueError(f"unknown result type {kind!r}")
        except (KeyError, TypeError, ValueError, AttributeError):
            if record is not None:
                results.outputs.pop(custom_id, None)
                results.errors[custom_id] = (MALFORMED_CODE, "not in the Message Batches result format", True)
    results.manifest = manifest_of(usages, len(job_records), errors)
    return results


class AnthropicBatchBackend(BatchBackend):
    def __init__(self, config: BackendConfig):
        service = AnthropicBatchJobs(config)
        service.context = check_model(service.client, config.model)
        super().__init__(service, config)


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    options = config.options_as(AnthropicBatchOptions)
    ttl = "1h" if cacheable(config.model, request.prompt, options.cache_prompt) else None
    return show_body(request_body(config.model, request.prompt, request.params, ttl))


BACKEND = BackendSpec(AnthropicBatchBackend, AnthropicBatchOptions, AnthropicBatchJobs,
                      summary="Anthropic's Message Batches API", preview=_preview, on_demand="anthropic",
                      check_settings=check_settings, sampling_note=sampling_note)
