"""How a run asks for its paths in waves when it does not ask for them all at once: adaptive stopping's
rounds (`--stop`) and budgets (`--budget-paths`, `--max-cost` as the amount to spend). Each wave goes to
the backend as one `generate` call (one batch job per provider); what to ask next is decided from the store
alone, so a killed run resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .allocation import WavePlanner, unit_key
from .backends import backend_spec
from .backends.base import BackendError, BudgetExceeded, GenerationRequest, dollars
from .settings import GREEDY_TEMPERATURE, RunSettings
from .stopping import StoppingRule
from .store import SampleStore
from .tasks import DataError

log = logging.getLogger(__name__)

Wanted = dict[tuple[str, float], int]  # (question id, temperature) -> paths it should have


def run_waves(config: RunSettings, store: SampleStore, question_ids: list[str], backend: Callable[[], object],
              plan: Callable[[Wanted], list[GenerationRequest]],
              generate: Callable[[list[GenerationRequest]], None]) -> None:
    """Ask for paths wave by wave until the rule has decided every question or the budget is spent;
    `plan(wanted)`: the requests of those paths not stored yet."""
    rule = config.stopping_rule()
    if config.stopping.budgeted(config.budget.max_cost):
        _spend_budget(config, store, question_ids, rule, backend, lambda wanted: generate(plan(wanted)))
        return
    # Each round goes in one wave (all temperatures together); the greedy path goes with the first.
    wanted = {**({(q, GREEDY_TEMPERATURE): 1 for q in question_ids} if config.sampling.greedy else {}),
              **_next_round(config, rule, store, question_ids)}
    while wanted:  # the first wave is the run's, as its store tells (no job, no sampled path), not the process's
        generate(plan(_fill_wave(wanted, plan, backend, rule.max_paths, first_wave(store))))
        wanted = _next_round(config, rule, store, question_ids)


def first_wave(store: SampleStore) -> bool:
    """The run's first wave: no batch job yet and no sampled path stored. Growth decisions read this, never
    the process's own history, so a run killed and resumed grows its waves as an uninterrupted one does."""
    return not store.jobs() and not set(store.path_counts()) - {GREEDY_TEMPERATURE}


