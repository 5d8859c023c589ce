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
from .preflight import preflight
from .prompts import PromptFormat
from .settings import RunSettings
from .store import STORE_FILENAME, SampleStore
from .tasks import DataError


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
        if s.stopping.budget_paths is not None:
            out.append(f"  budget: {s.stopping.budget_paths:,} paths at each temperature, spread here evenly; the run "
                       f"gives them, wave by wave, to the questions whose votes they can change ({s.stops_name()})")
        elif s.stopping.budgeted(cap):
            bought = (f"at the expected cost a path, that is about {_paths_for(cap, expected, e.paths):,} paths"
                      if expected and e.paths else "how many paths that buys depends on the answers' length "
                      "(give --mean-output-tokens to estimate it)")
            out.append(f"  budget: --max-cost {dollars(cap)} is the amount to spend, in waves, up to every path "
                       f"planned above; {bought}")
            return out
        if cap is not None:
            verdict = "within it" if e.worst(self.price) <= cap else (
                "above it: the run stops when the next request's worst case would pass it" if not self.batch
                else "above it: the run would stop before sending")
            out.append(f"  --max-cost {dollars(cap)}: the worst case is {verdict}")
        return out


def dry_run(config: RunSettings, run_dir: Path | None = None) -> DryRun:
    """Plan, pack and price the run (DataError, BackendError for what a run would refuse)."""
    task = config.get_task()
    data = config.load(task)
    directory = Path(run_dir) if run_dir else config.default_run_dir(task)
    preflight(config, task, data, directory)  # what the run would refuse is refused here, in the same words
    requests = plan_requests(config, task, data, _budget_spread(config, [q.id for q in data.questions]))
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


def _budget_spread(config: RunSettings, question_ids: list[str]) -> dict[tuple[str, float], int] | None:
    """A --budget-paths run's paths for its estimate: the budget spread evenly over the questions at each
    temperature (which questions get them is the allocator's choice, wave by wave; a path costs about the
    same whichever it is), beside each question's greedy path. None: every planned path (no budget, or
    --max-cost as the amount, which the run spends whatever the paths)."""
    if config.stopping.budget_paths is None:
        return None
    n, most = len(question_ids), config.sampling.paths
    total = min(config.stopping.budget_paths, n * most)
    spread = {(q, t): total // n + (i < total % n) for t in config.sampling.temperatures
              for i, q in enumerate(question_ids)}
    return {**spread, **({(q, 0.0): 1 for q in question_ids} if config.sampling.greedy else {})}


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


def _paths_for(amount: float, expected: float, paths: int) -> int:
    return min(paths, int(amount / (expected / paths)))


