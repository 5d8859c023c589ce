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


# --- the fast implementation against the one it replaced (tests/analysis_reference.py) ---------------------

from analysis_reference import (  # noqa: E402
    reference_encode,
    reference_exact_curve,
    reference_exact_majority_accuracy,
    reference_subset_curve,
)
from selfconsistency.analysis import subset_curve  # noqa: E402


def synthetic_answers(rng, questions, paths, gold_share, abstain_share, others):
    """Answers like a real run's: gold, abstentions and a few other answers; some questions never get gold."""
    answers = []
    for _ in range(questions):
        share = rng.uniform(0, gold_share)
        row = []
        for u in rng.random(paths):
            if u < share:
                row.append("gold")
            elif u < share + abstain_share:
                row.append(None)
            else:
                row.append(f"a{rng.integers(0, others)}")
        answers.append(row)
    return answers, ["gold"] * questions


SHAPES = [  # (questions, paths, gold share, abstain share, other answers)
    (50, 1, 0.6, 0.1, 2), (80, 2, 0.6, 0.2, 2), (200, 5, 0.5, 0.3, 3), (300, 8, 0.4, 0.05, 2),
    (150, 16, 0.8, 0.1, 8), (400, 30, 1.0, 0.05, 8), (60, 40, 0.5, 0.5, 12),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_curve_is_bit_identical_to_the_reference(shape):
    rng = np.random.default_rng(sum(shape[:2]))
    answers, golds = synthetic_answers(rng, *shape)
    answers[0] = [None] * shape[1]  # a question where every path abstained
    answers[1] = ["x"] * shape[1]  # gold never sampled
    encoded, gold_ids = encode(answers, golds)
    reference = reference_encode(answers, golds)
    assert np.array_equal(encoded, reference[0]) and np.array_equal(gold_ids, reference[1])
    assert np.array_equal(exact_curve(encoded, gold_ids), reference_exact_curve(encoded, gold_ids))


def test_exact_majority_accuracy_is_bit_identical_for_every_small_signature():
    for n in range(1, 13):
        for gold in range(1, n + 1):
            rng = np.random.default_rng(n * 100 + gold)
            for _ in range(6):
                rest = n - gold
                cuts = np.sort(rng.integers(0, rest + 1, size=int(rng.integers(0, 5))))
                parts = np.diff(np.concatenate([[0], cuts, [rest]]))
                others, abstentions = [int(p) for p in parts[1:] if p > 0], int(parts[0])
                expected = reference_exact_majority_accuracy(gold, sorted(others), abstentions)
                assert np.array_equal(exact_majority_accuracy(gold, others, abstentions), expected), \
                    (gold, others, abstentions)


def test_exact_curve_when_no_question_has_gold():
    encoded, gold_ids = encode([["a", None], [None, None]], ["g", "g"])
    assert np.array_equal(exact_curve(encoded, gold_ids), reference_exact_curve(encoded, gold_ids))


def assert_same_distribution(new, reference, runs):
    """Means within 5 standard errors of each other; run-to-run spreads within what 5 standard errors of a
    standard deviation allow."""
    (mean, std), (ref_mean, ref_std) = new, reference
    tolerance = 5 * np.sqrt((std**2 + ref_std**2) / runs) + 1e-9
    assert (np.abs(mean - ref_mean) <= tolerance).all(), (mean, ref_mean, tolerance)
    spread = 5 * np.maximum(std, ref_std) / np.sqrt(2 * runs) + 2e-3
    assert (np.abs(std - ref_std) <= spread).all(), (std, ref_std, spread)


@pytest.mark.parametrize("shape", [(120, 4, 0.6, 0.2, 2), (100, 9, 0.5, 0.1, 4), (60, 20, 0.6, 0.05, 6)])
def test_subset_curve_matches_the_reference_in_distribution(shape):
    rng = np.random.default_rng(shape[1])
    answers, golds = synthetic_answers(rng, *shape)
    answers[0] = [None] * shape[1]
    encoded, gold_ids = encode(answers, golds)
    runs = 600
    new = subset_curve(encoded, gold_ids, runs, np.random.default_rng(1))
    reference = reference_subset_curve(encoded, gold_ids, runs, np.random.default_rng(2))
    assert_same_distribution(new, reference, runs)
    exact = exact_curve(encoded, gold_ids)
    assert (np.abs(new[0] - exact) <= 5 * new[1] / np.sqrt(runs) + 1e-9).all()


@pytest.mark.parametrize("kind", ["continuous", "tied"])
def test_weighted_subset_curve_matches_the_reference_in_distribution(kind):
    rng = np.random.default_rng(5)
    answers, golds = synthetic_answers(rng, 80, 10, 0.6, 0.1, 3)
    encoded, gold_ids = encode(answers, golds)
    # Tied: weights from three values, so weighted totals tie as often as counts do.
    weights = rng.random(encoded.shape) if kind == "continuous" else rng.integers(1, 4, encoded.shape) / 2
    runs = 600
    new = subset_curve(encoded, gold_ids, runs, np.random.default_rng(1), weights)
    reference = reference_subset_curve(encoded, gold_ids, runs, np.random.default_rng(2), weights)
    assert_same_distribution(new, reference, runs)


def test_equal_weights_give_the_majority_curve_exactly():
    rng = np.random.default_rng(9)
    answers, golds = synthetic_answers(rng, 70, 12, 0.5, 0.1, 3)
    encoded, gold_ids = encode(answers, golds)
    majority = subset_curve(encoded, gold_ids, 50, np.random.default_rng(4))
    weighted = subset_curve(encoded, gold_ids, 50, np.random.default_rng(4), np.full(encoded.shape, 0.25))
    assert np.array_equal(majority[0], weighted[0]) and np.array_equal(majority[1], weighted[1])


def test_a_tiny_weight_still_votes():
    # One path says gold with weight 0 (an underflowed confidence), the other abstains: gold must still win.
    encoded, gold_ids = encode([["g", None]], ["g"])
    mean, _ = subset_curve(encoded, gold_ids, 200, np.random.default_rng(0), np.array([[0.0, 1.0]]))
    assert mean[1] == 1.0


def test_negative_weights_refused():
    encoded, gold_ids = encode([["g", "x"]], ["g"])
    with pytest.raises(ValueError, match="weights"):
        subset_curve(encoded, gold_ids, 5, np.random.default_rng(0), np.array([[-1.0, 1.0]]))


def test_votes_simulated_together_equal_each_vote_alone():
    """The report simulates the majority and weighted votes of every temperature over one set of path
    orders (blocks of questions included: 1,500 questions x 60 runs is two blocks); each curve must be
    bit for bit the one `subset_curve` gives that vote alone."""
    from selfconsistency.analysis import subset_curves

    rng = np.random.default_rng(12)
    votes = []
    for others in (2, 6):  # two temperatures' answers: different labels, same shape
        answers, golds = synthetic_answers(rng, 1500, 9, 0.6, 0.1, others)
        encoded, gold_ids = encode(answers, golds)
        weights = rng.uniform(0.0, 1.0, encoded.shape).round(1)  # rounded: exact weighted ties happen
        votes += [(encoded, gold_ids, None), (encoded, gold_ids, weights)]
    together = subset_curves((1500, 9), [(*vote, np.random.default_rng(7)) for vote in votes], runs=60)
    for vote, (mean, std) in zip(votes, together, strict=True):
        alone_mean, alone_std = subset_curve(vote[0], vote[1], 60, np.random.default_rng(7), vote[2])
        assert np.array_equal(mean, alone_mean) and np.array_equal(std, alone_std)
    assert not np.array_equal(together[0][0], together[2][0])  # the two temperatures did differ


@pytest.mark.parametrize(("n", "labels", "weighted"), [(9, 5, False), (9, 5, True), (30, 31, False),
                                                       (130, 4, False), (12, 3, True)])
def test_vote_steps_equal_a_draw_by_draw_count(n, labels, weighted):
    """The vectorised vote over all steps (packed counts, or per-label running sums when the counts do not
    fit one 64-bit word: 31 answers x 5 bits; 16-bit totals past 127 paths) against plain running totals."""
    from selfconsistency.analysis import _vote_steps

    rng = np.random.default_rng(n + labels)
    drawn = rng.integers(0, labels, (n, 40)).astype(np.int8)
    weights = rng.uniform(0.1, 1.0, drawn.shape).round(1) if weighted else None  # rounded: weighted ties
    wins, tie = np.empty(drawn.shape, dtype=bool), np.empty(drawn.shape, dtype=bool)
    tied = np.empty(drawn.shape, dtype=np.int16)
    _vote_steps(drawn, weights, wins, tie, tied)
    for row in range(drawn.shape[1]):
        totals: dict[int, float] = {}
        for k in range(n):
            label = int(drawn[k, row])
            totals[label] = totals.get(label, 0) + (1 if weights is None else weights[k, row])
            gold = totals.get(1, 0)
            others = [total for answer, total in totals.items() if answer > 1]
            best = max(others, default=0)
            assert wins[k, row] == (gold > best)
            assert tie[k, row] == (gold == best and gold > 0)
            if tie[k, row]:
                assert tied[k, row] == others.count(best)
