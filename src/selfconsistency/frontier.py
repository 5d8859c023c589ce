"""The stopping-rule frontier of a stored run: each rule replayed on the stored paths (accuracy against
mean paths used) beside the fixed-N curve. `selfconsistency simulate` and bench/adaptive.py both use it.

Pure computation (`frontier`), plus `stored_frontier`, which reads a run directory's store for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import CurvePoint, accuracy_curve
from .collector import collector_paused
from .results import sampled_answers
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

    def fixed_at(self, mean_paths: float) -> float:
        """The fixed-N accuracy at a (fractional) number of paths, linear between the two nearest k."""
        return float(np.interp(mean_paths, [p.k for p in self.fixed], [p.exact for p in self.fixed]))

    def to_json(self) -> dict[str, Any]:
        """frontier.json's content."""
        return {"temperature": self.temperature, "paths": self.paths, "questions": self.questions,
                "runs": self.runs, "fixed": [p.__dict__ for p in self.fixed],
                "rules": [r.__dict__ for r in self.rules]}


def frontier(rules: Sequence[StoppingRule], answers: Sequence[Sequence[str | None]], golds: Sequence[str],
             paths: int, temperature: float, runs: int = 100, seed: int = 0,
             ties: TieBreaks | None = None) -> Frontier:
    """Replay every rule over the same random orders of each question's (at most `paths`) stored answers
    (votes tie-broken by `ties`, the run's), and the fixed-N curve."""
    return Frontier(temperature=temperature, paths=paths, questions=len(golds), runs=runs,
                    fixed=accuracy_curve(answers, golds, runs=runs, seed=seed),
                    rules=replay_many(rules, answers, golds, runs=runs, seed=seed, ties=ties))


def stored_frontier(run_dir: Path, temperature: float, rules: Sequence[str], min_paths: int = 1,
                    runs: int = 100, seed: int = 0) -> Frontier:
    """The frontier of a run directory's complete questions at one sampling temperature; rules as text
    (beta:0.95, esc:4, ...). ValueError on an unknown temperature or rule, or no complete question."""
    with collector_paused():
        with SampleStore.open_readonly(run_dir) as store:
            answers, golds, n, ties = sampled_answers(store, temperature)
        parsed = [parse_rule(text, min_paths=min_paths, max_paths=n) for text in rules]
        if not answers:
            raise ValueError(f"no complete questions at T={temperature:g} in {run_dir}")
        if runs * len(answers) > MAX_REPLAYS:  # every (order, question) pair is replayed at once
            raise ValueError(f"--runs {runs:,} x {len(answers):,} questions is more than {MAX_REPLAYS:,} replays at "
                             f"once: give at most --runs {max(1, MAX_REPLAYS // len(answers)):,}")
        return frontier(parsed, answers, golds, n, temperature, runs=runs, seed=seed, ties=ties)
