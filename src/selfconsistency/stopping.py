"""Rules that decide when a question has enough paths. Pure: `should_stop(answers_so_far) -> bool`.

Answers arrive in sampling order; `None` is a path without an answer (it counts as a path spent, not as a
vote). Every rule honours a minimum and a maximum number of paths.

- fixed:N          stop at N paths (plain self-consistency).
- beta:T           Adaptive-Consistency (Aggarwal et al. 2023): with a, b votes for the two leading answers,
                   stop when P(p_a > p_b) >= T under a Beta(a+1, b+1) posterior.
- dirichlet:T      the same over every answer seen: P(leader has the largest share) >= T under
                   Dirichlet(counts + 1), estimated with a fixed-seed Monte-Carlo (deterministic).
- esc:W            Early-Stopping SC (Li et al. 2024): sample in windows of W; stop after a window whose W
                   answers are all the same.
- entropy:T        stop when, after at least 4 paths, the normalised entropy of the answers so far is <= T
                   (on fewer paths any agreement would look certain).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StoppingRule:
    """Base: the min/max bounds every rule shares; subclasses decide in between."""

    min_paths: int = 1
    max_paths: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.min_paths <= self.max_paths:
            raise ValueError(f"need 1 <= min paths ({self.min_paths}) <= max paths ({self.max_paths})")
        threshold = getattr(self, "threshold", None)
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside (0, 1]")
        if getattr(self, "window", 1) < 1 or getattr(self, "n", 1) < 1:
            raise ValueError("window and N must be at least 1")

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        if len(answers) >= self.max_paths:
            return True
        if len(answers) < self.min_paths:
            return False
        return self._decide(answers)

    def _decide(self, answers: Sequence[str | None]) -> bool:
        raise NotImplementedError

    def decides(self, answers: Sequence[str | None]) -> bool:
        """Whether the rule itself (not the maximum) is satisfied by these answers."""
        return len(answers) >= self.min_paths and self._decide(answers)

    @property
    def name(self) -> str:
        raise NotImplementedError


def _counts(answers: Sequence[str | None]) -> list[int]:
    return sorted(Counter(a for a in answers if a is not None).values(), reverse=True)


def beta_leader_probability(leader: int, runner_up: int) -> float:
    """P(X > 1/2) for X ~ Beta(leader+1, runner_up+1), exactly.

    For integer parameters, P(X <= x) = P(Binomial(a+b-1, x) >= a) with a = leader+1, b = runner_up+1,
    so P(X > 1/2) = P(Binomial(leader+runner_up+1, 1/2) <= leader).
    """
    n = leader + runner_up + 1
    return sum(math.comb(n, i) for i in range(leader + 1)) / 2**n


@dataclass(frozen=True)
class FixedN(StoppingRule):
    n: int = 40

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        return len(answers) >= min(self.n, self.max_paths)

    def _decide(self, answers: Sequence[str | None]) -> bool:
        return len(answers) >= self.n

    @property
    def name(self) -> str:
        return f"fixed:{self.n}"


@dataclass(frozen=True)
class BetaRule(StoppingRule):
    threshold: float = 0.95

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers) + [0, 0]
        if counts[0] == 0:
            return False
        return beta_leader_probability(counts[0], counts[1]) >= self.threshold

    @property
    def name(self) -> str:
        return f"beta:{self.threshold:g}"


@dataclass(frozen=True)
class DirichletRule(StoppingRule):
    threshold: float = 0.95
    draws: int = 4000

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers)
        if not counts:
            return False
        if len(counts) == 1:
            counts = counts + [0]  # an unseen alternative keeps one answer from being certain at once
        # Seeded by the counts alone: the same answers always get the same decision.
        rng = np.random.default_rng([len(counts), *counts])
        shares = rng.dirichlet(np.array(counts, dtype=float) + 1.0, size=self.draws)
        return float(np.mean(shares.argmax(axis=1) == 0)) >= self.threshold

    @property
    def name(self) -> str:
        return f"dirichlet:{self.threshold:g}"


@dataclass(frozen=True)
class WindowRule(StoppingRule):
    window: int = 5

    def _decide(self, answers: Sequence[str | None]) -> bool:
        if len(answers) % self.window:
            return False
        last = answers[-self.window:]
        return last[0] is not None and all(a == last[0] for a in last)

    @property
    def name(self) -> str:
        return f"esc:{self.window}"


@dataclass(frozen=True)
class EntropyRule(StoppingRule):
    threshold: float = 0.3
    at_least: int = 4

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers)
        total = sum(counts)
        if total == 0 or len(answers) < self.at_least:
            return False
        if len(counts) == 1:
            return True  # zero entropy
        probabilities = np.array(counts) / total
        entropy = float(-(probabilities * np.log(probabilities)).sum())
        return entropy / math.log(len(answers)) <= self.threshold

    @property
    def name(self) -> str:
        return f"entropy:{self.threshold:g}"


def parse_rule(text: str, min_paths: int = 1, max_paths: int = 40) -> StoppingRule:
    """`beta:0.95`, `dirichlet:0.95`, `esc:5`, `entropy:0.3`, `fixed:16`."""
    kind, _, value = text.partition(":")
    try:
        if kind == "fixed":
            return FixedN(min_paths=min_paths, max_paths=max_paths, n=int(value or max_paths))
        if kind == "beta":
            return BetaRule(min_paths=min_paths, max_paths=max_paths, threshold=float(value or 0.95))
        if kind == "dirichlet":
            return DirichletRule(min_paths=min_paths, max_paths=max_paths, threshold=float(value or 0.95))
        if kind == "esc":
            return WindowRule(min_paths=min_paths, max_paths=max_paths, window=int(value or 5))
        if kind == "entropy":
            return EntropyRule(min_paths=min_paths, max_paths=max_paths, threshold=float(value or 0.3))
    except ValueError:
        raise ValueError(f"bad value in stopping rule {text!r}") from None
    raise ValueError(f"unknown stopping rule {text!r}; use fixed:N, beta:T, dirichlet:T, esc:W or entropy:T")


@dataclass(frozen=True)
class ReplayResult:
    rule: str
    accuracy: float  # mean over runs
    accuracy_std: float  # over runs
    mean_paths: float  # paths used per question, mean over runs and questions


def replay(rule: StoppingRule, answers: Sequence[Sequence[str | None]], golds: Sequence[str], runs: int = 100,
           seed: int = 0) -> ReplayResult:
    """Apply `rule` to stored paths taken in `runs` random orders; majority vote on what it used.

    Each run draws one permutation per question; the rule sees the answers in that order and the vote
    (ties broken by the same seeded generator) uses the prefix it stopped at.
    """
    from .vote import majority_vote

    rng = np.random.default_rng(seed)
    accuracy = np.zeros(runs)
    used = np.zeros(runs)
    for run in range(runs):
        correct = spent = 0
        for row, gold in zip(answers, golds, strict=True):
            order = [row[i] for i in rng.permutation(len(row))]
            k = next((k for k in range(1, len(order) + 1) if rule.should_stop(order[:k])), len(order))
            correct += majority_vote(order[:k], rng) == gold
            spent += k
        accuracy[run] = correct / len(golds)
        used[run] = spent / len(golds)
    return ReplayResult(rule.name, float(accuracy.mean()), float(accuracy.std()), float(used.mean()))
