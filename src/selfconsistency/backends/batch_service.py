"""A batch provider's side of the durable job runner (`batch_jobs.BatchJobRunner`): the options every batch
backend shares, the narrow part of the run's store a backend reaches (`JobStore`), what a provider
implements (`JobService`), and the values and error codes crossing between them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import Field

from ..options import BackendOptions, Cli
from .base import BackendError, GenerationRequest, ParsedOutput
from .batch_plan import Quotas, Record


class BatchOptions(BackendOptions):
    """Settings every batch backend shares."""

    poll_seconds: Annotated[float, Field(gt=0, le=86_400), Cli("Batch backends: seconds between status polls.",
                                                    "Batch backends")] = 30.0
    min_records_per_job: int = Field(default=100, ge=1)
    max_records_per_job: int = Field(default=50_000, ge=1)
    max_jobs_in_flight: int = Field(default=20, ge=1)


class JobStore(Protocol):
    """The part of a run's store a batch backend uses: its jobs, their records' errors, on-demand spend.
    The run's sample store is one; a batch backend never opens a store itself."""

    run_dir: Path  # for messages that name a command to run on it

    def jobs(self, backend: str | None = None) -> list[dict[str, Any]]: ...
    def put_job(self, job_key: str, backend: str, model: str, input_uri: str, output_uri: str,
                records: dict[str, list[list]], request: dict[str, Any] | None = None) -> None: ...
    def update_job(self, job_key: str, **fields: Any) -> None: ...
    def record_errors(self, backend: str | None = None) -> list[dict[str, Any]]: ...
    def add_record_errors(self, backend: str, job_key: str, errors: dict[str, tuple[str, str, bool]]) -> None: ...
    def spend(self, backend: str | None = None) -> list[dict[str, Any]]: ...
    def add_spend(self, backend: str, call_group: str, record_id: str, path_keys: list[tuple[str, float, int]],
                  input_tokens: int, output_tokens: int) -> None: ...
    def output_tokens_per_path(self) -> tuple[float, int] | None:
        """(mean completion tokens, paths) of the run's stored paths: what an estimate expects a path to take."""
        ...

    def prompt_tokens_per_request(self) -> tuple[float, int] | None:
        """(mean prompt tokens, requests) of the run's stored paths, as the provider counted them."""
        ...

    def run_nonce(self) -> str:
        """Fixed for the store's life: two run directories with the same settings never share a job."""
        ...


@dataclass(frozen=True)
class JobState:
    status: str | None  # the provider's own status word (None: the provider gave none)
    message: str | None = None
    processed: int | None = None
    total: int | None = None
    invalid: bool = False  # refused as a whole at validation: the same job would be refused again


@dataclass
class JobResults:
    outputs: dict[str, list[ParsedOutput]] = field(default_factory=dict)  # record id -> its generations
    manifest: dict[str, Any] | None = None  # counts and tokens, keys as in Bedrock's manifest.json.out
    errors: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # record id -> (code, message, retryable)
    mismatched: list[str] = field(default_factory=list)  # record ids answered for a request we did not send
    unreadable: int = 0  # output lines naming no record we can tell (not JSON, no id)


STOPPED_CODE = "stopped"  # the record error a user's stop leaves on records its job never processed
MISMATCH_CODE = "mismatch"  # answered for another request than the one sent
MALFORMED_CODE = "malformed"  # an output line not in the provider's documented format
RESENDABLE_CODES = (STOPPED_CODE, MISMATCH_CODE, MALFORMED_CODE)  # unwanted until `jobs collect --resubmit`


class JobsStopped(BackendError):
    """A job was stopped by the user: the run collected what it processed and submits nothing more."""


class RecordsRefused(BackendError):
    """Records the provider refused for their own fault (bad input): stored with their errors, not resent."""


class JobGone(BackendError):
    """The provider does not know the job (another region or account, or gone): the message says what to do."""


class NothingSubmitted(BackendError):
    """A collection that submits nothing new (`jobs forget` of a finished job) left records without answers."""


class RecordRefused(BackendError):
    """One on-demand call refused for its own record's fault (a 400): stored as a refused record, not resent."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


ON_DEMAND_JOB = "on-demand"  # the job key under which refused on-demand records are stored


def retryable_status(status: int | str | None) -> bool:
    """An HTTP-style status worth sending again: throttling, timeouts, server errors. Other 4xx are the
    request's own fault (validation, bad input) and would fail the same way again."""
    try:
        code = int(status)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True
    return code in (408, 409, 429) or code >= 500


def error_summary(errors: list[tuple[str, str]]) -> str:
    """'400 (message): 3, 500 (message): 1' from (code, message) pairs, most frequent first."""
    counts: dict[str, list[str]] = {}
    for code, message in errors:
        counts.setdefault(code, []).append(message)
    return ", ".join(f"{code} ({messages[0][:80]}): {len(messages)}"
                     for code, messages in sorted(counts.items(), key=lambda kv: -len(kv[1])))


class JobService(Protocol):
    """One provider's side of batch jobs. `job` is a row of the store's jobs table (a dict)."""

    name: str  # the backend's name, under which its jobs are stored
    model: str
    quotas: Quotas
    in_flight: tuple[str, ...]  # provider statuses of a job that has not ended
    finished: tuple[str, ...]  # provider statuses of a job that has ended (results may be partial)
    cancellable: tuple[str, ...]  # provider statuses a job can be stopped from (not ended, not already stopping)
    stopped: tuple[str, ...]  # provider statuses of a job a user stopped (its unprocessed records are unwanted)
    too_small: str  # advice when a run has fewer records than one job's minimum

    def pack(self, requests: list[GenerationRequest]) -> list[Record]: ...

    def locations(self, job_key: str) -> tuple[str, str]:
        """Where the job's input and output live (stored with the job, shown to the user)."""
        ...

    def request(self, job_key: str) -> dict[str, Any]:
        """The create request's parameters besides the records (JSON): stored with the job when it is
        planned, to tell a job made earlier from one made with today's options."""
        ...

    def find(self, job: dict[str, Any]) -> str | None:
        """The provider's id of the job an earlier process created for `job` and died before storing, or None."""
        ...

    def submit(self, job: dict[str, Any], lines: list[str]) -> str:
        """Upload the input and create the job with today's options (`job["request"]`: those it was planned
        with); return the provider's job id."""
        ...

    def poll(self, job: dict[str, Any]) -> JobState:
        """The job's status at the provider; JobGone when the provider does not know it."""
        ...

    def results(self, job: dict[str, Any], records: dict[str, Record]) -> JobResults:
        """The job's answers to `records` (checked against the bodies sent: mismatches are listed, never
        returned), its per-record errors and its manifest."""
        ...

    def remainder(self, records: list[Record]) -> Iterator[tuple[Record, list[ParsedOutput], float]]:
        """Records too few for a job, generated another way: (record, outputs, seconds per path); RecordRefused
        for a record the provider refuses for its own fault. Only called when the provider's jobs have a
        minimum size (quotas.min_records_per_job > 1) or follow-up rounds below quotas.on_demand_below go on
        demand."""
        ...

    def cancel(self, job: dict[str, Any]) -> None: ...
