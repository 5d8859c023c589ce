"""Budget allocators: which questions get the next paths when a budget is spent across a dataset. Pure.

A budgeted run gives every question (at every temperature: a *unit*) `min_paths` paths, then spends the
rest in waves: each wave gives one more path to each of the units an allocator ranks first (more than one
only when the wave is larger than the units that can take paths), up to `max_paths` per unit. The
allocation is a function of the answers of the waves before it and the run's seed alone, so a run killed
mid-wave and `replay_allocation` on stored paths make the same plan (`plan_waves`).

- uniform     every unit in turn (fewest paths first): fixed-N self-consistency under a budget; the
              reference.
- asc         the unit whose two leading answers are least separated first: P(leader's share > the
              runner-up's) under a Beta(c1+1, c2+1) posterior, the statistic of Adaptive-Consistency
              (Aggarwal et al. 2023) used as a ranking rather than a stop. The simpler baseline.
- blend-asc   Blend-ASC (Feng, Alonso, Odonnat 2025, arXiv:2511.12309), from its published description:
              the units are ranked twice, by the ASC statistic above and by the PPR-1v1 statistic (the
              prior-posterior-ratio martingale of Jain et al. 2022 for leader vs runner-up: the
              Beta(c1+1, c2+1) posterior density at 1/2, highest first), and the ranks are blended with a
              weight that moves from ASC (good early) to PPR-1v1 (asymptotically optimal late) as the
              budget is spent: score = (1 - s) * rank_ASC + s * rank_PPR, s = share of the budget spent.
              The weight schedule is our reading of "blended ranking"; the paper's text was not at hand.

Every tie goes by a hash of the run's seed, the unit's key and its paths so far (deterministic). A
question whose first SILENT_AFTER paths gave no answer at all is served after every other (the statistics
above would rank it least settled and pour paths into it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .stopping import StoppingRule, TieBreaks, beta_leader_probability


@functools.lru_cache(maxsize=1 << 16)
def _leader_probability(leader: int, runner_up: int) -> float:
    return beta_leader_probability(leader, runner_up) if leader else 0.5  # no answer yet: nothing known


@functools.lru_cache(maxsize=1 << 16)
def ppr_density(leader: int, runner_up: int) -> float:
    """Beta(leader+1, runner_up+1)'s density at 1/2: the PPR-1v1 martingale's reciprocal under a uniform
    prior (it stops when this falls below its error level), so higher means less settled."""
    return math.exp(math.lgamma(leader + runner_up + 2) - math.lgamma(leader + 1) - math.lgamma(runner_up + 1)
                    - (leader + runner_up) * math.log(2))


def _lookup(function: Callable[[int, int], float], c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """function(c1, c2) elementwise, computed once per distinct pair."""
    pairs, inverse = np.unique(np.stack([c1.ravel(), c2.ravel()]), axis=1, return_inverse=True)
    values = np.array([function(int(a), int(b)) for a, b in pairs.T])
    return values[inverse.ravel()].reshape(c1.shape)


def _ranks(values: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Each unit's place (0 first) along the last axis by value, equal values by tiebreak."""
    return np.argsort(np.lexsort((tiebreak, values), axis=-1), axis=-1)


