from collections import Counter

import numpy as np

from selfconsistency.vote import abstention_rate, majority_vote


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
