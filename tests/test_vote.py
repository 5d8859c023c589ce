from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from selfconsistency.vote import abstention_rate, counted_vote, majority_vote, path_weights


def test_plain_majority():
    assert majority_vote(["3", "5", "3", None], np.random.default_rng(0)) == "3"


def test_abstentions_do_not_vote():
    # two abstentions do not outvote one real answer
    assert majority_vote([None, None, "7"], np.random.default_rng(0)) == "7"


def test_all_abstain_gives_none():
    assert majority_vote([None, None], np.random.default_rng(0)) is None
    assert majority_vote([], np.random.default_rng(0)) is None


def test_ties_are_uniform_and_seeded():
    rng = np.random.default_rng(123)
    picks = Counter(majority_vote(["1", "2", "3", "1", "2", "3"], rng) for _ in range(3000))
    assert set(picks) == {"1", "2", "3"}
    assert all(850 < n < 1150 for n in picks.values()), picks
    again = [majority_vote(["a", "b"], np.random.default_rng(s)) for s in range(20)]
    assert again == [majority_vote(["b", "a"], np.random.default_rng(s)) for s in range(20)]


def test_abstention_rate():
    assert abstention_rate(["1", None, None, "2"]) == 0.5


def test_path_weights():
    import pytest

    from selfconsistency.vote import path_weights

    assert list(path_weights("majority", [None, None], [3, 4])) == [1.0, 1.0]
    logprob = path_weights("logprob", [-2.0, -8.0], [4, 4])
    assert np.allclose(logprob, np.exp([-0.5, -2.0]))
    sharp = path_weights("cisc:0.1", [-2.0, -8.0], [4, 4])
    assert sharp[0] / sharp[1] > logprob[0] / logprob[1]  # a lower temperature sharpens the preference
    with pytest.raises(ValueError, match="log-probabilities"):
        path_weights("logprob", [None], [3])
    with pytest.raises(ValueError, match="unknown vote"):
        path_weights("loudest", [-1.0], [3])


def test_weighted_subset_curve_follows_weights():
    from selfconsistency.analysis import encode, subset_curve

    # one heavy wrong path against two light right ones: at k=3 weighting flips the result
    encoded, gold_ids = encode([["right", "right", "wrong"]], ["right"])
    majority, _ = subset_curve(encoded, gold_ids, 10, np.random.default_rng(0))
    weighted, _ = subset_curve(encoded, gold_ids, 10, np.random.default_rng(0), np.array([[0.1, 0.1, 1.0]]))
    assert majority[2] == 1.0 and weighted[2] == 0.0


def test_path_weights_of_a_matrix_are_each_rows_weights():
    rng = np.random.default_rng(0)
    sums, lengths = -rng.random((20, 6)) * 80, rng.integers(0, 90, (20, 6))
    for method in ("majority", "logprob", "cisc:0.5"):
        rows = np.array([path_weights(method, list(s), list(n)) for s, n in zip(sums, lengths, strict=True)])
        assert np.array_equal(path_weights(method, sums, lengths), rows), method


def reference_majority(answers, rng):
    """The majority vote as first written (max count, leaders sorted, one draw when they tie): what the
    shared counting must still give."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    leaders = sorted(answer for answer, count in counts.items() if count == top)
    return leaders[int(rng.integers(len(leaders)))] if len(leaders) > 1 else leaders[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["7", "12", "a", "b", "10"])), max_size=12),
       st.integers(0, 2**32 - 1))
def test_counted_vote_is_the_majority_vote_with_its_counts(answers, seed):
    """The per-question view's one count: the same winner as majority_vote (the same tie draw from the same
    generator, and the generator left in the same state), counts most frequent first, then by answer."""
    mine, theirs, reference = (np.random.default_rng(seed) for _ in range(3))
    winner, ranked, abstained = counted_vote(answers, mine)
    assert winner == majority_vote(answers, theirs) == reference_majority(answers, reference)
    assert mine.random() == theirs.random() == reference.random()
    counts = Counter(a for a in answers if a is not None)
    assert dict(ranked) == counts and abstained == answers.count(None)
    assert [c for _, c in ranked] == sorted(counts.values(), reverse=True)
    assert all(a < b for (a, c), (b, d) in zip(ranked, ranked[1:], strict=False) if c == d)
