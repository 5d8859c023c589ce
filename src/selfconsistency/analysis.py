"""Accuracy of majority-of-k against k. Pure numpy: no I/O, randomness only from the seed given.

Two estimates per k, over each question's N stored paths:
- `mean`/`std`: the blog's method. R runs; in each, every question votes over a random k-subset of its
  paths (the first k of a fresh random permutation, so one run's subsets are nested as k grows) with
  random tie-breaks; std is over the R run accuracies (ddof=0).
- `exact`: the expectation of that accuracy over all C(N, k) subsets and tie-breaks, in closed form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb

import numpy as np


@dataclass(frozen=True)
class CurvePoint:
    k: int
    mean: float
    std: float
    exact: float


def encode(answers: Sequence[Sequence[str | None]], golds: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Answers as ints per question (0 = abstain, 1.. = distinct answers) and the gold's id (-1 if
    no path gave it). Every question must have the same number of paths."""
    widths = {len(row) for row in answers}
    if len(widths) != 1:
        raise ValueError(f"every question needs the same number of paths, got {sorted(widths)}")
    encoded = np.zeros((len(answers), widths.pop()), dtype=np.int64)
    gold_ids = np.full(len(answers), -1, dtype=np.int64)
    for q, (row, gold) in enumerate(zip(answers, golds, strict=True)):
        ids: dict[str, int] = {}
        for j, answer in enumerate(row):
            if answer is not None:
                encoded[q, j] = ids.setdefault(answer, len(ids) + 1)
        gold_ids[q] = ids.get(gold, -1)
    return encoded, gold_ids


def exact_majority_accuracy(gold_count: int, other_counts: Sequence[int], abstentions: int) -> np.ndarray:
    """P(majority-of-k is right) for k = 1..N, over uniform k-subsets and uniform tie-breaks.

    With g gold votes in the subset, gold wins iff every other answer has at most g votes; if t of
    them have exactly g it wins the tie with probability 1/(1+t). A generating polynomial over
    (subset size z, tied answers t) counts the subsets of the non-gold paths for each g.
    """
    n = gold_count + sum(other_counts) + abstentions
    weighted = np.zeros(n + 1)  # weighted[k]: sum over g of subsets where gold wins, tie-weighted
    t_max = len(other_counts)
    for g in range(1, gold_count + 1):
        poly = np.zeros((n + 1, t_max + 1))
        poly[: abstentions + 1, 0] = [comb(abstentions, a) for a in range(abstentions + 1)]
        for count in other_counts:
            grown = np.zeros_like(poly)
            for x in range(min(count, g) + 1):
                term = comb(count, x) * poly[: n + 1 - x]
                if x == g:
                    grown[x:, 1:] += term[:, :-1]
                else:
                    grown[x:] += term
            poly = grown
        tie_share = poly @ (1.0 / (1.0 + np.arange(t_max + 1)))  # indexed by non-gold subset size
        weighted[g:] += comb(gold_count, g) * tie_share[: n + 1 - g]
    return np.array([weighted[k] / comb(n, k) for k in range(1, n + 1)])


def exact_curve(encoded: np.ndarray, gold_ids: np.ndarray) -> np.ndarray:
    """Mean over questions of the exact majority-of-k accuracy, k = 1..N."""
    n_questions, n = encoded.shape
    total = np.zeros(n)
    memo: dict[tuple[int, tuple[int, ...], int], np.ndarray] = {}
    for row, gold in zip(encoded, gold_ids, strict=True):
        if gold < 0:
            continue  # gold never sampled: wrong for every k
        counts = Counter(int(a) for a in row)
        key = (counts.pop(int(gold)), tuple(sorted(c for a, c in counts.items() if a != 0)), counts.get(0, 0))
        if key not in memo:
            memo[key] = exact_majority_accuracy(*key)
        total += memo[key]
    return total / n_questions


def subset_curve(encoded: np.ndarray, gold_ids: np.ndarray, runs: int, rng: np.random.Generator,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over `runs` random runs of vote-of-k accuracy, k = 1..N.

    `weights` (questions x paths) turn the majority vote into a weighted one; ties (exact) are broken
    uniformly at random either way.
    """
    n_questions, n = encoded.shape
    n_answers = int(encoded.max(initial=0)) + 1
    weights = np.ones(encoded.shape) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(rng.random((runs, n_questions, n)), axis=2)
    drawn = np.take_along_axis(np.broadcast_to(encoded, (runs, n_questions, n)), order, axis=2)
    drawn_weight = np.take_along_axis(np.broadcast_to(weights, (runs, n_questions, n)), order, axis=2)
    totals = np.zeros((runs, n_questions, n_answers))
    votes = np.zeros((runs, n_questions))
    run_index, question_index = np.meshgrid(np.arange(runs), np.arange(n_questions), indexing="ij")
    accuracy = np.zeros((runs, n))
    for k in range(1, n + 1):
        answer = drawn[:, :, k - 1]
        totals[run_index, question_index, answer] += drawn_weight[:, :, k - 1]
        votes += answer > 0
        totals[:, :, 0] = -np.inf  # abstentions never win
        leaders = totals >= totals.max(axis=2, keepdims=True)
        # A random key among the leaders only: argmax picks one of the tied leaders uniformly.
        winner = np.where(leaders, rng.random(totals.shape), -1.0).argmax(axis=2)
        accuracy[:, k - 1] = ((winner == gold_ids[None, :]) & (votes > 0)).mean(axis=1)
    return accuracy.mean(axis=0), accuracy.std(axis=0)


def accuracy_curve(answers: Sequence[Sequence[str | None]], golds: Sequence[str], runs: int = 100,
                   seed: int = 0) -> list[CurvePoint]:
    encoded, gold_ids = encode(answers, golds)
    mean, std = subset_curve(encoded, gold_ids, runs, np.random.default_rng(seed))
    exact = exact_curve(encoded, gold_ids)
    return [CurvePoint(k=k + 1, mean=float(mean[k]), std=float(std[k]), exact=float(exact[k]))
            for k in range(encoded.shape[1])]


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    return float(np.mean([p is not None and p == g for p, g in zip(predictions, golds, strict=True)])) if golds else 0.0
