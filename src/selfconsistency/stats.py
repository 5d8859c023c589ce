"""How sure a number is, and whether a difference is real. Pure numpy: randomness only from the seed given.

- pass@k, Chen et al. 2021's unbiased estimator: per question with c of n paths right,
  1 - C(n - c, k) / C(n, k), exact (no sampling).
- A 95 % interval for an accuracy over the questions: a percentile bootstrap over questions (the benchmark
  is itself a sample of questions), BOOTSTRAP resamples drawn from a fixed seed, the same resamples for
  every number of a run so that intervals of one run are comparable. This is not the "± std over
  subsets", which is the spread over which paths a question happened to get.
- A paired comparison of two per-question scores on the same questions: the mean difference, its 95 %
  paired-bootstrap interval (the same resamples), and a two-sided p-value from a paired permutation test
  (each question's difference keeps or flips its sign at random, PERMUTATIONS times, with the observed
  difference counted among them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP = 2000
PERMUTATIONS = 10_000
SEED = 20_221_013  # any fixed seed: intervals are then the same every time a run is reported


def pass_at_k(correct: np.ndarray, n: int) -> np.ndarray:
    """(questions x n): each question's pass@k for k = 1..n, from its count of right paths among n."""
    correct = np.asarray(correct)
    k = np.arange(1, n + 1)
    # C(n - c, k) / C(n, k) = prod_{i < k} (n - c - i) / (n - i): the chance that k paths drawn without
    # replacement are all wrong, as a running product (no large binomials)
    factors = np.clip((n - correct[:, None] - (k - 1)[None, :]) / (n - (k - 1))[None, :], 0.0, None)
    return 1.0 - np.cumprod(factors, axis=1)


def resample_weights(n_questions: int, resamples: int = BOOTSTRAP, seed: int = SEED) -> np.ndarray:
    """(resamples x questions): how often each question is drawn in each bootstrap resample, divided by the
    number of questions, so that `weights @ scores` is each resample's mean."""
    rng = np.random.default_rng(seed)
    weights = np.empty((resamples, n_questions), dtype=np.float64)
    for row in range(resamples):
        weights[row] = np.bincount(rng.integers(0, n_questions, n_questions), minlength=n_questions)
    # in place: a second matrix of the seed's size (120 MB of fresh pages) cost more than the draws
    return np.divide(weights, max(n_questions, 1), out=weights)


def intervals(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval (LEVEL) of the mean of each column of `scores` (questions x m) over the
    resamples `weights` (resample_weights)."""
    scores = np.asarray(scores, dtype=np.float64)
    means = weights @ scores.reshape(scores.shape[0], -1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low.reshape(scores.shape[1:]), high.reshape(scores.shape[1:])


_SIGNS_OF_A_BYTE = ((np.arange(256)[:, None] >> np.arange(8)) & 1) * 2.0 - 1.0  # 256 x 8: bit set -> +1


def sign_flip_means(differences: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` draws of mean(sign * differences) with each question's sign +1 or -1 at random.

    One random byte signs 8 questions, and the 256 signed sums of each group of 8 are tabled first, so a
    draw costs n / 8 lookups: at the seed's 7,473 questions a sign matrix times the differences took ~0.9 s
    a comparison, and a report makes several."""
    differences = np.asarray(differences, dtype=np.float64)
    groups = -(-len(differences) // 8)
    padded = np.zeros(groups * 8)
    padded[: len(differences)] = differences  # a padding zero adds nothing whatever its sign
    table = padded.reshape(groups, 8) @ _SIGNS_OF_A_BYTE.T  # groups x 256
    means = np.empty(count)
    rows = np.arange(groups)
    for start in range(0, count, 1000):  # blocks keep the drawn bytes small at the seed's scale
        size = min(1000, count - start)
        means[start: start + size] = table[rows, rng.integers(0, 256, (size, groups), dtype=np.uint8)].sum(axis=1)
    return means / max(len(differences), 1)


@dataclass(frozen=True)
class Paired:
    """A vs B on the same questions: mean(A) - mean(B), its interval, and the permutation test's p-value."""

    questions: int
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    method: str = (f"paired bootstrap over questions ({BOOTSTRAP:,} resamples) for the {LEVEL:.0%} interval; "
                   f"paired permutation test ({PERMUTATIONS:,} sign flips) for the two-sided p-value")

    def to_json(self) -> dict[str, float | int | str]:
        return asdict(self)


def paired(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None, seed: int = SEED) -> Paired:
    """Compare per-question scores `a` and `b` (each in [0, 1], the same questions in the same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired scores: one of each per question, the same questions")
    n = len(a)
    if n == 0:
        return Paired(0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    differences = a - b
    observed = float(differences.mean())
    weights = resample_weights(n, seed=seed) if weights is None else weights
    low, high = intervals(differences[:, None], weights)
    flipped = sign_flip_means(differences, np.random.default_rng(seed + 1), PERMUTATIONS)
    extreme = np.count_nonzero(np.abs(flipped) >= abs(observed) - 1e-12)
    return Paired(n, float(a.mean()), float(b.mean()), observed, float(low[0]), float(high[0]),
                  (extreme + 1) / (PERMUTATIONS + 1))
