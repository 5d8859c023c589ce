"""Majority vote over extracted answers. Pure: the only randomness is the generator passed in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def majority_vote(answers: Sequence[str | None], rng: np.random.Generator) -> str | None:
    """The most frequent answer; ties broken uniformly at random among the leaders sorted by answer (so
    the draw depends only on the RNG, not on the order the paths arrived in); `None` answers abstain.

    Returns None when every path abstained (the question then counts as wrong).
    """
    return counted_vote(answers, rng)[0]


def counted_vote(answers: Sequence[str | None], rng: np.random.Generator
                 ) -> tuple[str | None, list[tuple[str, int]], int]:
    """The majority vote's winner, each answer's count most frequent first (equal counts by answer) and the
    abstentions: the per-question view counts once for all three."""
    counts = Counter(answers)
    abstained = counts.pop(None, 0)
    ranked = sorted(counts.items(), key=_most_votes_first)
    if not ranked:
        return None, ranked, abstained
    tied = 1
    while tied < len(ranked) and ranked[tied][1] == ranked[0][1]:
        tied += 1
    # the leaders come ranked by answer: one draw among them when they tie
    return ranked[int(rng.integers(tied))][0] if tied > 1 else ranked[0][0], ranked, abstained


def _most_votes_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float], rng: np.random.Generator) -> str | None:
    """The answer with the largest summed weight; exact ties broken at random; `None` abstains (the answer
    builder's log-prob and CISC votes)."""
    totals: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
    if not totals:
        return None
    top = max(totals.values())
    leaders = sorted(answer for answer, total in totals.items() if total == top)
    return leaders[int(rng.integers(len(leaders)))] if len(leaders) > 1 else leaders[0]


def path_weights(method: str, logprob_sums: Sequence[float | None], lengths: Sequence[int]) -> np.ndarray:
    """Per-path vote weights.

    majority: 1 each. logprob: the path's length-normalised probability exp(mean token log-prob)
    (Wang et al. 2022, Table 1). cisc:T: confidence-weighted like CISC (Taubenfeld et al. 2025), a softmax
    of the mean log-prob at temperature T; the softmax's normaliser is common to a question's paths, so
    exp(mean / T) ranks answers the same way.
    """
    if method == "majority":
        return np.ones(np.shape(lengths))
    given = np.asarray(logprob_sums)
    if given.dtype == object and any(lp is None for lp in given.ravel()):  # numbers alone make a numeric array
        raise ValueError(f"vote {method!r} needs log-probabilities, and this backend gave none")
    # Also row by row for a (questions x paths) matrix of each: the softmax's max is per question.
    sums, counts = np.asarray(logprob_sums, dtype=float), np.asarray(lengths)
    if sums.shape != counts.shape:
        raise ValueError("one length per log-probability sum")
    mean = sums / np.maximum(counts, 1)
    if method == "logprob":
        return np.exp(mean)
    kind, _, temperature = method.partition(":")
    if kind == "cisc":
        t = float(temperature or 0.5)
        if t <= 0:
            raise ValueError("cisc temperature must be > 0")
        return np.exp((mean - mean.max(axis=-1, keepdims=True, initial=0.0)) / t)
    raise ValueError(f"unknown vote {method!r}; use majority, logprob or cisc:T")


def abstention_rate(answers: Sequence[str | None]) -> float:
    return sum(a is None for a in answers) / len(answers) if answers else 0.0