def _spend_budget(config: RunSettings, store: SampleStore, question_ids: list[str], rule: StoppingRule | None,
                  backend: Callable[[], object], generate: Callable[[dict[tuple[str, float], int]], None]) -> None:
    """A budgeted run: the allocator's waves (all temperatures together, the greedy path with the first)
    until the budget is spent, then each question's stop recorded. The plan is replayed from the stored
    paths (`allocation.WavePlanner`): a resumed run finishes the wave it was killed in."""
    temperatures = config.sampling.temperatures
    keys = {t: [unit_key(config.sampling.seed, q, t) for q in question_ids] for t in temperatures}
    greedy = {(q, GREEDY_TEMPERATURE): 1 for q in question_ids} if config.sampling.greedy else {}
    min_records = min_records_per_job(config)
    first = config.budget_plan(len(question_ids), min_records, 1).min_paths  # each question's first wave
    _check_plan(config, store, question_ids, first, min_records)
    planners: dict[float, WavePlanner] = {}
    while True:
        answers = store.answers_in_order()
        budget = config.budget_plan(len(question_ids), min_records,
                                    _total_from_cost(config, store, question_ids, first))
        if not planners or next(iter(planners.values())).budget != budget:  # --max-cost: the total is now known
            planners = {t: WavePlanner(budget, keys[t], rule) for t in temperatures}
            _announce(config, budget, len(question_ids))
        wanted, finished, serving = dict(greedy), {}, []
        for t in temperatures:
            plan = planners[t].plan([answers.get((q, t), []) for q in question_ids])
            targets = {(q, t): n for q, n in zip(question_ids, plan.target, strict=True)}
            (finished if plan.done else wanted).update(targets)
            serving.append([(question_ids[u], t) for u in plan.order])
        if not any(t != GREEDY_TEMPERATURE for _, t in wanted):
            break
        stored = {key: len(answers.get(key, [])) for key in wanted}
        sampled = sum(max(0, n - stored[key]) for key, n in wanted.items() if key[1] != GREEDY_TEMPERATURE)
        log.info(f"budget: a wave of {sampled:,} sampled path{'s' * (sampled != 1)}")
        try:
            generate(wanted)
        except BudgetExceeded:  # --max-cost as the amount to spend: what is left buys a smaller wave
            if config.stopping.budget_paths is not None:
                raise
            if _affordable_part(wanted, stored, serving, sampled // 2, generate):
                continue  # the rest of the wave, or less, next time round
            if _first_wave_unbought(store, question_ids, temperatures, first):
                raise BudgetExceeded(f"--max-cost {dollars(config.budget.max_cost)} cannot pay every question's first "
                                     f"path{'s' * (first > 1)} at its worst case: raise it, or ask fewer questions "
                                     "or fewer --max-tokens. Stored paths are kept") from None
            log.warning("budget: what is left of --max-cost cannot pay the worst case of one more path (its prompt "
                        "and --max-tokens): the run ends here")
            answers = store.answers_in_order()
            finished = {(q, t): len(answers.get((q, t), [])) for q in question_ids for t in temperatures}
            break
    name = config.stops_name()
    answers = store.answers_in_order()
    for (qid, t), target in finished.items():
        sofar = answers.get((qid, t), [])
        used = min(target, len(sofar))
        fired = rule is not None and rule.decides(sofar[:used])
        store.record_stop(qid, t, name, used, len(sofar), "rule" if fired else "budget")


def min_records_per_job(config: RunSettings) -> int:
    """The fewest records a batch job of the run's backend takes (1 where there are no jobs)."""
    return getattr(config.options, "min_records_per_job", 1) if backend_spec(config.backend).batch else 1


def _announce(config: RunSettings, budget, questions: int) -> None:
    """The plan, before the first wave."""
    temperatures = len(config.sampling.temperatures)
    most = questions * budget.max_paths
    log.info(f"budget: {budget.total:,} sampled paths at {'each of ' * (temperatures > 1)}{temperatures} "
             f"temperature{'s' * (temperatures > 1)} over {questions:,} question{'s' * (questions > 1)} "
             f"({budget.total / questions:.1f} a question on average, at most {budget.max_paths}): "
             f"{budget.min_paths} each first, then waves of {budget.wave:,} at each temperature, by {budget.allocator}"
             + ("; the total is set after the first wave, from what it cost" if config.stopping.budget_paths is None
                and budget.total <= questions * budget.min_paths else ""))
    if budget.total > most:
        log.warning(f"budget: only {most:,} paths can be spent at each temperature ({questions:,} questions x "
                    f"--paths {budget.max_paths}): raise --paths to spend {budget.total:,}")


# What fixes a budgeted run's plan besides its amount: a later invocation that changes one of them would
# replay another plan over the paths the first one bought, and buy past the budget.
_PLAN_FIELDS = ("allocator", "first paths", "most paths", "wave", "stopping rule", "questions")


def _check_plan(config: RunSettings, store: SampleStore, question_ids: list[str], first: int,
                min_records: int) -> None:
    """Record the run directory's budget plan, or refuse one that differs from the plan recorded (the
    amount may grow: the new total buys the difference)."""
    import hashlib

    budget = config.budget_plan(len(question_ids), min_records, 1)
    plan = dict(zip(_PLAN_FIELDS, (budget.allocator, first, budget.max_paths, budget.wave,
                                   config.stopping.stop or "none",
                                   hashlib.sha256("\n".join(question_ids).encode()).hexdigest()[:16]), strict=True))
    recorded = store.budget_plan()
    if recorded is None:
        store.record_budget_plan(plan)
        return
    changed = [key for key in _PLAN_FIELDS if recorded.get(key) != plan[key]]
    if changed:
        said = "; ".join(f"{key}: {recorded.get(key)} before, {plan[key]} now" if key != "questions"
                         else "questions: another selection (--data, --limit, --offset)" for key in changed)
        raise DataError(f"this run directory's budget was planned otherwise ({said}): the same settings replay "
                        "its plan and spend only a larger amount's difference; a new plan needs a new --run-dir")


def _first_wave_unbought(store: SampleStore, question_ids: list[str], temperatures, first: int) -> bool:
    answers = store.answers_in_order()
    return any(len(answers.get((q, t), [])) < first for q in question_ids for t in temperatures)


def _affordable_part(wanted: Wanted, stored: dict[tuple[str, float], int], serving: list[list[tuple[str, float]]],
                     paths: int, generate: Callable[[Wanted], None]) -> int:
    """A wave of a --max-cost budget the amount left cannot pay at its worst case, cut to what it can:
    half the wave's paths (the questions it serves first, temperatures taking turns), then half of that,
    until a part is bought; how many paths that part had (0: none could be, or a part would be too small
    for a first batch job)."""
    while paths > 0:
        part = {key: n for key, n in wanted.items() if key[1] == GREEDY_TEMPERATURE}
        given = 0
        for round_ in range(max((n - stored[k] for k, n in wanted.items()), default=0)):
            for turn in range(max(map(len, serving), default=0)):
                for units in serving:
                    if turn < len(units) and given < paths:
                        key = units[turn]
                        if wanted[key] - stored[key] > round_:
                            part[key] = stored[key] + round_ + 1
                            given += 1
        try:
            generate({**{k: stored[k] for k in wanted if k[1] != GREEDY_TEMPERATURE}, **part})
            return given
        except BudgetExceeded:
            paths //= 2
        except BackendError:  # too few records for a job, and no job yet to send them on demand after
            return 0
    return 0


def _total_from_cost(config: RunSettings, store: SampleStore, question_ids: list[str], min_paths: int
                     ) -> int | None:
    """What --max-cost as the amount to spend comes to in sampled paths per temperature (None when the
    budget is --budget-paths): before the first wave, its paths; after it, those plus what is left of the
    amount at the measured mean cost of a sampled path, fixed in the store so a resumed run keeps the plan.
    The backends' cap still holds: a wave that could pass it is refused, and the run ends there."""
    if config.stopping.budget_paths is not None:
        return None
    name = config.stops_name()
    fixed = store.budget_total(name)
    if fixed is not None:
        return fixed
    price = config.price(priced_as=(store.priced_as() or {}).get("model"))  # an inference profile's model
    if price is None:
        raise DataError(f"--max-cost as the amount to spend needs a price for {config.model}: give a price file "
                        "(--prices), or spend --budget-paths")
    first = len(question_ids) * min_paths
    asked, temperatures = set(question_ids), set(config.sampling.temperatures)
    sampled = [p for p in store.paths(text=False) if p.temperature in temperatures and p.question_id in asked]
    if len(sampled) < first * len(config.sampling.temperatures):
        return first  # the first wave: every question's first paths, measured before anything else is planned
    unsettled = store.unsettled()  # requests a kill left unsettled: spent at their worst case
    spent = sum(price.cost(p.prompt_tokens, p.completion_tokens) for p in store.paths(text=False)) + \
        price.cost(unsettled.prompt_tokens, unsettled.output_tokens)
    per_path = sum(price.cost(p.prompt_tokens, p.completion_tokens) for p in sampled) / len(sampled)
    left = max(0.0, config.budget.max_cost - spent)
    # What is left buys paths on top of every sampled path bought so far (a larger amount later: the paths
    # the smaller one bought, not only its first wave).
    bought = len(sampled) // len(config.sampling.temperatures)
    total = bought + int(left / len(config.sampling.temperatures) / per_path) if per_path else bought
    total = min(total, len(question_ids) * config.sampling.paths)  # no more than the questions can take
    store.record_budget_total(name, total)
    log.info(f"budget: --max-cost {config.budget.max_cost:g} comes to {total:,} sampled paths per temperature at "
             f"the first wave's mean cost of ${per_path:.6f} a path")
    return total


def _fill_wave(wanted: dict[tuple[str, float], int],
               plan: Callable[[dict[tuple[str, float], int]], list[GenerationRequest]],
               backend: Callable[[], object], max_paths: int, first: bool) -> dict[tuple[str, float], int]:
    """A wave below a batch job's minimum of records, grown by one path per undecided question at a time
    (up to the maximum) until it reaches the minimum: always for the first wave (a run too small for a job
    is refused), for later ones only while the paths at batch price cost no more than the wave would on
    demand (twice the batch price). Otherwise the wave is left as it is and goes on demand."""
    asked = plan(wanted)
    if not asked:
        return wanted
    minimum = getattr(backend(), "min_records_per_job", 1)
    count = getattr(backend(), "count_records", len)
    if count(asked) >= minimum:
        return wanted
    grown = wanted
    while True:
        bigger = {key: n if key[1] == GREEDY_TEMPERATURE else min(n + 1, max_paths) for key, n in grown.items()}
        if bigger == grown:
            break
        grown = bigger
        requests = plan(grown)
        if not first and len(requests) > 2 * len(asked):
            break
        if count(requests) >= minimum:
            log.info(f"adaptive stopping: wave grown from {len(asked)} to {len(requests)} paths to reach "
                     f"a batch job's minimum of {minimum} records")
            return grown
    if not first:
        log.warning(f"adaptive stopping: a wave of {len(asked)} paths ({count(asked)} records) is below a "
                    f"batch job's minimum of {minimum} records: it goes on demand, at twice the batch price")
    return wanted


def _next_round(config: RunSettings, rule: StoppingRule, store: SampleStore,
                question_ids: list[str]) -> dict[tuple[str, float], int]:
    """Record the questions the rule has decided; how many paths each undecided one needs next."""
    answers = store.answers_in_order()
    decided = store.stops(rule.name)
    wanted = {}
    for qid in question_ids:
        for temperature in config.sampling.temperatures:
            if (qid, temperature) in decided:
                continue
            sofar = answers.get((qid, temperature), [])
            used = next((k for k in range(1, len(sofar) + 1) if rule.should_stop(sofar[:k])), None)
            if used is not None:
                reason = "max paths" if used >= rule.max_paths and not rule.decides(sofar[:used]) else "rule"
                store.record_stop(qid, temperature, rule.name, used, len(sofar), reason)
            else:
                wanted[(qid, temperature)] = min(len(sofar) + config.stopping.round_size, rule.max_paths)
    return wanted
