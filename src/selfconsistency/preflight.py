"""The checks before a run's directory records anything or a request is sent: one function (`preflight`) that
a run, `run --dry-run` and `--show-prompt` (the backend's part) go through, so a plan the run would refuse is
refused by all three in the same words."""

from __future__ import annotations

from pathlib import Path

from . import waves
from .backends import backend_spec
from .backends.base import BackendSpec
from .prompts import PromptFormat
from .runlock import check_usable_run_dir
from .settings import GREEDY_TEMPERATURE, MAX_PLANNED_PATHS, RunSettings
from .store import STORE_FILENAME, OlderStore, SampleStore
from .tasks import DataError, Task, TaskData
from .tasks.base import CHAT_CONTEXT


def check_backend_settings(config: RunSettings) -> BackendSpec:
    """What the backend refuses before anything is recorded or sent (ModelError, BackendError): a model name
    it does not know, a sampling setting the model cannot take (a temperature, a greedy path, a top-p).
    A run, `--show-prompt` and `--dry-run` all refuse through it, in the same line. Returns the spec."""
    spec = backend_spec(config.backend)
    if spec.check_model is not None:
        spec.check_model(config.model)
    if spec.check_settings is not None:
        spec.check_settings(config)
    return spec


def preflight(config: RunSettings, task: Task, data: TaskData, run_dir: Path) -> None:
    """Everything a typo could break, checked before the run directory records any setting (and by
    `run --dry-run`, which then refuses what the run would): chat turns in a completion prompt, too many
    paths, a budget the questions or the first wave cannot take, a backend's own refusals, and a run
    directory holding another run's settings."""
    # dry_run's checks plan with experiment.plan_requests, and experiment calls this: imported here
    from .dry_run import check_cap, check_first_wave
    from .experiment import plan_requests, prompt_digest

    e = config.experiment
    if e.prompt_format is PromptFormat.completion and any(q.context for q in data.questions):
        raise DataError(f"a system message or earlier chat turns ({CHAT_CONTEXT}) need --prompt-format chat: "
                        "a completion prompt has no place for them")
    planned = len(data.questions) * sum(config.paths_at(t) for t in config.settings())
    if planned > MAX_PLANNED_PATHS:
        raise DataError(f"{len(data.questions):,} questions x {planned // len(data.questions):,} paths is "
                        f"{planned:,} paths in one run, more than {MAX_PLANNED_PATHS:,}: give fewer --paths, "
                        "or fewer questions (--limit) and run again for the rest")
    budget = config.budget_plan(len(data.questions), waves.min_records_per_job(config))
    if budget is not None and config.stopping.budget_paths is not None:
        try:
            budget.check(len(data.questions))
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if budget is not None and config.stopping.budget_paths is None and config.price() is None:
        raise DataError(f"--max-cost as the amount to spend needs a price for {config.model}: give a price file "
                        "(--prices), or spend --budget-paths")
    check_backend_settings(config)
    check_usable_run_dir(run_dir)  # a file, a directory of other files: refused before anything is sent
    if (run_dir / STORE_FILENAME).is_file():  # another run's settings: refused before anything is sent
        try:
            with SampleStore.open_readonly(run_dir) as store:
                store.check_identity({**config.identity(task), "prompt": prompt_digest(config, task, data)})
        except OlderStore:  # the run upgrades it, then binds its settings
            pass
    if config.budget.max_cost is not None and budget is None:  # a cap that cannot pay one request or job
        check_cap(config, plan_requests(config, task, data), run_dir)
    if budget is not None and config.stopping.budget_paths is None:
        wanted = {**({(q.id, GREEDY_TEMPERATURE): 1 for q in data.questions} if config.sampling.greedy else {}),
                  **{(q.id, t): budget.min_paths for q in data.questions for t in config.sampling.temperatures}}
        check_first_wave(config, plan_requests(config, task, data, wanted), run_dir)
