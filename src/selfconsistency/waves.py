"""Adaptive stopping's waves: how many paths each undecided question needs next, and a wave grown to a
batch job's minimum of records when that is worth it. Decisions read the store, never the process's own
history, so a run killed and resumed grows its waves as an uninterrupted one does."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .backends.base import GenerationRequest
from .settings import GREEDY_TEMPERATURE, RunSettings
from .stopping import StoppingRule
from .store import SampleStore

log = logging.getLogger(__name__)


def first_wave(store: SampleStore) -> bool:
    """The run's first wave, as its store tells: no batch job yet and no sampled path stored."""
    return not store.jobs() and not set(store.path_counts()) - {GREEDY_TEMPERATURE}


def fill_wave(wanted: dict[tuple[str, float], int],
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


def next_round(config: RunSettings, rule: StoppingRule, store: SampleStore,
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