def _uniform(c1: np.ndarray, c2: np.ndarray, taken: np.ndarray, spent: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    return taken.astype(float)


def _asc(c1: np.ndarray, c2: np.ndarray, taken: np.ndarray, spent: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    return _lookup(_leader_probability, c1, c2)


def _blend_asc(c1: np.ndarray, c2: np.ndarray, taken: np.ndarray, spent: np.ndarray,
               tiebreak: np.ndarray) -> np.ndarray:
    by_asc = _ranks(_lookup(_leader_probability, c1, c2), tiebreak)
    by_ppr = _ranks(-_lookup(ppr_density, c1, c2), tiebreak)
    return (1.0 - spent[:, None]) * by_asc + spent[:, None] * by_ppr


SILENT_AFTER = 2  # paths without any answer after which a question is served last

# (leader votes, runner-up votes, paths so far, share of the budget spent per row, tie-break keys)
# -> a score per unit, lowest served first. Arrays are (rows, units): one row per replayed order.
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
ALLOCATORS: dict[str, Scorer] = {"blend-asc": _blend_asc, "asc": _asc, "uniform": _uniform}
DEFAULT_ALLOCATOR = "blend-asc"


def register_allocator(name: str, scorer: Scorer) -> None:
    """Make `name` an allocator wherever allocators are named (--allocate, simulate, bench/adaptive.py)."""
    ALLOCATORS[name] = scorer


def scorer(name: str) -> Scorer:
    if name not in ALLOCATORS:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ValueError(f"unknown allocator {shown!r}; use one of {', '.join(ALLOCATORS)}")
    return ALLOCATORS[name]


def unit_key(seed: int, question_id: str, temperature: float) -> int:
    """A unit's 62-bit tie-break key (the same in a run and in a replay of it)."""
    from .vote import tie_rank

    return tie_rank(seed, question_id, temperature, "\x00allocation") >> 1


def _tiebreak(keys: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """A splitmix64-style mix of each unit's key and its paths so far: equal scores go to a different unit
    as paths are added, and the same unit for the same state."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + (taken.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) >> np.uint64(1)


def next_wave(score: Scorer, c1: np.ndarray, c2: np.ndarray, taken: np.ndarray, open_units: np.ndarray,
              wave: np.ndarray, spent: np.ndarray, keys: np.ndarray, max_paths: int) -> tuple[np.ndarray, np.ndarray]:
    """How many more paths each unit gets in the next wave, per row: `wave[row]` paths, one per unit in
    the scorer's order among the open units below `max_paths` (round again while the wave has paths
    left); and that order (unit indices, first served first). Arrays are (rows, units); `wave` and
    `spent` are per row."""
    tiebreak = _tiebreak(keys, taken)
    scores = score(c1, c2, taken, spent, tiebreak).astype(float)
    # A question whose first paths all gave no answer is served after every other: its paths have nothing
    # to vote on (the published statistics would call it least settled and give it every path).
    silent = (c1 == 0) & (taken >= SILENT_AFTER)
    order = np.lexsort((tiebreak, scores, silent), axis=-1)
    capacity = np.where(open_units, np.maximum(max_paths - taken, 0), 0)
    extra = np.zeros_like(taken)
    left = np.minimum(wave, capacity.sum(axis=1))
    while (left > 0).any():
        room = np.take_along_axis(capacity - extra, order, axis=-1) > 0
        place = np.cumsum(room, axis=-1)
        give_sorted = room & (place <= left[:, None])
        give = np.zeros_like(give_sorted)
        np.put_along_axis(give, order, give_sorted, axis=-1)
        extra += give
        left -= give.sum(axis=1)
    return extra, order


def leading_two(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two largest vote counts along the last axis (label 0, no answer, is no vote)."""
    votes = counts[..., 1:]
    if votes.shape[-1] < 2:
        votes = np.concatenate([votes, np.zeros(votes.shape[:-1] + (2 - votes.shape[-1],), votes.dtype)], axis=-1)
    top = np.partition(votes, votes.shape[-1] - 2, axis=-1)[..., -2:]
    return top[..., 1], top[..., 0]


@dataclass(frozen=True)
class Budget:
    """A budgeted run's plan inputs: `total` sampled paths over the units, each getting `min_paths` first and
    at most `max_paths`, the rest in waves of `wave` paths."""

    total: int
    min_paths: int
    max_paths: int
    wave: int
    allocator: str = DEFAULT_ALLOCATOR
    why_first: str = ""  # why min_paths is more than asked (a batch job's minimum of records)

    def __post_init__(self) -> None:
        scorer(self.allocator)
        if not 1 <= self.min_paths <= self.max_paths:
            raise ValueError(f"need 1 <= min paths ({self.min_paths}) <= max paths ({self.max_paths})")
        if self.wave < 1 or self.total < 1:
            raise ValueError("a budget and its waves need at least one path")

    def check(self, units: int) -> None:
        """ValueError if the budget cannot give every unit its first paths."""
        if self.total < units * self.min_paths:
            why = f" ({self.why_first})" if self.why_first else ""
            raise ValueError(f"a budget of {self.total:,} paths is less than {self.min_paths} per question for "
                             f"{units:,} questions ({units * self.min_paths:,}){why}: raise it or ask fewer "
                             "questions")


@dataclass(frozen=True)
class WavePlan:
    target: list[int]  # the paths each unit should have once the current wave is done
    done: bool  # the budget is spent, or no unit can take another path
    order: list[int]  # the units the current wave serves, first served first


class WavePlanner:
    """A budgeted run's allocation, replayed over the answers stored so far (each unit's answers in path
    order) up to the current wave: waves whose paths are all stored are taken in; the first wave with a
    missing path is the current one. A unit whose `rule` fires takes no more paths. The planner keeps
    what it has taken in, so a run asks it again after each wave at the cost of that wave alone."""

    def __init__(self, budget: Budget, keys: Sequence[int], rule: StoppingRule | None = None):
        budget.check(len(keys))
        self.budget, self.rule, self.units = budget, rule, len(keys)
        self.keys = np.array([list(keys)], dtype=np.uint64)
        self.counts = np.zeros((1, self.units, 2), dtype=np.int64)
        self.taken = np.zeros((1, self.units), dtype=np.int64)
        self.open = np.ones((1, self.units), dtype=bool)
        self.target = np.full((1, self.units), budget.min_paths, dtype=np.int64)
        self.order = np.arange(self.units)
        self.labels: list[dict[str, int]] = [{} for _ in range(self.units)]
        self.done = False

    def plan(self, answers: Sequence[Sequence[str | None]]) -> WavePlan:
        budget, units = self.budget, self.units
        while not self.done:
            if any(self.target[0, u] > len(answers[u]) for u in range(units)):
                return WavePlan(self.target[0].tolist(), False,
                                [int(u) for u in self.order if self.target[0, u] > self.taken[0, u]])
            for u in range(units):  # the wave is stored: take its answers in
                for answer in answers[u][self.taken[0, u]:self.target[0, u]]:
                    self._count(u, answer)
                self.taken[0, u] = self.target[0, u]
                if self.rule is not None and self.open[0, u] and \
                        self.rule.should_stop(list(answers[u][:self.taken[0, u]])):
                    self.open[0, u] = False
            spent = int(self.taken.sum())
            left = budget.total - spent
            if left <= 0:
                self.done = True
                break
            c1, c2 = leading_two(self.counts)
            extra, ranked = next_wave(scorer(budget.allocator), c1, c2, self.taken, self.open,
                                      np.array([min(budget.wave, left)]), np.array([spent / budget.total]),
                                      self.keys, budget.max_paths)
            if not extra.any():
                self.done = True
                break
            self.target, self.order = self.taken + extra, ranked[0]
        return WavePlan(self.target[0].tolist(), True, [])

    def _count(self, unit: int, answer: str | None) -> None:
        """One more vote for `answer` (label 0: no answer)."""
        label = 0 if answer is None else self.labels[unit].setdefault(answer, len(self.labels[unit]) + 1)
        if label >= self.counts.shape[2]:
            self.counts = np.concatenate([self.counts, np.zeros((1, self.units, label + 1 - self.counts.shape[2]),
                                                                dtype=np.int64)], axis=2)
        self.counts[0, unit, label] += 1


def plan_waves(budget: Budget, answers: Sequence[Sequence[str | None]], keys: Sequence[int],
               rule: StoppingRule | None = None) -> WavePlan:
    """The current wave of a budgeted run over these stored answers (`WavePlanner`, from the start)."""
    return WavePlanner(budget, keys, rule).plan(answers)


@dataclass(frozen=True)
class AllocationReplay:
    allocator: str
    budget: float  # paths per question the budget allows on average
    accuracy: float  # mean over orders
    accuracy_std: float  # over orders
    mean_paths: float  # paths used per question, mean over orders (below the budget when units run out)
    per_order: tuple[float, ...]  # accuracy of each order
    per_question: tuple[float, ...]  # each question's accuracy over the orders (for intervals over questions)
    taken: np.ndarray = field(repr=False, compare=False, default=None)  # (orders, questions): paths each got


def replay_allocation(allocator: str, answers: Sequence[Sequence[str | None]], golds: Sequence[str],
                      budget_per_question: float, *, wave: int, min_paths: int = 1, runs: int = 100,
                      seed: int = 0, ties: TieBreaks | None = None, rule: StoppingRule | None = None,
                      orders: np.ndarray | None = None) -> AllocationReplay:
    """A budgeted run replayed on stored paths in `runs` random orders per question: the same waves
    `plan_waves` plans (one order's paths revealed as the allocator asks for them), the vote at the end
    `vote.decide`'s (tie-broken by `ties`, default `TieBreaks.anonymous`). Every question has N stored
    paths, the most any may get. `orders` (runs, questions, N) replaces the random orders."""
    from .analysis import encode
    from .stopping import _label_ranks

    units = len(golds)
    if units == 0:
        return AllocationReplay(allocator, budget_per_question, 0.0, 0.0, 0.0, (), ())
    ties = ties or TieBreaks.anonymous(units)
    encoded, gold_ids = encode(answers, golds)
    n = encoded.shape[1]
    budget = Budget(total=int(round(budget_per_question * units)), min_paths=min_paths, max_paths=n, wave=wave,
                    allocator=allocator)
    budget.check(units)
    label = np.where(encoded == gold_ids[:, None], 1, np.where(encoded > 0, encoded + 1, 0))
    if orders is None:
        orders = np.random.default_rng(seed).permuted(np.broadcast_to(np.arange(n), (runs, units, n)), axis=-1)
    runs = orders.shape[0]
    drawn = np.take_along_axis(np.broadcast_to(label, (runs, units, n)), orders, axis=-1)
    width = int(label.max(initial=1)) + 1
    counts = np.zeros((runs, units, width), dtype=np.int64)
    taken = np.zeros((runs, units), dtype=np.int64)
    keys = np.broadcast_to(np.array([unit_key(ties.seed, q, ties.temperature) for q in ties.question_ids],
                                    dtype=np.uint64), (runs, units))
    open_units = np.ones((runs, units), dtype=bool)
    extra = np.full((runs, units), min_paths, dtype=np.int64)
    score = scorer(allocator)
    row_index, unit_index = np.indices((runs, units))
    while extra.any():
        for step in range(int(extra.max())):  # reveal each unit's next paths in its order
            more = extra > step
            revealed = drawn[row_index[more], unit_index[more], taken[more] + step]
            np.add.at(counts, (row_index[more], unit_index[more], revealed), 1)
        taken += extra
        if rule is not None:
            open_units &= ~_rule_stops(rule, drawn, taken, open_units, extra > 0)
        spent = taken.sum(axis=1)
        left = budget.total - spent
        if (left <= 0).all():
            break
        c1, c2 = leading_two(counts)
        extra, _ = next_wave(score, c1, c2, taken, open_units, np.minimum(wave, np.maximum(left, 0)),
                             spent / budget.total, keys, n)
    correct = _gold_wins(counts, _label_ranks(answers, golds, ties), ties.rule)
    accuracy = correct.mean(axis=1)
    return AllocationReplay(allocator, budget_per_question, float(accuracy.mean()), float(accuracy.std()),
                            float(taken.mean()), tuple(accuracy.tolist()), tuple(correct.mean(axis=0).tolist()), taken)


def _rule_stops(rule: StoppingRule, drawn: np.ndarray, taken: np.ndarray, open_units: np.ndarray,
                changed: np.ndarray) -> np.ndarray:
    """Where a per-question rule fires on the paths a unit has now (only units that just got paths)."""
    stops = np.zeros_like(open_units)
    for row, unit in zip(*np.nonzero(open_units & changed), strict=True):
        prefix = drawn[row, unit, :taken[row, unit]]
        stops[row, unit] = rule.should_stop([None if x == 0 else str(x) for x in prefix.tolist()])
    return stops


def _gold_wins(counts: np.ndarray, ranks: np.ndarray, tie_rule: str) -> np.ndarray:
    """Whether the gold answer (label 1) wins each (row, unit)'s vote: the most votes, a tie going to the
    higher tie rank (`vote.decide`), or under "abstain" to no answer."""
    gold = counts[..., 1]
    others = counts[..., 2:]
    best_other = others.max(axis=-1, initial=0)
    wins = (gold > best_other) & (gold > 0)
    if tie_rule == "random" and others.shape[-1]:
        width = ranks.shape[1]
        other_ranks = np.full(others.shape[1:], -1, dtype=np.int64)
        other_ranks[:, :max(0, min(width - 2, others.shape[-1]))] = ranks[:, 2:2 + others.shape[-1]]
        tied_ranks = np.where(others == gold[..., None], other_ranks[None], -1).max(axis=-1)
        wins |= (gold == best_other) & (gold > 0) & (ranks[None, :, 1] > tied_ranks)
    return wins
