"""A batch run's jobs outside `run`: what `selfconsistency jobs status|stop|forget|collect` do, as library
functions the CLI is a thin layer over. Those that change the run's state write its store only through
`store.writer` (under the run lock), like the run itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import backend_spec, create_job_service
from .backends.base import BackendError
from .settings import RunSettings
from .store import SampleStore, writer


@dataclass(frozen=True)
class RunJobs:
    """A run's submitted jobs, its settings and its provider's job service (built from the run's settings)."""

    settings: RunSettings
    jobs: list[dict[str, Any]]
    service: Any


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
        settings = with_named_endpoints(checked_settings(store.settings()), run_dir, endpoints or {})
        jobs = [j for j in store.jobs() if j.get("job_id")]
        return RunJobs(settings, jobs, create_job_service(settings.backend, settings.backend_config(job_state=store)))


def forget_job(run_dir: Path, key: str, endpoints: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Mark the one job whose key starts with `key` as failed, so that the next run resubmits its records
    (after collecting whatever output it left). ValueError unless exactly one job matches."""
    service = run_jobs(run_dir, endpoints).service
    failed = next(status for status in service.finished if status.lower() == "failed")
    with writer(run_dir) as store:
        matches = [j for j in store.jobs() if j["job_key"].startswith(key)]
        if len(matches) != 1:
            raise ValueError(f"{len(matches)} jobs of {run_dir} have a key starting with {key!r}: give one "
                             "('selfconsistency jobs status' lists them)")
        store.update_job(matches[0]["job_key"], status=failed, message="forgotten: unknown to the provider",
                         ended_at=time.time())
    return matches[0]


def collect(run_dir: Path, resubmit: bool = False, endpoints: dict[str, str | None] | None = None) -> Path:
    """Wait for a batch run's jobs and store their results, with the run's own settings; `resubmit`: also
    send again the records a stopped job left unprocessed and those whose answers could not be matched
    or read (by default they stay unwanted)."""
    from .backends.batch_jobs import RESENDABLE_CODES
    from .experiment import run_experiment

    with SampleStore.open_readonly(run_dir) as store:
        settings = with_named_endpoints(checked_settings(store.settings()), run_dir, endpoints or {})
    if backend_spec(settings.backend).job_service is None:  # collecting would quietly run it instead
        raise BackendError(f"{run_dir} is a {settings.backend} run, which has no batch jobs; run its "
                           "'selfconsistency run' command again to resume it")
    if resubmit:
        with writer(run_dir) as store:
            for code in RESENDABLE_CODES:
                store.clear_record_errors(code)
    return run_experiment(settings, run_dir)
