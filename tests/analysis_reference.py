"""The accuracy-curve implementation before issue 16, kept only as the reference the fast one is compared
with (tests/test_analysis.py) and timed against (bench/analysis_scale.py). Not used by the package."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb

import numpy as np


def reference_encode(answers: Sequence[Sequence[str | None]], golds: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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


def reference_exact_majority_accuracy(gold_count: int, other_counts: Sequence[int], abstentions: int) -> np.ndarray:
    n = gold_count + sum(other_counts) + abstentions
    weighted = np.zeros(n + 1)
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
        tie_share = poly @ (1.0 / (1.0 + np.arange(t_max + 1)))
        weighted[g:] += comb(gold_count, g) * tie_share[: n + 1 - g]
    return np.array([weighted[k] / comb(n, k) for k in range(1, n + 1)])


def reference_exact_curve(encoded: np.ndarray, gold_ids: np.ndarray) -> np.ndarray:
    n_questions, n = encoded.shape
    total = np.zeros(n)
    memo: dict[tuple[int, tuple[int, ...], int], np.ndarray] = {}
    for row, gold in zip(encoded, gold_ids, strict=True):
        if gold < 0:
            continue
        counts = Counter(int(a) for a in row)
        key = (counts.pop(int(gold)), tuple(sorted(c for a, c in counts.items() if a != 0)), counts.get(0, 0))
        if key not in memo:
            memo[key] = reference_exact_majority_accuracy(*key)
        total += memo[key]
    return total / n_questions


def reference_subset_curve(encoded: np.ndarray, gold_ids: np.ndarray, runs: int, rng: np.random.Generator,
                           weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        totals[:, :, 0] = -np.inf
        leaders = totals >= totals.max(axis=2, keepdims=True)
        winner = np.where(leaders, rng.random(totals.shape), -1.0).argmax(axis=2)
        accuracy[:, k - 1] = ((winner == gold_ids[None, :]) & (votes > 0)).mean(axis=1)
    return accuracy.mean(axis=0), accuracy.std(axis=0)


def reference_accuracy_curve(answers, golds, runs: int = 100, seed: int = 0):
    """(mean, std, exact) arrays over k = 1..N, as accuracy_curve computed them before."""
    encoded, gold_ids = reference_encode(answers, golds)
    mean, std = reference_subset_curve(encoded, gold_ids, runs, np.random.default_rng(seed))
    return mean, std, reference_exact_curve(encoded, gold_ids)
