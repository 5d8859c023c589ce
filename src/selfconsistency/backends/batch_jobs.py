"""Durable batch jobs, shared by every batch backend (Bedrock batch inference, the OpenAI Batch API).

The workflow: pack paths into records, split them into jobs within the provider's quotas, save each job
in the run's store before and after every API call, submit up to the in-flight limit, poll, and collect
results joined on record id. Records a job never answered (errors, failed / expired / stopped jobs) go
into follow-up jobs, up to MAX_ROUNDS. A crashed run, started again, reattaches to its jobs instead of
paying for new ones; the provider makes a create call retried after a crash start no second job.

A provider supplies only what differs (`JobService`): its record format, its statuses and its API calls.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..costs import PriceTable, job_cost
from ..store import SampleStore
from .base import BackendConfig, BackendError, BudgetExceeded, Generation, GenerationRequest, ParsedOutput
from .batch_plan import PlanError, Quotas, Record, record_generations, split_jobs

MAX_ROUNDS = 4  # follow-up rounds for records that keep failing
PENDING = ("planned", "creating")  # our own statuses before the provider knows the job
SUBMITTED = "submitted"  # created, not yet polled


@dataclass(frozen=True)
class JobState:
    status: str  # the provider's own status word
    message: str | None = None
    processed: int | None = None
    total: int | None = None


@dataclass
class JobResults:
    outputs: dict[str, list[ParsedOutput]] = field(default_factory=dict)  # record id -> its generations
    manifest: dict[str, Any] | None = None  # counts and tokens, keys as in Bedrock's manifest.json.out


class JobService(Protocol):
    """One provider's side of batch jobs. `job` is a row of the store's jobs table (a dict)."""

    name: str  # the backend's name, under which its jobs are stored
    model: str
    quotas: Quotas
    in_flight: tuple[str, ...]  # provider statuses of a job that has not ended
    finished: tuple[str, ...]  # provider statuses of a job that has ended (results may be partial)
    cancellable: tuple[str, ...]  # provider statuses a job can be stopped from (not ended, not already stopping)
    too_small: str  # advice when a run has fewer records than one job's minimum

    def pack(self, requests: list[GenerationRequest]) -> list[Record]: ...

    def locations(self, job_key: str) -> tuple[str, str]:
        """Where the job's input and output live (stored with the job, shown to the user)."""
        ...

    def submit(self, job: dict[str, Any], lines: list[str], retried: bool) -> str:
        """Upload the input and create the job; return the provider's job id. `retried`: an earlier
        process may have made this call already and crashed before storing the id."""
        ...

    def poll(self, job: dict[str, Any]) -> JobState: ...

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults: ...

    def remainder(self, records: list[Record]) -> Iterator[tuple[Record, list[ParsedOutput], float]]:
        """Records too few for a job, generated another way: (record, outputs, seconds per path). Only
        called when the provider's jobs have a minimum size (quotas.min_records_per_job > 1)."""
        ...

    def cancel(self, job: dict[str, Any]) -> None: ...


