from itertools import combinations

import numpy as np
import pytest

from selfconsistency.analysis import accuracy_curve, encode, exact_curve, exact_majority_accuracy


def brute_force(answers, gold, k):
    """Enumerate every k-subset; a tie among t+1 leaders including gold counts 1/(t+1)."""
    total, count = 0.0, 0
    for subset in combinations(answers, k):
        votes = {}
        for a in subset:
            if a is not None:
                votes[a] = votes.get(a, 0) + 1
        count += 1
        if not votes or gold not in votes:
            continue
        top = max(votes.values())
        if votes[gold] == top:
            total += 1.0 / sum(1 for v in votes.values() if v == top)
    return total / count


def random_case(rng, n):
    pool = ["g", "x", "y", "z", None]
    return [pool[i] for i in rng.integers(0, 5, size=n)]


@pytest.mark.parametrize("seed", range(40))
def test_exact_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    answers = random_case(rng, int(rng.integers(1, 10)))
    encoded, gold_ids = encode([answers], ["g"])
    exact = exact_curve(encoded, gold_ids)
    for k in range(1, len(answers) + 1):
        assert exact[k - 1] == pytest.approx(brute_force(answers, "g", k), abs=1e-12)


def test_exact_known_values():
    # gold 2 votes, other 2 votes, N=4: k=4 is a tie -> 1/2; k=1 -> 2/4.
    acc = exact_majority_accuracy(2, [2], 0)
    assert acc[0] == pytest.approx(0.5) and acc[3] == pytest.approx(0.5)
    # only abstentions besides gold: gold wins whenever it is drawn at least once
    acc = exact_majority_accuracy(1, [], 3)
    assert acc[1] == pytest.approx(1 - (3 / 4) * (2 / 3))


def test_exact_agrees_with_subset_mean_on_larger_case():
    rng = np.random.default_rng(7)
    golds, answers = [], []
    for _ in range(60):
        p_right = rng.uniform(0.2, 0.8)
        row = [("right" if rng.random() < p_right else str(rng.integers(0, 3))) if rng.random() > 0.1 else None
               for _ in range(16)]
        answers.append(row)
        golds.append("right")
    curve = accuracy_curve(answers, golds, runs=2000, seed=1)
    for point in curve:
        # Monte-Carlo mean within a few standard errors of the exact expectation
        assert abs(point.mean - point.exact) < 4 * point.std / np.sqrt(2000) + 1e-3, point
    assert curve[-1].std == pytest.approx(0.0, abs=0.02)  # k=N: only tie-breaks vary


def test_curve_is_seeded():
    answers = [["1", "2", "1", None], ["3", "3", "4", "4"]]
    a = accuracy_curve(answers, ["1", "4"], runs=50, seed=3)
    b = accuracy_curve(answers, ["1", "4"], runs=50, seed=3)
    assert a == b


def test_gold_never_sampled_is_always_wrong():
    curve = accuracy_curve([["1", "2", None]], ["9"], runs=10, seed=0)
    assert all(p.exact == 0 and p.mean == 0 for p in curve)


def test_ragged_paths_refused():
    with pytest.raises(ValueError):
        encode([["1"], ["1", "2"]], ["1", "1"])
