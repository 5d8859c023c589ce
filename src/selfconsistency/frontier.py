"""The stopping-rule frontier of a stored run: each rule, and each budget allocator at each budget,
replayed on the stored paths (accuracy against mean paths used, with its 95% interval over questions and
its paired difference from fixed N at N) beside the fixed-N curve. `selfconsistency simulate` and
bench/adaptive.py both use it.

Pure computation (`frontier`), plus `stored_frontier`, which reads a run directory's store for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .allocation import AllocationReplay, replay_allocation
from .analysis import CurvePoint, accuracy_curve
from .collector import collector_paused
from .results import sampled_answers
from .stats import Paired, intervals, paired, resample_weights
from .stopping import ReplayResult, StoppingRule, TieBreaks, parse_rule, replay_many
from .store import SampleStore

MAX_REPLAYS = 20_000_000  # (order, question) pairs replayed together: about 2 GB of working arrays


@dataclass(frozen=True)
class Frontier:
    temperature: float
    paths: int  # N: the stored paths per question each rule may use at most
    questions: int
    runs: int  # random path orders replayed per question
    fixed: list[CurvePoint]  # accuracy of the vote of k paths, k = 1..N
    rules: list[ReplayResult]  # one per rule, in the order given
    allocations: list[AllocationReplay] = field(default_factory=list)  # per allocator, per budget
    wave: int | None = None  # paths per wave of the allocations
    # each question's vote over all N paths, right or not, tie-broken as every reader breaks it: what a
    # replay that ends with all N paths gives, so a replay is compared with fixed N on the same footing
    fixed_votes: np.ndarray | None = field(default=None, repr=False)

    @property
    def fixed_accuracy(self) -> float:
        """Fixed N's accuracy at N, the vote of every stored path (the curve's last point is its expectation
        over tie-breaks)."""
        return float(self.fixed_votes.mean()) if self.fixed_votes is not None and len(self.fixed_votes) else \
            self.fixed[-1].exact

    def fixed_at(self, mean_paths: float) -> float:
        """The fixed-N accuracy at a (fractional) number of paths, linear between the two nearest k."""
        return float(np.interp(mean_paths, [p.k for p in self.fixed], [p.exact for p in self.fixed]))

    def interval(self, result: ReplayResult | AllocationReplay) -> tuple[float, float]:
        """The 95% interval of a replay's accuracy over questions (percentile bootstrap)."""
        if not result.per_question:
            return result.accuracy, result.accuracy
        low, high = intervals(np.array(result.per_question)[:, None], resample_weights(len(result.per_question)))
        return float(low[0]), float(high[0])

    def versus_fixed(self, result: ReplayResult | AllocationReplay) -> Paired | None:
        """A replay's accuracy minus fixed N's at N, question by question (paired bootstrap, permutation)."""
        if self.fixed_votes is None or not result.per_question:
            return None
        return paired(np.array(result.per_question), self.fixed_votes)

    def _row(self, result: ReplayResult | AllocationReplay) -> dict[str, Any]:
        low, high = self.interval(result)
        versus = self.versus_fixed(result)
        row = {key: value for key, value in result.__dict__.items()
               if key not in ("per_question", "per_order", "taken")}  # per question: in the intervals
        return {**row, "low": low, "high": high, "fixed_at_same_paths": self.fixed_at(result.mean_paths),
                "versus_fixed_n": versus.to_json() if versus else None}

    def to_json(self) -> dict[str, Any]:
        """frontier.json's content."""
        return {"temperature": self.temperature, "paths": self.paths, "questions": self.questions,
                "runs": self.runs, "fixed": [p.__dict__ for p in self.fixed],
                "rules": [self._row(r) for r in self.rules], "wave": self.wave,
                "allocations": [self._row(a) for a in self.allocations]}


def frontier(rules: Sequence[StoppingRule], answers: Sequence[Sequence[str | None]], golds: Sequence[str],
             paths: int, temperature: float, runs: int = 100, seed: int = 0,
             ties: TieBreaks | None = None, allocators: Sequence[str] = (), budgets: Sequence[float] = (),
             wave: int | None = None, min_paths: int = 1) -> Frontier:
    """Replay every rule, and every allocator at every budget (mean paths per question, in waves of
    `wave` paths: default a quarter of the questions, as a run's), over the same random orders of each
    question's (at most `paths`) stored answers (votes tie-broken by `ties`, the run's), and the fixed-N
    curve."""
    wave = wave or max(1, -(-len(golds) // 4))
    allocations = [replay_allocation(name, answers, golds, budget, wave=wave, min_paths=min_paths, runs=runs,
                                     seed=seed, ties=ties)
                   for name in allocators for budget in budgets]
    return Frontier(temperature=temperature, paths=paths, questions=len(golds), runs=runs,
                    fixed=accuracy_curve(answers, golds, runs=runs, seed=seed),
                    rules=replay_many(rules, answers, golds, runs=runs, seed=seed, ties=ties),
                    allocations=allocations, wave=wave if allocations else None,
                    fixed_votes=_votes_of_all(answers, golds, ties or TieBreaks.anonymous(len(golds))))


def _votes_of_all(answers: Sequence[Sequence[str | None]], golds: Sequence[str], ties: TieBreaks) -> np.ndarray:
    from .vote import decide

    return np.array([decide(list(row), seed=ties.seed, question_id=qid, temperature=ties.temperature,
                            ties=ties.rule).answer == gold
                     for row, gold, qid in zip(answers, golds, ties.question_ids, strict=True)], dtype=float)


def stored_frontier(run_dir: Path, temperature: float, rules: Sequence[str], min_paths: int = 1,
                    runs: int = 100, seed: int = 0, allocators: Sequence[str] = (), budgets: Sequence[float] = (),
                    wave: int | None = None) -> Frontier:
    """The frontier of a run directory's complete questions at one sampling temperature; rules as text
    (beta:0.95, esc:4, ...), allocators by name at each budget (mean paths per question). ValueError on
    an unknown temperature, rule or allocator, a budget past the stored paths, or no complete question."""
    with collector_paused():
        with SampleStore.open_readonly(run_dir) as store:
            answers, golds, n, ties = sampled_answers(store, temperature)
        parsed = [parse_rule(text, min_paths=min_paths, max_paths=n) for text in rules]
        if not answers:
            raise ValueError(f"no complete questions at T={temperature:g} in {run_dir}")
        if runs * len(answers) > MAX_REPLAYS:  # every (order, question) pair is replayed at once
            raise ValueError(f"--runs {runs:,} x {len(answers):,} questions is more than {MAX_REPLAYS:,} replays at "
                             f"once: give at most --runs {max(1, MAX_REPLAYS // len(answers)):,}")
        for budget in budgets:
            if not min_paths <= budget <= n:
                raise ValueError(f"a budget of {budget:g} paths per question is outside {min_paths}..{n} (the "
                                 "first paths every question gets, and the paths stored per question)")
        return frontier(parsed, answers, golds, n, temperature, runs=runs, seed=seed, ties=ties,
                        allocators=allocators, budgets=budgets, wave=wave, min_paths=min_paths)
