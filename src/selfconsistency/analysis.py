"""Accuracy of majority-of-k against k. Pure numpy: no I/O, randomness only from the seed given.

Two estimates per k, over each question's N stored paths:
- `mean`/`std`: the blog's method. R runs; in each, every question votes over a random k-subset of its
  paths (the first k of a fresh random permutation, so one run's subsets are nested as k grows) with
  random tie-breaks; std is over the R run accuracies (ddof=0).
- `exact`: the expectation of that accuracy over all C(N, k) subsets and tie-breaks, in closed form.

Both are computed for all questions at once (issue 16: 7,473 questions x 30 paths x 100 runs in well under
a second): the exact curve once per distinct count signature, the runs by drawing each question's
permutation one step at a time and keeping only running vote totals, never a runs x questions x answers cube.
`subset_curves` runs several votes (the report's majority and weighted votes of every temperature) over
one set of path orders, each vote's steps vectorised over k.
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


# What a tie for the lead between gold and t other answers counts for, as a function of t >= 1 (t = 0: gold
# leads alone and wins): the expected share a uniform tie-break gives it ("random"), nothing ("abstain":
# a tie is no answer), or 1 for counting the questions where gold ties ("tied").
TIE_RULES = {"random": lambda t: 1.0 / (1.0 + t), "abstain": lambda t: np.where(t == 0, 1.0, 0.0),
             "tied": lambda t: np.where(t == 0, 0.0, 1.0)}


def _signature_curves(signatures: np.ndarray, n: int, ties: str = "random") -> np.ndarray:
    """exact_majority_accuracy of each signature row, k = 1..n (with `ties`: see TIE_RULES).

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
    tie_share = np.vstack([_tie_shares(unique_keys, n, ties), np.zeros(n + 1)])  # last row: no pair
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


def _tie_shares(keys: np.ndarray, n: int, ties: str = "random") -> np.ndarray:
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
            shares = TIE_RULES[ties](np.arange(t_max + 1)).astype(float)
            # One product per matrix, shaped as before, so the summation order (BLAS) is the same.
            out[rows[chosen]] = [matrix @ shares for matrix in padded]
    return out


def exact_curve(encoded: np.ndarray, gold_ids: np.ndarray, ties: str = "random") -> np.ndarray:
    """Mean over questions of the exact majority-of-k accuracy, k = 1..N (`ties`: see TIE_RULES)."""
    n_questions, n = encoded.shape
    if not (gold_ids >= 0).any():
        return np.zeros(n)  # gold never sampled anywhere: wrong for every k
    signatures, which = _signatures(encoded, gold_ids)
    per_question = _signature_curves(signatures, n, ties)[which.ravel()]
    # Questions added in order, one at a time (cumsum is sequential), as the per-question loop did.
    return np.cumsum(per_question, axis=0)[-1] / n_questions


