"""Accuracy of majority-of-k against k. Pure numpy: no I/O, randomness only from the seed given.

Two estimates per k, over each question's N stored paths:
- `mean`/`std`: the blog's method. R runs; in each, every question votes over a random k-subset of its
  paths (the first k of a fresh random permutation, so one run's subsets are nested as k grows) with
  random tie-breaks; std is over the R run accuracies (ddof=0).
- `exact`: the expectation of that accuracy over all C(N, k) subsets and tie-breaks, in closed form.

Both are computed for all questions at once (issue 16: 7,473 questions x 30 paths x 100 runs in well under
a second): the exact curve once per distinct count signature, the runs by drawing each question's
permutation one step at a time and keeping only running vote totals, never a runs x questions x answers cube.
"""

from __future__ import annotations

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
    width = widths.pop()
    rows, gold_ids = [], []
    for row, gold in zip(answers, golds, strict=True):
        ids: dict[str, int] = {}
        rows.append([0 if answer is None else ids.setdefault(answer, len(ids) + 1) for answer in row])
        gold_ids.append(ids.get(gold, -1))
    return np.array(rows, dtype=np.int64).reshape(len(rows), width), np.array(gold_ids, dtype=np.int64)


def exact_majority_accuracy(gold_count: int, other_counts: Sequence[int], abstentions: int) -> np.ndarray:
    """P(majority-of-k is right) for k = 1..N, over uniform k-subsets and uniform tie-breaks.

    With g gold votes in the subset, gold wins iff every other answer has at most g votes; if t of
    them have exactly g it wins the tie with probability 1/(1+t). A generating polynomial over
    (subset size z, tied answers t) counts the subsets of the non-gold paths for each g.
    """
    others = sorted((c for c in other_counts if c > 0), reverse=True)
    signature = np.array([[gold_count, abstentions, *others]], dtype=np.int64)
    return _signature_curves(signature, gold_count + sum(others) + abstentions)[0]


