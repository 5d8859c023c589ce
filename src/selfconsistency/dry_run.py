"""`run --dry-run`: what a run would send and cost, without sending anything or making its run directory.

The run is planned as `run` plans it (the paths its store lacks, when its run directory exists), packed into
the requests its backend would send (batch records: several paths of a (question, temperature) share one
where the model returns several generations, and the prompt is billed once for them), split into jobs, and
priced: the expected cost, at a mean output length (measured on the run's stored paths, or stated with
--mean-output-tokens) beside the worst case, every path at --max-tokens, which is what --max-cost is checked
against. No provider is called: an application inference profile is priced as --base-model says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends import backend_spec
from .backends.base import BackendError, GenerationRequest, dollars
from .backends.batch_ledger import Estimate, estimate, run_means
from .backends.batch_plan import PlanError, Quotas, Record, split_jobs
from .costs import Price
from .experiment import plan_requests
from .prompts import PromptFormat
from .settings import RunSettings
from .store import STORE_FILENAME, SampleStore


@dataclass(frozen=True)
class DryRun:
    settings: RunSettings
    questions: int
    planned: int  # paths the settings ask for
    stored: int  # of those, already in the run's store
    estimate: Estimate
    price: Price | None
    jobs: str  # how the records split into jobs, or why they cannot
    batch: bool

    def lines(self) -> list[str]:
        s, e = self.settings, self.estimate
        kind = "batch" if self.batch else "on-demand"
        out = [f"dry run: {s.experiment.task} on {s.model} ({s.backend}), {self.questions:,} questions: nothing is "
               "sent and no run directory is made",
               f"  paths: {self.planned:,} planned, {self.stored:,} stored, {e.paths:,} to generate, in {e.records:,} "
               f"requests{'; ' + self.jobs if self.jobs else ''}",
               f"  prompt: {e.prompt_said()}",
               f"  output: expected {e.output_said()}; at most {e.worst_output_tokens:,} (every path at --max-tokens "
               f"{s.sampling.max_tokens:,})"]
        if self.price is None:
            out.append(f"  cost: no price known for {s.model} (give --prices): tokens at most {e.worst_tokens:,}")
            return out
        rates = f"${self.price.input_per_1k:g} / ${self.price.output_per_1k:g} per 1k tokens"
        expected = e.expected(self.price)
        out.append(f"  cost at {kind} prices ({rates}): expected "
                   f"{'~' + dollars(expected) if expected is not None else 'unknown (give --mean-output-tokens)'}; "
                   f"worst case {dollars(e.worst(self.price))} (every path at --max-tokens: what --max-cost is "
                   "checked against)")
        cap = s.budget.max_cost
        if cap is not None:
            verdict = "within it" if e.worst(self.price) <= cap else "above it: the run would stop before sending"
            out.append(f"  --max-cost {dollars(cap)}: the worst case is {verdict}")
        return out


def dry_run(config: RunSettings, run_dir: Path | None = None) -> DryRun:
    """Plan, pack and price the run (DataError, BackendError for what a run would refuse)."""
    task = config.get_task()
    data = config.load(task)
    requests = plan_requests(config, task, data)
    directory = Path(run_dir) if run_dir else config.default_run_dir(task)
    store = SampleStore.open_readonly(directory) if (directory / STORE_FILENAME).is_file() else None
    try:
        stored = store.stored_keys() if store is not None else set()
        pending = [r for r in requests if (r.question_id, r.temperature, r.path_index) not in stored]
        spec = backend_spec(config.backend)
        backend_config = config.backend_config()
        try:
            records = spec.plan_records(backend_config, pending) if spec.plan_records else _one_a_path(pending)
        except ValueError as exc:  # a body the family cannot take (a system message in a text prompt)
            raise BackendError(str(exc)) from None
        found = estimate(records, *run_means(config.budget, store))
    finally:
        if store is not None:
            store.close()
    return DryRun(config, len(data.questions), len(requests), len(requests) - len(pending), found,
                  config.price(), _jobs(config, records) if spec.batch else "", spec.batch)


def _jobs(config: RunSettings, records: list[Record]) -> str:
    options = config.options
    quotas = Quotas(min_records_per_job=getattr(options, "min_records_per_job", 1),
                    max_records_per_job=getattr(options, "max_records_per_job", 50_000))
    if not records:
        return "no job"
    try:
        jobs = split_jobs(records, quotas)
    except PlanError as exc:
        return f"no job: {exc}"
    return f"{len(jobs)} job{'s' if len(jobs) > 1 else ''}"


def _one_a_path(requests: list[GenerationRequest]) -> list[Record]:
    """A backend that sends a request a path: its prompt as the body (text, or the chat turns)."""
    return [Record("", (r,), {"messages": r.prompt.chat_messages} if r.prompt.format is PromptFormat.chat
                   else {"prompt": r.prompt.text}, "") for r in requests]