def check_first_wave(config: RunSettings, requests: list[GenerationRequest], run_dir: Path) -> None:
    """--max-cost as the amount to spend: DataError, before the run directory is made or anything sent, when
    what is left of the amount cannot pay the first wave's
    `requests` (the greedy paths and every question's first paths) even at their least: every request's
    prompt (CHARS_PER_TOKEN characters a token, as `run --dry-run` estimates it) and the worst case of the
    last one, which the backend books before sending it (its body at RESERVED_CHARS_PER_TOKEN characters a
    token, and --max-tokens). An amount above that may still end inside the first wave when the answers are
    long: the run then says so, with what it bought stored. Batch backends: `_check_first_batch_wave`."""
    import json

    from .costs import CHARS_PER_TOKEN, RESERVED_CHARS_PER_TOKEN
    from .store import StoreVersionError

    price = config.price()
    if price is None:
        return
    spent, stored = (0, 0), set()
    if (run_dir / STORE_FILENAME).is_file():
        try:
            with SampleStore.open_readonly(run_dir) as store:
                spent, stored = store.tokens_used(), store.stored_keys()
        except StoreVersionError:  # an older store: the run upgrades it, and its waves check as they buy
            return
    pending = [r for r in requests if (r.question_id, r.temperature, r.path_index) not in stored]
    if not pending:
        return
    spec = backend_spec(config.backend)
    backend_config = config.backend_config()
    if spec.batch:
        _check_first_batch_wave(config, spec, backend_config, pending, price, resumed=bool(stored) or any(spent))
        return
    prompts = sum(len(json.dumps(r.prompt.chat_messages if r.prompt.format is PromptFormat.chat else r.prompt.text))
                  // CHARS_PER_TOKEN for r in pending)
    booked = max(price.cost(len(body) // RESERVED_CHARS_PER_TOKEN, request.params.max_tokens)
                 for request in pending for body in [_body(spec, backend_config, request)])
    least, left = price.cost(prompts, 0) + booked, config.budget.max_cost - price.cost(*spent)
    if least > left + 1e-12:
        what = f"what is left of --max-cost {dollars(config.budget.max_cost)} ({dollars(max(left, 0.0))})" \
            if any(spent) else f"--max-cost {dollars(config.budget.max_cost)}"
        raise DataError(f"{what} cannot pay the first wave: its {len(pending):,} requests (the greedy paths and every "
                        f"question's first paths) need at least {dollars(least)} (their prompts, and the last one "
                        f"booked at its worst case, with --max-tokens {config.sampling.max_tokens:,}); raise it, or "
                        "ask fewer questions or fewer --max-tokens. Nothing was sent")


def check_cap(config: RunSettings, requests: list[GenerationRequest], run_dir: Path) -> None:
    """--max-cost as a cap (no budget): DataError, before the run directory is made, when a new run could
    send nothing under it: on a batch backend, the worst case of its jobs (every record's prompt and every
    path at --max-tokens), which the run checks before submitting any; on a backend called request by
    request, the worst case of its cheapest request, which it books before sending it. A resumed run's
    ledger checks what is left as it goes."""
    from .costs import RESERVED_CHARS_PER_TOKEN

    price, cap = config.price(), config.budget.max_cost
    if price is None or cap is None or (run_dir / STORE_FILENAME).exists() or not requests:
        return
    spec = backend_spec(config.backend)
    backend_config = config.backend_config()
    tokens = f"--max-tokens {config.sampling.max_tokens:,}"
    if spec.batch:
        records = spec.plan_records(backend_config, requests) if spec.plan_records else _one_a_path(requests)
        worst = estimate(records).worst(price)
        what = f"the worst case of its jobs, {dollars(worst)} ({len(records):,} records, every path at {tokens})"
    else:
        worst = min(price.cost(len(_body(spec, backend_config, r)) // RESERVED_CHARS_PER_TOKEN, r.params.max_tokens)
                    for r in requests)
        what = f"the worst case of its cheapest request, {dollars(worst)} (its prompt and {tokens})"
    if worst > cap + 1e-12:
        raise DataError(f"--max-cost {dollars(cap)} cannot pay {what}: nothing would be sent; raise it, or ask "
                        "fewer questions, fewer paths or fewer --max-tokens")


def _check_first_batch_wave(config: RunSettings, spec, backend_config, pending: list[GenerationRequest],
                            price, resumed: bool) -> None:
    """The batch side of `check_first_wave`: the first wave's jobs cannot cost less than every record's
    prompt at the batch price and the worst case of the smallest job the run may send (a job's minimum of
    records, every path at --max-tokens), which the run checks before submitting it. A resumed run's jobs
    are checked by its ledger as they go."""
    from .waves import min_records_per_job

    if resumed:
        return
    records = spec.plan_records(backend_config, pending) if spec.plan_records else _one_a_path(pending)
    smallest = sorted(len(r.requests) * r.requests[0].params.max_tokens for r in records)
    least = price.cost(estimate(records).worst_prompt_tokens, sum(smallest[: max(min_records_per_job(config), 1)]))
    if least > config.budget.max_cost + 1e-12:
        raise DataError(f"--max-cost {dollars(config.budget.max_cost)} cannot pay the first wave: its {len(records):,} "
                        f"batch records (the greedy paths and every question's first paths) need at least "
                        f"{dollars(least)} at batch prices (their prompts, and the smallest job's worst case, every "
                        f"path at --max-tokens {config.sampling.max_tokens:,}); raise it, or ask fewer questions or "
                        "fewer --max-tokens. Nothing was sent")


def _body(spec, config, request: GenerationRequest) -> str:
    """A request's body as the backend sends it, compact JSON (its `preview`: a JSON body or a prompt text)."""
    import json

    if spec.preview is None:
        return json.dumps(request.prompt.chat_messages) if request.prompt.format is PromptFormat.chat \
            else request.prompt.text
    shown = spec.preview(config, request)
    try:
        return json.dumps(json.loads(shown))
    except ValueError:
        return shown