def _signatures(encoded: np.ndarray, gold_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (gold count, abstentions, other answers' counts descending, zero-padded) rows, and which
    row each question with a sampled gold has. Questions sharing a row share their exact curve."""
    n_questions = encoded.shape[0]
    width = int(encoded.max(initial=0)) + 1
    cells = (np.arange(n_questions)[:, None] * width + encoded).ravel()
    counts = np.bincount(cells, minlength=n_questions * width).reshape(n_questions, width)
    has_gold = gold_ids >= 0
    counts, gold = counts[has_gold], gold_ids[has_gold]
    rows = np.arange(len(gold))
    gold_count, abstentions = counts[rows, gold], counts[:, 0].copy()
    counts[rows, gold] = 0
    counts[:, 0] = 0
    others = -np.sort(-counts, axis=1)
    keys = np.column_stack([gold_count, abstentions, others])
    return np.unique(keys, axis=0, return_inverse=True)


def _signature_curves(signatures: np.ndarray, n: int) -> np.ndarray:
    """exact_majority_accuracy of each signature row, k = 1..n.

    Bit for bit the floats of the one-signature-at-a-time loop this replaced: the subset counts are
    integers (exact in float64 while C(n, n/2) < 2**53, n <= 56), each (g, t_max) tie share is the same
    (n+1) x (t_max+1) matrix-vector product, and the sum over g runs in the same order.
    """
    gold_count, others = signatures[:, 0], signatures[:, 2:]
    t_max = (others > 0).sum(axis=1)
    # One (signature, g) pair per g = 1..gold count; what its polynomial needs: the answers with at least
    # g votes (they can tie or beat gold), and how many paths are free (abstentions and smaller answers).
    pair_sig, pair_g = np.nonzero(np.arange(1, n + 1)[None, :] <= gold_count[:, None])
    pair_g = pair_g + 1
    big = np.where(others[pair_sig] >= pair_g[:, None], others[pair_sig], 0)
    free = n - gold_count[pair_sig] - big.sum(axis=1)
    keys = np.column_stack([pair_g, t_max[pair_sig], free, big])
    unique_keys, key_of_pair = np.unique(keys, axis=0, return_inverse=True)
    tie_share = np.vstack([_tie_shares(unique_keys, n), np.zeros(n + 1)])  # last row: no pair
    share_index = np.full((len(signatures), n + 1), len(unique_keys))
    share_index[pair_sig, pair_g] = key_of_pair.ravel()
    binomial = _binomials(n)
    weighted = np.zeros((len(signatures), n + 1))
    for g in range(1, n + 1):
        ways = binomial[gold_count, g]  # 0 where gold_count < g: adds exact zeros
        weighted[:, g:] += ways[:, None] * tie_share[share_index[:, g], : n + 1 - g]
    return weighted[:, 1:] / binomial[n, 1:]


def _binomials(n: int) -> np.ndarray:
    return np.array([[comb(a, b) for b in range(n + 1)] for a in range(n + 1)], dtype=float)


def _tie_shares(keys: np.ndarray, n: int) -> np.ndarray:
    """For each (g, t_max, free, big counts...) row: sum over tied answers t of
    #{non-gold subsets of size z with no answer above g and t answers at g} / (1 + t), for z = 0..n."""
    binomial = _binomials(n)
    out = np.zeros((len(keys), n + 1))
    g_col, t_col, free_col, big = keys[:, 0], keys[:, 1], keys[:, 2], keys[:, 3:]
    h_col = (big > 0).sum(axis=1)
    for g, h in sorted(set(zip(g_col.tolist(), h_col.tolist(), strict=True))):
        rows = np.flatnonzero((g_col == g) & (h_col == h))
        poly = np.zeros((len(rows), n + 1, h + 1))
        poly[:, :, 0] = binomial[free_col[rows]]  # (1+z)^free
        for i in range(h):  # times (sum_{x<g} C(c,x) z^x + C(c,g) z^g t) for each answer c >= g
            count = big[rows, i]
            grown = np.zeros_like(poly)
            for x in range(g):
                grown[:, x:, :] += binomial[count, x][:, None, None] * poly[:, : n + 1 - x, :]
            grown[:, g:, 1:] += binomial[count, g][:, None, None] * poly[:, : n + 1 - g, :-1]
            poly = grown
        for t_max in np.unique(t_col[rows]).tolist():
            chosen = t_col[rows] == t_max
            padded = np.zeros((int(chosen.sum()), n + 1, t_max + 1))
            padded[:, :, : h + 1] = poly[chosen]
            ties = 1.0 / (1.0 + np.arange(t_max + 1))
            # One product per matrix, shaped as before, so the summation order (BLAS) is the same.
            out[rows[chosen]] = [matrix @ ties for matrix in padded]
    return out


def exact_curve(encoded: np.ndarray, gold_ids: np.ndarray) -> np.ndarray:
    """Mean over questions of the exact majority-of-k accuracy, k = 1..N."""
    n_questions, n = encoded.shape
    if not (gold_ids >= 0).any():
        return np.zeros(n)  # gold never sampled anywhere: wrong for every k
    signatures, which = _signatures(encoded, gold_ids)
    per_question = _signature_curves(signatures, n)[which.ravel()]
    # Questions added in order, one at a time (cumsum is sequential), as the per-question loop did.
    return np.cumsum(per_question, axis=0)[-1] / n_questions


_CHUNK_ROWS = 1 << 16  # (run, question) rows simulated together: fits the working set in cache


def subset_curve(encoded: np.ndarray, gold_ids: np.ndarray, runs: int, rng: np.random.Generator,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over `runs` random runs of vote-of-k accuracy, k = 1..N.

    `weights` (questions x paths, >= 0) turn the majority vote into a weighted one; ties (exact) are
    broken uniformly at random either way. The path orders come from one stream of `rng` and the
    tie-breaks from another, so the same seed gives the same orders with or without weights.
    """
    return subset_curves(encoded.shape, [(encoded, gold_ids, weights, rng)], runs)[0]


def subset_curves(shape: tuple[int, int], votes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                 np.random.Generator]],
                  runs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`subset_curve` of several votes over answers of one shape (questions x paths), each
    (encoded, gold_ids, weights or None, rng), with the path orders drawn once: every vote's rng must be
    seeded alike (the orders are the first's; the tie-breaks each vote's own). Each result is bit for bit
    what `subset_curve` gives that vote alone."""
    n_questions, n = shape
    if n_questions == 0 or n == 0:
        return [(np.zeros(n), np.zeros(n)) for _ in votes]
    prepared = []
    for encoded, gold_ids, weights, rng in votes:
        if encoded.shape != (n_questions, n):
            raise ValueError("every vote needs answers of the same shape")
        labels = np.where(encoded == gold_ids[:, None], 1, np.where(encoded > 0, encoded + 1, 0))
        labels = labels.astype(np.int8 if labels.max() < 127 else np.int32)
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != encoded.shape or not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("vote weights must be finite, >= 0 and one per path")
            # A vote always counts for its answer, however small its weight.
            weights = np.maximum(weights, np.finfo(float).tiny)
        prepared.append((labels, weights, rng.spawn(2)))
    order_rng = prepared[0][2][0]
    # Blocks of questions, every run of each: the block's answers and weights stay in cache.
    block = max(1, _CHUNK_ROWS // runs)
    hits = [np.zeros((runs, n)) for _ in votes]
    for start in range(0, n_questions, block):
        cells = _orders(min(block, n_questions - start), n, runs, order_rng)
        seen: dict[int, np.ndarray] = {}  # votes over the same labels share the labels drawn
        for total, (labels, weights, (_, tie_rng)) in zip(hits, prepared, strict=True):
            if id(labels) not in seen:
                seen[id(labels)] = labels[start: start + block].reshape(-1).take(cells)
            drawn_weights = None if weights is None else weights[start: start + block].reshape(-1).take(cells)
            total += _count_wins(seen[id(labels)], drawn_weights, runs, tie_rng)
    return [((h / n_questions).mean(axis=0), (h / n_questions).std(axis=0)) for h in hits]


def _orders(n_questions: int, n: int, runs: int, order_rng: np.random.Generator) -> np.ndarray:
    """cells[k, r]: which of these questions' paths (question * n + path) row r = run * questions + question
    draws at step k. Each row draws its next path uniformly from those left: a Fisher-Yates shuffle taken
    one step at a time, so a run's subsets are nested as k grows."""
    rows = runs * n_questions
    row_cell = np.arange(rows, dtype=np.intp)
    left = np.repeat(np.arange(n, dtype=np.int16 if n < 2**15 else np.int32)[:, None], rows, axis=1)
    left_flat = left.reshape(-1)  # left[j, r]: the path at step j of row r's shuffle
    for k in range(n):
        pick = order_rng.random(rows)
        pick *= n - k
        pick = pick.astype(np.intp)
        pick *= rows
        pick += row_cell
        pick += k * rows
        path = left_flat.take(pick)
        left_flat[pick] = left[k]
        left[k] = path  # step k's slot is never picked again: it keeps the path drawn
    return np.tile(np.arange(n_questions, dtype=np.intp) * n, runs) + left


def _count_wins(drawn: np.ndarray, drawn_weights: np.ndarray | None, runs: int,
                tie_rng: np.random.Generator) -> np.ndarray:
    """Correct votes per run and k, given each row's labels in draw order (drawn[k, r]: 0 abstain, 1 gold,
    2.. other answers) and their weights (None: one vote each). Keeps running totals per row: gold's, the
    best other answer's, and how many other answers share that best total."""
    n, rows = drawn.shape
    n_questions = rows // runs
    row_cell = np.arange(rows, dtype=np.intp)
    width = int(drawn.max(initial=1)) + 1
    if drawn_weights is None:
        total_type, unreachable = np.int32, -(2**30)
        gold_weight = (drawn == 1).astype(np.int32)
    else:
        total_type, unreachable = np.float64, -np.inf
        gold_weight = np.where(drawn == 1, drawn_weights, 0.0)
    # Per row: one running total per label; abstentions' and gold's stay unreachable, so every total read
    # back is an other answer's or below any best.
    totals = np.zeros((rows, width), dtype=total_type)
    totals[:, :2] = unreachable
    totals = totals.reshape(-1)
    total_cell = row_cell * width
    gold = np.zeros(rows, dtype=total_type)
    best_other = np.zeros(rows, dtype=total_type)
    tied_others = np.zeros(rows, dtype=np.int16 if n < 2**15 else np.int32)
    hits = np.zeros((runs, n))
    for k in range(n):
        slot = total_cell + drawn[k]
        other = totals.take(slot)
        other += 1 if drawn_weights is None else drawn_weights[k]
        totals[slot] = other
        gold += gold_weight[k]
        tied_others = np.where(other > best_other, 1, tied_others + (other == best_other))
        np.maximum(best_other, other, out=best_other)
        wins = np.count_nonzero((gold > best_other).reshape(runs, n_questions), axis=1)
        tie = np.flatnonzero(gold == best_other)
        tie = tie[gold.take(tie) > 0]
        if tie.size:  # gold among 1 + tied_others leaders: it wins with probability 1 / (1 + tied_others)
            won = tie_rng.random(tie.size) * (1 + tied_others.take(tie)) < 1
            wins += np.bincount(tie[won] // n_questions, minlength=runs)
        hits[:, k] = wins
    return hits


def accuracy_curve(answers: Sequence[Sequence[str | None]], golds: Sequence[str], runs: int = 100,
                   seed: int = 0) -> list[CurvePoint]:
    encoded, gold_ids = encode(answers, golds)
    mean, std = subset_curve(encoded, gold_ids, runs, np.random.default_rng(seed))
    exact = exact_curve(encoded, gold_ids)
    return [CurvePoint(k=k + 1, mean=float(mean[k]), std=float(std[k]), exact=float(exact[k]))
            for k in range(encoded.shape[1])]


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    return float(np.mean([p is not None and p == g for p, g in zip(predictions, golds, strict=True)])) if golds else 0.0