class BatchJobRunner:
    def __init__(self, service: JobService, config: BackendConfig):
        self.service = service
        self.config = config
        self.store = SampleStore(config.run_dir)
        self.in_flight = (*PENDING, SUBMITTED, *service.in_flight)

    def jobs(self) -> list[dict[str, Any]]:
        return self.store.jobs(self.service.name)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        records = {r.record_id: r for r in self.service.pack(list(requests))}
        done: set[str] = set()
        quotas = self.service.quotas
        for round_number in range(MAX_ROUNDS):
            remaining = {rid: r for rid, r in records.items() if rid not in done}
            if not remaining:
                return
            attached = [j for j in self.jobs() if j["status"] in self.in_flight + self.service.finished
                        and set(j["records"]) & remaining.keys()]
            covered = {rid for j in attached for rid in j["records"]}
            fresh = [r for rid, r in remaining.items() if rid not in covered]
            continuing = round_number > 0 or bool(self.jobs())
            if fresh and not attached and len(fresh) < quotas.min_records_per_job and continuing:
                self._check_cost(fresh, batch=False)  # too few left for a job: the remainder of a run
                for record, outputs, seconds in self.service.remainder(fresh):
                    if len(outputs) >= len(record.requests):
                        done.add(record.record_id)
                        yield from record_generations(record, outputs, seconds)
                continue
            chunks = self._split(fresh)
            if chunks:
                self._check_cost(fresh)
            attached += [self._plan_job(chunk) for chunk in chunks]
            yield from self._run_jobs(attached, remaining, done)
        missing = len(records) - len(done)
        if missing:
            last = next((j for j in reversed(self.jobs()) if j.get("message")), None)
            said = f" (last job message: {last['message']})" if last else ""
            raise BackendError(f"{missing} records still failed after {MAX_ROUNDS} rounds{said}; run again to retry")

    def _check_cost(self, records: list[Record], batch: bool = True) -> None:
        """Print the estimate of the jobs about to be planned; refuse them if, with what the run already
        spent, they could pass --max-cost or --max-tokens-total. Nothing is uploaded before this check.

        Prompt tokens are estimated at 4 characters each; output at max_tokens for every generation.
        """
        prompt = sum(len(json.dumps(r.body)) // 4 for r in records)
        output = sum(len(r.requests) * r.requests[0].params.max_tokens for r in records)
        limit = self.config.max_tokens_total
        if limit is not None and self.config.tokens_spent + prompt + output > limit:
            raise BudgetExceeded(f"the next jobs could use {prompt + output:,} tokens on top of "
                                 f"{self.config.tokens_spent:,} spent, past --max-tokens-total {limit:,}; "
                                 "nothing was submitted")
        model = self.service.model
        try:
            table = PriceTable.from_file(self.config.prices_file)
            price, batch_price = table.price(model, batch=batch), table.price(model, batch=True)
        except KeyError as exc:
            if self.config.max_cost is not None:
                raise BackendError(f"--max-cost needs a price: {exc.args[0]}") from None
            sys.stderr.write(f"no price known for {model}: no cost estimate (give a price file)\n")
            return
        spent = sum(job_cost(batch_price, j["manifest"]) for j in self.jobs() if j["manifest"])
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
            return split_jobs(records, self.service.quotas, self.service.too_small)
        except PlanError as exc:
            raise BackendError(str(exc)) from None

    def _plan_job(self, records: list[Record]) -> dict[str, Any]:
        """Store a new job before anything is sent. Its key (the provider's idempotency token) is unique
        to the run, the records and how many jobs came before, so a run started again after its jobs
        failed plans fresh ones, while a job already planned is found in the store, never planned twice."""
        ids = sorted(r.record_id for r in records)
        name = self.service.name
        earlier = len(self.jobs())
        key = hashlib.sha256(f"{name}|{self.config.run_id}|{self.service.model}|{earlier}|{','.join(ids)}"
                             .encode()).hexdigest()[:40]
        input_uri, output_uri = self.service.locations(key)
        self.store.put_job(key, name, self.service.model, input_uri, output_uri,
                           {r.record_id: [[q.question_id, q.temperature, q.path_index] for q in r.requests]
                            for r in records})
        return next(j for j in self.jobs() if j["job_key"] == key)

    def _run_jobs(self, jobs: list[dict], records: dict[str, Record], done: set[str]) -> Iterator[Generation]:
        waiting = [j for j in jobs if j["status"] in PENDING]
        running = [j for j in jobs if j["status"] in self.in_flight and j not in waiting]
        for job in [j for j in jobs if j["status"] in self.service.finished]:  # ended before a crash
            yield from self._collect(job, records, done)
        limit = self.service.quotas.max_jobs_in_flight
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                self._submit(job, records)
                running.append(job)
            time.sleep(self.config.poll_seconds)
            for job in list(running):
                state = self.service.poll(job)
                progress = (state.status, state.processed, state.total)
                if progress != job.get("_progress"):
                    job["_progress"] = progress
                    counted = f", {state.processed}/{state.total} records" if state.total else ""
                    sys.stderr.write(f"batch job {job['job_key'][:12]}: {state.status}{counted}\n")
                if state.status != job["status"]:
                    self.store.update_job(job["job_key"], status=state.status, message=state.message)
                    job.update(status=state.status, message=state.message)
                if job["status"] in self.service.finished:
                    running.remove(job)
                    self.store.update_job(job["job_key"], ended_at=time.time())
                    yield from self._collect(job, records, done)

    def _submit(self, job: dict[str, Any], records: dict[str, Record]) -> None:
        retried = job["status"] == "creating"
        self.store.update_job(job["job_key"], status="creating")
        lines = [records[rid].line for rid in job["records"] if rid in records]
        job_id = self.service.submit(job, lines, retried)
        job.update(arn=job_id, status=SUBMITTED, submitted_at=time.time())
        self.store.update_job(job["job_key"], arn=job_id, status=SUBMITTED, submitted_at=job["submitted_at"])

    def _collect(self, job: dict[str, Any], records: dict[str, Record], done: set[str]) -> Iterator[Generation]:
        if not job.get("arn"):
            return
        results = self.service.results(job, records)
        wall = max(time.time() - (job.get("submitted_at") or job["created_at"]), 0.0)
        paths = sum(len(records[rid].requests) for rid in results.outputs if rid in records)
        for rid, outputs in results.outputs.items():
            record = records.get(rid)
            if record is None or rid in done or len(outputs) < len(record.requests):
                continue  # not ours, already stored, or fewer generations than asked: it goes round again
            done.add(rid)
            yield from record_generations(record, outputs, wall / max(paths, 1))
        self.store.update_job(job["job_key"], status="collected", manifest=results.manifest)
        job["status"] = "collected"

    def close(self) -> None:
        self.store.close()


class BatchBackend:
    """A batch provider as a Backend: its JobService run by the durable runner."""

    def __init__(self, service: JobService, config: BackendConfig):
        if not config.run_dir:
            raise BackendError(f"{service.name} keeps its jobs in the run's store: give it a run directory")
        self.name = service.name
        self.model = service.model
        self.service = service
        self.runner = BatchJobRunner(service, config)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        return self.runner.generate(requests)

    def close(self) -> None:
        self.runner.close()
        closing = getattr(self.service, "close", None)
        if closing is not None:
            closing()
