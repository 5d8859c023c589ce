"""A batch run's jobs outside `run`: what `selfconsistency jobs status|stop|forget|collect` do, as library
functions the CLI is a thin layer over. Those that change the run's state write its store only through
`store.writer` (under the run lock), like the run itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from .backends import backend_spec, create_job_service
from .backends.base import BackendError
from .settings import RunSettings
from .store import SampleStore, writer


@dataclass(frozen=True)
class RunJobs:
    """A run's jobs (those the provider was asked for; `unsent`: planned, or left 'creating' by a process
    killed before it heard back), its settings and its provider's job service (from the run's settings)."""

    settings: RunSettings
    jobs: list[dict[str, Any]]
    service: Any
    unsent: list[dict[str, Any]] = dataclass_field(default_factory=list)

    def found(self, job: dict[str, Any]) -> str | None:
        """The provider's id of a job left 'creating', if the provider has it (it may be running, billed)."""
        return self.service.find(job) if job["status"] == "creating" else None


def checked_settings(settings: RunSettings) -> RunSettings:
    """Stored settings checked as a new run's are (a price file still readable): for commands that act."""
    return RunSettings(**settings.flat())


class EndpointNotNamed(ValueError):
    """A stored run names an endpoint the user has not named in this command: credentials are not sent."""


def with_named_endpoints(settings: RunSettings, run_dir: Path, named: dict[str, str | None]) -> RunSettings:
    """The stored settings with the endpoints the user named in this command (`named`: option -> value).

    Credentials follow the user, not the run directory: a run directory unpacked from someone else's archive
    must not decide where this user's key goes. An endpoint the run stored (a server's URL) is used only
    when the user names it (or another) again; the provider's own default needs no naming."""
    changes = {}
    for field in type(settings.options).endpoint_fields:
        stored, given = getattr(settings.options, field), named.get(field)
        if given is not None:
            changes[field] = given
        elif stored is not None:
            flag = f"--{field.replace('_', '-')}"
            raise EndpointNotNamed(f"{run_dir}'s jobs are at {stored}, an endpoint named by the run, not by you: "
                                   f"your credentials go only where you say; give {flag} with the server's URL")
    return settings.model_copy(update=changes) if changes else settings


def run_jobs(run_dir: Path, endpoints: dict[str, str | None] | None = None) -> RunJobs:
    """The run's jobs and its provider's job service, reached at the `endpoints` the user named
    (`with_named_endpoints`). ValidationError when the stored settings no longer hold; BackendError for a
    run without jobs; EndpointNotNamed."""
    with SampleStore.open_readonly(run_dir) as store:
        _not_imported(store, run_dir)
        settings = with_named_endpoints(checked_settings(store.settings()), run_dir, endpoints or {})
        jobs = store.jobs()
        service = create_job_service(settings.backend, settings.backend_config(job_state=store))
        return RunJobs(settings, [j for j in jobs if j.get("job_id")], service,
                       [j for j in jobs if not j.get("job_id") and j["status"] in ("planned", "creating")])


def _not_imported(store: SampleStore, run_dir: Path) -> None:
    """BackendError for a run `selfconsistency import` made: its backend is the tool it came from, which no
    provider runs jobs for (its settings are not a run's to check)."""
    imported = store.get_meta("import")
    if imported is not None:
        raise BackendError(f"{run_dir} is an imported run ({imported.get('tool', 'another tool')}): it has no "
                           "batch jobs")


FORGOTTEN = "forgotten: unknown to the provider"  # the message of a job `jobs forget` gave up


class JobLive(ValueError):
    """`jobs forget` of a job the provider is still running: refused (it is billed); the message says what to do."""


def forget_job(run_dir: Path, key: str, endpoints: dict[str, str | None] | None = None, stop: bool = False
               ) -> tuple[str, dict[str, Any]]:
    """Give up the one job whose key starts with `key`, after asking its provider: a job it still runs is
    refused (JobLive), or stopped with `stop` (the next run collects what it processed); a job it finished
    is collected (its answers are paid for), submitting nothing new; only a job the provider does not have
    is forgotten (the next run collects whatever output it left and resubmits its records). Returns what
    was done ("stopping", "collected", "forgotten") and the job. ValueError unless exactly one job matches."""
    from .backends.batch_jobs import JobGone, NothingSubmitted

    found = run_jobs(run_dir, endpoints)
    matches = [j for j in found.jobs + found.unsent if j["job_key"].startswith(key)]
    if len(matches) != 1:
        raise ValueError(f"{len(matches)} jobs of {run_dir} have a key starting with {key!r}: give one "
                         "('selfconsistency jobs status' lists them)")
    job, service = matches[0], found.service
    job_id = job.get("job_id") or found.found(job)
    if job_id is not None:
        try:
            state = service.poll({**job, "job_id": job_id})
        except JobGone:
            state = None
        if state is not None and state.status in service.in_flight:
            if not stop:
                raise JobLive(f"job {job_id} is still {state.status} at the provider (it is billed for what it "
                              f"processes): 'jobs forget --stop' stops it first, or 'jobs stop' then 'jobs collect "
                              f"{run_dir}' stores what it processed")
            service.cancel({**job, "job_id": job_id})
            return "stopping", {**job, "job_id": job_id}
        if state is not None:  # finished: paid for, so collected, not forgotten
            try:
                collect(run_dir, endpoints=endpoints, submit=False)
            except NothingSubmitted:
                pass
            return "collected", {**job, "job_id": job_id}
    failed = next(status for status in service.finished if status.lower() == "failed")
    with writer(run_dir) as store:
        if job["status"] == "collected":  # its output was read already: it stays counted, nothing to send again
            store.update_job(job["job_key"], message=FORGOTTEN)
        elif job.get("job_id"):  # the next run reads whatever output the job left, then resubmits its records
            store.update_job(job["job_key"], status=failed, message=FORGOTTEN, ended_at=time.time())
        else:  # never made: nothing to collect
            store.update_job(job["job_key"], status="collected", message=FORGOTTEN, ended_at=time.time())
    return "forgotten", job


def collect(run_dir: Path, resubmit: bool = False, endpoints: dict[str, str | None] | None = None,
            submit: bool = True) -> Path:
    """Wait for a batch run's jobs and store their results, with the run's own settings; `resubmit`: also
    send again the records a stopped job left unprocessed and those whose answers could not be matched
    or read (by default they stay unwanted); `submit=False`: collect the jobs the run made, send nothing."""
    from .backends.batch_jobs import RESENDABLE_CODES
    from .experiment import run_experiment

    with SampleStore.open_readonly(run_dir) as store:
        _not_imported(store, run_dir)
        settings = with_named_endpoints(checked_settings(store.settings()), run_dir, endpoints or {})
    if backend_spec(settings.backend).job_service is None:  # collecting would quietly run it instead
        raise BackendError(f"{run_dir} is a {settings.backend} run, which has no batch jobs; run its "
                           "'selfconsistency run' command again to resume it")
    if resubmit:
        with writer(run_dir) as store:
            for code in RESENDABLE_CODES:
                store.clear_record_errors(code)
    return run_experiment(settings, run_dir, submit=submit)
