"""Durable batch jobs, shared by every batch backend (Bedrock batch inference, the OpenAI Batch API).

The workflow: pack paths into records, split them into jobs within the provider's quotas, save each job
in the run's store before and after every API call, submit up to the in-flight limit, poll, and collect
results joined on record id. A crashed run, started again, first finishes and collects the jobs it had
made (the provider makes a create call retried after a crash start no second job), then plans the rest.

Trust: a record's id hashes what it asks (prompt, temperature, path, seed, body) and a job's key hashes its
records' bodies, so another run's job is never reattached; an answer whose echoed request differs from the
body sent is refused. Records a job never answered (failed / expired jobs, retryable record errors) go into
follow-up jobs, up to MAX_ROUNDS, or on demand when too few for a job; records refused for bad input are
stored with their error and not resubmitted; a job the user stopped leaves its unprocessed records
unwanted until `jobs collect --resubmit`. Every job and on-demand call is checked first against the run's
spend ledger (manifests + on-demand usage, both the provider's counts) and --max-cost / --max-tokens-total.

`collect` stores what the run's jobs answered to paths a run no longer asks for (a run of fewer paths
after an interruption), sending nothing for them. A job whose create call a killed process left unanswered
('creating') is first looked for at the provider
and adopted if found (it may be running, and billed); only a job the provider does not have is created
again, with today's options. A job the provider refuses as a whole at validation is not sent again as it
is: the run stops and says what to change. A record an on-demand call refuses for its own fault is stored
with its error, as a job's refused records are, and the run goes on.

A provider supplies only what differs (`JobService`): its record format, its statuses and its API calls.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .base import BackendConfig, BackendError, Generation, GenerationRequest
from .batch_ledger import SpendLedger
from .batch_plan import (
    PlanError,
    Record,
    body_digests,
    record_generations,
    split_jobs,
)
from .batch_service import (  # noqa: F401 - re-exported: the names providers and commands import from here
    MALFORMED_CODE,
    MISMATCH_CODE,
    ON_DEMAND_JOB,
    RESENDABLE_CODES,
    STOPPED_CODE,
    BatchOptions,
    JobGone,
    JobResults,
    JobService,
    JobsStopped,
    JobState,
    JobStore,
    NothingSubmitted,
    RecordRefused,
    RecordsRefused,
    error_summary,
    retryable_status,
)

log = logging.getLogger(__name__)

MAX_ROUNDS = 4  # follow-up rounds for records that keep failing
PENDING = ("planned", "creating")  # our own statuses before the provider knows the job
SUBMITTED = "submitted"  # created, not yet polled


class BatchJobRunner:
    def __init__(self, service: JobService, config: BackendConfig, store: JobStore):
        self.service = service
        self.config = config
        self.poll_seconds = config.options_as(BatchOptions).poll_seconds
        self.store = store
        self.in_flight = (*PENDING, SUBMITTED, *service.in_flight)
        self.ledger = SpendLedger(self.store, service.name, service.model, config, getattr(service, "priced_as", None),
                                  getattr(service, "cacheable_tokens", None))
        self.invalid: list[tuple[dict[str, Any], str | None]] = []  # jobs refused as a whole, with the reason

    def jobs(self) -> list[dict[str, Any]]:
        return self.store.jobs(self.service.name)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[Generation, ...]]:
        """Each record's generations as one tuple (stored together by the caller)."""
        records = {r.record_id: r for r in self.service.pack(list(requests))}
        done: set[str] = set()
        quotas = self.service.quotas
        unfinished = [j for j in self.jobs() if j["status"] in self.in_flight + self.service.finished]
        earlier = [j for j in unfinished if set(j["records"]) & records.keys()]
        yield from self._run_jobs(earlier, records, done)  # what was paid for is collected before anything new
        self._stop_if_invalid()
        if not self.config.submit:  # collecting what exists, nothing new (`jobs forget` of a finished job)
            left = len(records.keys() - done)
            if left:
                raise NothingSubmitted(f"collected the run's jobs; {left} records have no answer yet and were not "
                                       "sent (this command submits nothing)")
            return
        for round_number in range(MAX_ROUNDS):
            unwanted = self._unwanted()
            remaining = {rid: r for rid, r in records.items() if rid not in done and rid not in unwanted}
            if not remaining or any(unwanted[rid]["code"] == STOPPED_CODE for rid in records.keys() & unwanted):
                break  # done, or the user stopped a job: nothing new is submitted
            fresh = list(remaining.values())
            continuing = round_number > 0 or bool(self.jobs())
            if len(fresh) < max(quotas.min_records_per_job, quotas.on_demand_below) and continuing:
                yield from self._on_demand(fresh, done)  # too few left for a job: the remainder of a run
                continue
            chunks = self._split(fresh)
            self.ledger.check(fresh)
            yield from self._run_jobs([self._plan_job(chunk) for chunk in chunks], records, done)
            self._stop_if_invalid()
        self._finish(records, done)

    def _stop_if_invalid(self) -> None:
        """A job refused as a whole at validation would be refused again: say so instead of sending it again."""
        if not self.invalid:
            return
        job, message = self.invalid[0]
        small = f"; for a run too small for a job: {self.service.too_small}" if self.service.too_small else ""
        raise BackendError(f"{self.service.name} refused batch job {job['job_key'][:12]} ({len(job['records'])} "
                           f"records) as a whole: {message or 'no reason given'}; sending the same records again "
                           f"would be refused the same way: change what it names and run again{small}")

    def collect(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[Generation, ...]]:
        """The answers the run's jobs already made or are making to these requests (paid for): collected,
        while nothing is sent for them. A job a killed process left 'creating' is adopted if the provider has
        it, and otherwise left alone (a run asking for its paths creates it)."""
        records = {r.record_id: r for r in self.service.pack(list(requests))}
        unfinished = [j for j in self.jobs() if j["status"] in ("creating", SUBMITTED, *self.service.in_flight,
                                                               *self.service.finished)]
        earlier = [j for j in unfinished if set(j["records"]) & records.keys()]
        yield from self._run_jobs(earlier, records, set(), create=False)
        self._stop_if_invalid()

    def _unwanted(self) -> dict[str, dict[str, Any]]:
        """Records not to send again: refused for their own fault, or left by a job the user stopped."""
        return {e["record_id"]: e for e in self.store.record_errors(self.service.name) if not e["retryable"]}

    def _finish(self, records: dict[str, Record], done: set[str]) -> None:
        """Say why records are missing, in one line: stopped, refused (by error code), or still failing."""
        unwanted = self._unwanted()
        left = [rid for rid in records if rid not in done]
        stopped = [rid for rid in left if rid in unwanted and unwanted[rid]["code"] == STOPPED_CODE]
        refused = [unwanted[rid] for rid in left if rid in unwanted and rid not in stopped]
        failing = len(left) - len(stopped) - len(refused)
        if stopped:
            raise JobsStopped(f"a batch job was stopped: what it processed is stored, {len(stopped)} records were "
                              f"not sent again; 'selfconsistency jobs collect --resubmit {self.store.run_dir}' "
                              "submits them")
        if refused:
            resendable = " ('jobs collect --resubmit' sends those refused for the provider's output again)" \
                if any(e["code"] in RESENDABLE_CODES for e in refused) else ""
            raise RecordsRefused(f"{len(refused)} records were refused and will not be resubmitted (by error code: "
                               f"{error_summary([(e['code'], e['message']) for e in refused])}); "
                               f"'selfconsistency jobs status {self.store.run_dir}' lists them{resendable}")
        if failing:
            last = next((j for j in reversed(self.jobs()) if j.get("message")), None)
            said = f" (last job message: {last['message']})" if last else ""
            raise BackendError(f"{failing} records still failed after {MAX_ROUNDS} rounds{said}; run again to retry")

    def _on_demand(self, records: list[Record], done: set[str]) -> Iterator[tuple[Generation, ...]]:
        """Records too few for a job, one provider call each, each checked against the ledger first and
        entered in it after (as one call group per round, for the report)."""
        self.ledger.check(records, batch=False)
        group = f"on-demand-{len(self.store.spend(self.service.name)) + 1}"
        refused: dict[str, tuple[str, str, bool]] = {}
        for record in records:
            self.ledger.check([record], batch=False, quiet=True)
            try:
                answered_calls = list(self.service.remainder([record]))
            except RecordRefused as exc:  # the record's own fault: stored as a job's refused record is
                refused[record.record_id] = (exc.code, exc.message, False)
                self.store.add_record_errors(self.service.name, ON_DEMAND_JOB,
                                             {record.record_id: refused[record.record_id]})
                continue
            for answered, outputs, seconds in answered_calls:
                generations = tuple(record_generations(answered, outputs, seconds))
                keys = [(g.request.question_id, g.request.temperature, g.request.path_index) for g in generations]
                self.store.add_spend(self.service.name, group, answered.record_id, keys,
                                     sum(g.prompt_tokens for g in generations),
                                     sum(g.completion_tokens for g in generations))
                if len(outputs) >= len(answered.requests):
                    done.add(answered.record_id)
                    yield generations
        if refused:
            log.warning(f"{len(refused)} on-demand records were refused, by error code: "
                        f"{error_summary([(c, m) for c, m, _ in refused.values()])}")

    def _split(self, records: list[Record]) -> list[list[Record]]:
        try:
            return split_jobs(records, self.service.quotas, self.service.too_small)
        except PlanError as exc:
            raise BackendError(str(exc)) from None

    def _plan_job(self, records: list[Record]) -> dict[str, Any]:
        """Store a new job before anything is sent. Its key (the provider's idempotency token, and where
        its input and output live) hashes the run (its settings and its store's nonce), the model, how many
        jobs came before, and every record's id and body: other data, settings or run directories make
        another key, never another run's job, while a job already planned is found in the store."""
        name = self.service.name
        earlier = len(self.jobs())
        content = ",".join(sorted(f"{r.record_id}:{digest}" for r, digest in zip(records, body_digests(records),
                                                                                 strict=True)))
        run = f"{self.config.settings_hash}|{self.store.run_nonce()}"  # this run directory, not only its settings
        key = hashlib.sha256(f"{name}|{run}|{self.service.model}|{earlier}|{content}".encode()).hexdigest()[:40]
        input_uri, output_uri = self.service.locations(key)
        self.store.put_job(key, name, self.service.model, input_uri, output_uri,
                           {r.record_id: [[q.question_id, q.temperature, q.path_index] for q in r.requests]
                            for r in records}, self.service.request(key))
        return next(j for j in self.jobs() if j["job_key"] == key)

    def _run_jobs(self, jobs: list[dict], records: dict[str, Record], done: set[str], create: bool = True
                  ) -> Iterator[tuple[Generation, ...]]:
        """Submit the jobs not yet made (`create=False`: only adopt those a killed process made), then poll
        and collect them all."""
        waiting = [j for j in jobs if j["status"] in PENDING]
        running = [j for j in jobs if j["status"] in self.in_flight and j not in waiting]
        for job in [j for j in jobs if j["status"] in self.service.finished]:  # ended before a crash
            yield from self._collect(job, records, done)
        limit = self.service.quotas.max_jobs_in_flight
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                if not self._submit(job, records, create):
                    continue
                running.append(job)
            time.sleep(self.poll_seconds)
            for job in list(running):
                state = self.service.poll(job)
                progress = (state.status, state.processed, state.total)
                if progress != job.get("_progress"):
                    job["_progress"] = progress
                    counted = f", {state.processed}/{state.total} records" if state.total else ""
                    log.info(f"batch job {job['job_key'][:12]}: {state.status}{counted}")
                if state.status != job["status"]:
                    self.store.update_job(job["job_key"], status=state.status, message=state.message)
                    job.update(status=state.status, message=state.message)
                if job["status"] in self.service.finished:
                    running.remove(job)
                    self.store.update_job(job["job_key"], ended_at=time.time())
                    if state.invalid:
                        self.invalid.append((job, state.message))
                    yield from self._collect(job, records, done)

    def _submit(self, job: dict[str, Any], records: dict[str, Record], create: bool = True) -> bool:
        """Create the job; a job an earlier process left 'creating' (killed before it stored the provider's
        answer) is looked for first: if the provider has it, it is adopted as it was made, else created anew
        (unless not `create`). Whether the job is now at the provider."""
        key = job["job_key"]
        found = self.service.find(job) if job["status"] == "creating" else None
        if found is not None:
            log.info(f"batch job {key[:12]}: found at the provider as {found} (created by a run that was stopped "
                     "before it heard back): collected as it was made")
        elif not create:
            return False
        else:
            self.store.update_job(key, status="creating")
            lines = [records[rid].line for rid in job["records"] if rid in records]
            found = self.service.submit(job, lines)
            job["request"] = self.service.request(key)  # made with today's options
            self.store.update_job(key, request=job["request"])
        job.update(job_id=found, status=SUBMITTED, submitted_at=time.time())
        self.store.update_job(key, job_id=found, status=SUBMITTED, submitted_at=job["submitted_at"])
        return True

    def _collect(self, job: dict[str, Any], records: dict[str, Record], done: set[str]
                 ) -> Iterator[tuple[Generation, ...]]:
        if not job.get("job_id"):
            return
        ours = {rid: records[rid] for rid in job["records"] if rid in records}
        results = self.service.results(job, ours)
        errors = dict(results.errors)
        # A few unreadable or foreign answers go round again; when they are most of a job, the provider's
        # output is not what we can read (a format change, a normalised echo): sending the same records
        # again would buy the same answers, so they wait for `jobs collect --resubmit`.
        malformed = [rid for rid, (code, _, _) in errors.items() if code == MALFORMED_CODE]
        suspect = len(results.mismatched) + len(malformed) + results.unreadable
        systematic = suspect > 0 and 2 * suspect >= len(ours)
        for rid in results.mismatched:
            errors[rid] = (MISMATCH_CODE, "the answer echoes another request than the one sent: not stored",
                           not systematic)
        for rid in malformed:
            errors[rid] = (*errors[rid][:2], not systematic)
        if systematic and results.unreadable:  # which records the unreadable lines answered is unknown
            errors.update({rid: (MALFORMED_CODE, "no readable answer in the job's output", False)
                           for rid in ours if rid not in results.outputs and rid not in errors})
        if suspect:
            action = "not resent ('jobs collect --resubmit' sends them again)" if systematic else "sent again"
            found = [f"{count} {what}" for count, what in (
                (len(results.mismatched), "answers for other requests than the ones sent"),
                (len(malformed) + results.unreadable, "output lines unreadable")) if count]
            log.warning(f"batch job {job['job_key'][:12]}: {', '.join(found)}: refused, {action}")
        if job["status"] in self.service.stopped:  # the user's decision: what the job did not process is unwanted
            errors.update({rid: (STOPPED_CODE, "the job was stopped before this record was processed", False)
                           for rid in ours if rid not in results.outputs and rid not in errors})
        if errors:
            self.store.add_record_errors(self.service.name, job["job_key"], errors)
            log.warning(f"batch job {job['job_key'][:12]}: {len(errors)} records failed, by error code: "
                        f"{error_summary([(c, m) for c, m, _ in errors.values()])}")
        wall = max(time.time() - (job.get("submitted_at") or job["created_at"]), 0.0)
        paths = sum(len(ours[rid].requests) for rid in results.outputs if rid in ours)
        collected = 0
        for rid, outputs in results.outputs.items():
            record = ours.get(rid)
            if record is None or rid in done or rid in errors or len(outputs) < len(record.requests):
                continue  # not ours, already stored, refused, or fewer generations than asked: not stored
            done.add(rid)
            collected += len(record.requests)
            yield tuple(record_generations(record, outputs, wall / max(paths, 1)))
        self.store.update_job(job["job_key"], status="collected", manifest=results.manifest,
                              collected_paths=collected + (job.get("collected_paths") or 0))
        job["status"] = "collected"

class BatchBackend:
    """A batch provider as a Backend: its JobService run by the durable runner."""

    def __init__(self, service: JobService, config: BackendConfig):
        if config.job_state is None:
            raise BackendError(f"{service.name} keeps its jobs in the run's store: start it with the run's job state")
        self.name = service.name
        self.model = service.model
        self.service = service
        self.priced_as = getattr(service, "priced_as", None)  # the model the calls are billed as, if learnt
        self.priced_how = getattr(service, "priced_how", "")
        self.runner = BatchJobRunner(service, config, config.job_state)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[Generation, ...]]:
        return self.runner.generate(requests)

    def collect(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[Generation, ...]]:
        """What the run's jobs answered to these requests (paid for), sending nothing: see BatchJobRunner."""
        return self.runner.collect(requests)

    def close(self) -> None:
        closing = getattr(self.service, "close", None)
        if closing is not None:
            closing()