def exact_curves(encoded: np.ndarray, gold_ids: np.ndarray, ties: str = "random") -> np.ndarray:
    """(questions x N): each question's exact majority-of-k accuracy, k = 1..N (0 where gold was never
    sampled); its column means are `exact_curve`'s, within float rounding."""
    n_questions, n = encoded.shape
    out = np.zeros((n_questions, n))
    has_gold = gold_ids >= 0
    if has_gold.any():
        signatures, which = _signatures(encoded, gold_ids)
        out[has_gold] = _signature_curves(signatures, n, ties)[which.ravel()]
    return out


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
                  runs: int, ties: str = "random") -> list[tuple[np.ndarray, np.ndarray]]:
    """`subset_curve` of several votes over answers of one shape (questions x paths), each
    (encoded, gold_ids, weights or None, rng), with the path orders drawn once: every vote's rng must be
    seeded alike (the orders are the first's; the tie-breaks each vote's own). Each result is bit for bit
    what `subset_curve` gives that vote alone. `ties`: "random" (a tie is broken at random) or "abstain"
    (a tie is no answer: gold wins only alone)."""
    n_questions, n = shape
    if n_questions == 0 or n == 0:
        return [(np.zeros(n), np.zeros(n)) for _ in votes]
    prepared, labels_of = [], {}
    for encoded, gold_ids, weights, rng in votes:
        if encoded.shape != (n_questions, n):
            raise ValueError("every vote needs answers of the same shape")
        answers = (id(encoded), id(gold_ids))  # votes over the same answers draw their labels once
        if answers not in labels_of:
            labels = np.where(encoded == gold_ids[:, None], 1, np.where(encoded > 0, encoded + 1, 0))
            labels_of[answers] = labels.astype(np.int8 if labels.max() < 127 else np.int32)
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != encoded.shape or not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("vote weights must be finite, >= 0 and one per path")
            # A vote always counts for its answer, however small its weight.
            weights = np.maximum(weights, np.finfo(float).tiny)
        prepared.append((answers, weights, rng.spawn(2)))
    order_rng = prepared[0][2][0]
    # Blocks of questions, every run of each: the block's answers and weights stay in cache.
    block = max(1, _CHUNK_ROWS // runs)
    hits = [np.zeros((runs, n)) for _ in votes]
    members_of = {answers: [i for i, vote in enumerate(prepared) if vote[0] == answers] for answers in labels_of}
    for start in range(0, n_questions, block):
        cells = _orders(min(block, n_questions - start), n, runs, order_rng)
        for answers, labels in labels_of.items():
            members = members_of[answers]
            wins = _count_wins(labels[start: start + block].reshape(-1),
                               [None if prepared[i][1] is None else prepared[i][1][start: start + block].reshape(-1)
                                for i in members], cells, runs, [prepared[i][2][1] for i in members], ties)
            for i, counted in zip(members, wins, strict=True):
                hits[i] += counted
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


_STEP_COLUMNS = 2048  # rows whose steps are computed together: arrays of a few hundred kB, reused from cache


def _count_wins(labels: np.ndarray, weights: list[np.ndarray | None], cells: np.ndarray, runs: int,
                tie_rngs: list[np.random.Generator], ties: str = "random") -> list[np.ndarray]:
    """Correct votes per run and k over a block of questions, for each of several votes over the same
    answers: `labels` (0 abstain, 1 gold, 2.. other answers) of its paths, flat, drawn once for all the
    votes; each vote's `weights` (None: one vote each); the paths each row draws (`_orders`). Ties are
    broken with one uniform draw per tied (k, row), in k then row order, from the vote's own generator."""
    n, rows = cells.shape
    steps = [(np.empty((n, rows), dtype=bool), np.empty((n, rows), dtype=bool),
              np.empty((n, rows), dtype=np.int16 if n < 2**15 else np.int32)) for _ in weights]
    for start in range(0, rows, _STEP_COLUMNS):
        part = slice(start, start + _STEP_COLUMNS)
        drawn_cells = cells[:, part]
        drawn = labels.take(drawn_cells)
        for vote_weights, (wins, tie, tied) in zip(weights, steps, strict=True):
            _vote_steps(drawn, None if vote_weights is None else vote_weights.take(drawn_cells), wins[:, part],
                        tie[:, part], tied[:, part])
    counted = []
    for (wins, tie, tied), tie_rng in zip(steps, tie_rngs, strict=True):
        tie = np.flatnonzero(tie)
        if tie.size and ties == "random":  # gold among 1 + tied leaders: it wins with probability 1 / (1 + tied)
            wins.ravel()[tie[tie_rng.random(tie.size) * (1 + tied.ravel().take(tie)) < 1]] = True
        counted.append(np.count_nonzero(wins.reshape(n, runs, rows // runs), axis=2).T.astype(float))
    return counted


def _vote_steps(drawn: np.ndarray, drawn_weights: np.ndarray | None, wins: np.ndarray, tie: np.ndarray,
                tied: np.ndarray) -> None:
    """For rows' labels in draw order (drawn[k, r]) and their weights: whether gold leads alone after k + 1
    draws (`wins`), ties the lead (`tie`), and with how many other answers (`tied`), written in place.

    All steps at once: each draw's new total for its answer, gold's running total, the best other answer's
    (a running maximum: totals only grow) and how many other answers share it (those that reached the best
    since it last rose; left unwritten when gold ties nowhere). Masks multiply rather than np.where: the same
    values, several times faster.
    """
    n, _ = drawn.shape
    other = drawn > 1
    if drawn_weights is None:
        small = np.int8 if n < 127 else np.int16 if n < 2**15 else np.int32
        new_total = _running_counts(drawn, small)
        gold = _accumulate(np.add, (drawn == 1).astype(small))
    else:
        small = np.int16 if n < 2**15 else np.int32
        new_total = _running_sums(drawn, drawn_weights)
        gold = _accumulate(np.add, drawn_weights * (drawn == 1))
    best = _accumulate(np.maximum, new_total * other)
    np.greater(gold, best, out=wins)
    np.logical_and(gold == best, gold > 0, out=tie)
    if not tie.any():  # `tied` is read only where gold ties: exact weighted ties are rare, skip the count
        return
    best_before = np.zeros_like(best)
    best_before[1:] = best[:-1]
    reached = other & (new_total == best)  # an other answer drawn to the best total (alone or tied)
    reached_so_far = _accumulate(np.add, reached.astype(small))
    rose = other & (new_total > best_before)  # ... above every other: it leads alone from here
    before_rise = _accumulate(np.maximum, (reached_so_far - 1) * rose)
    np.subtract(reached_so_far, before_rise, out=tied, casting="unsafe")


def _running_counts(drawn: np.ndarray, dtype: type) -> np.ndarray:
    """total[k, r]: how many of row r's first k + 1 draws have the label drawn at k."""
    n, _ = drawn.shape
    width, bits = int(drawn.max(initial=0)) + 1, max(1, n.bit_length())
    if width * bits > 64:
        return _running_sums(drawn, np.ones(drawn.shape, dtype=dtype))
    # Every label's count in one 64-bit word per row, `bits` bits each: one cumulative sum for all labels.
    shift = (np.arange(width, dtype=np.uint64) * np.uint64(bits)).take(drawn)
    packed = _accumulate(np.add, np.left_shift(np.uint64(1), shift))
    return (np.right_shift(packed, shift) & np.uint64((1 << bits) - 1)).astype(dtype)


def _accumulate(ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
    """ufunc.accumulate over axis 0, in place, one step (a whole row of cells) at a time: numpy's own
    accumulate walks a C-ordered array's long axis cell by cell, several times slower. The same
    operations in the same order, so the same floats as a running total."""
    for k in range(1, len(values)):
        ufunc(values[k - 1], values[k], out=values[k])
    return values


def _running_sums(drawn: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """total[k, r]: the sum of the weights of row r's first k + 1 draws with the label drawn at k, added in
    draw order (the same floats as one running total per label)."""
    n, rows = drawn.shape
    width = int(drawn.max(initial=0)) + 1
    totals = np.zeros(rows * width, dtype=weights.dtype)
    slots = np.arange(rows, dtype=np.intp) * width + drawn
    out = np.empty_like(weights)
    for k in range(n):
        total = totals.take(slots[k])
        total += weights[k]
        totals[slots[k]] = total
        out[k] = total
    return out


def accuracy_curve(answers: Sequence[Sequence[str | None]], golds: Sequence[str], runs: int = 100,
                   seed: int = 0) -> list[CurvePoint]:
    encoded, gold_ids = encode(answers, golds)
    mean, std = subset_curve(encoded, gold_ids, runs, np.random.default_rng(seed))
    exact = exact_curve(encoded, gold_ids)
    return [CurvePoint(k=k + 1, mean=float(mean[k]), std=float(std[k]), exact=float(exact[k]))
            for k in range(encoded.shape[1])]


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    return float(np.mean([p is not None and p == g for p, g in zip(predictions, golds, strict=True)])) if golds else 0.0
