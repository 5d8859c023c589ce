from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from selfconsistency.vote import decide, path_weights, tie_rank

ONE = {"seed": 0, "question_id": "q", "temperature": 0.7}  # one question of one run


def test_plain_majority():
    assert decide(["3", "5", "3", None], **ONE).answer == "3"


def test_abstentions_do_not_vote():
    # two abstentions do not outvote one real answer
    vote = decide([None, None, "7"], **ONE)
    assert vote.answer == "7" and vote.abstained == 2 and vote.agreement == 1.0


def test_all_abstain_gives_none():
    assert decide([None, None], **ONE) == decide([None, None], **ONE)
    for answers in ([None, None], []):
        vote = decide(answers, **ONE)
        assert vote.answer is None and vote.agreement == 0.0 and vote.tied == 0


def test_agreement_is_the_winners_share_of_the_votes_cast():
    # the case: paths 1, 1, 2 and one without an answer
    vote = decide(["1", "1", "2", None], **ONE)
    assert (vote.answer, vote.agreement, vote.counts, vote.abstained) == ("1", 0.6667, {"1": 2, "2": 1}, 1)
    weighted = decide(["1", "2", None], weights=[1.0, 3.0, 5.0], **ONE)
    assert (weighted.answer, weighted.agreement, weighted.weights) == ("2", 0.75, {"1": 1.0, "2": 3.0})


def test_ties_are_uniform_over_questions_and_seeds():
    picks = Counter(decide(["1", "2", "3", "1", "2", "3"], seed=seed, question_id=f"q{i}", temperature=0.7).answer
                    for seed in range(3) for i in range(1000))
    assert set(picks) == {"1", "2", "3"}
    assert all(850 < n < 1150 for n in picks.values()), picks


def test_a_tie_goes_the_same_way_whatever_the_order_and_whoever_asks():
    for i in range(50):
        ties = {"seed": 7, "question_id": f"q{i}", "temperature": 0.7}
        first = decide(["a", "b", None, "c", "c", "a"], **ties)
        assert first.tie and first.tied == 2 and first.answer in ("a", "c")
        assert decide(["c", None, "a", "a", "c", "b"], **ties) == first
        # the higher tie rank wins, and it does so in every subset where the same answers tie
        assert first.answer == max("ac", key=lambda answer: tie_rank(7, f"q{i}", 0.7, answer))
        assert decide(["a", "c"], **ties).answer == first.answer


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


def reference_vote(answers, ranks):
    """The vote as the issue defines it, written plainly: the most votes win; a tie goes to the highest
    tie rank; agreement is the winner's share of the votes cast."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    top = max(counts.values())
    winner = max((a for a, c in counts.items() if c == top), key=ranks.__getitem__)
    return winner, round(counts[winner] / sum(counts.values()), 4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["7", "12", "a", "b", "10"])), max_size=12),
       st.integers(0, 2**32 - 1), st.permutations(range(12)))
def test_decide_is_the_plain_vote_in_any_order(answers, seed, order):
    ranks = {a: tie_rank(seed, "q", 0.5, a) for a in set(answers) if a is not None}
    vote = decide(answers, seed=seed, question_id="q", temperature=0.5)
    assert (vote.answer, vote.agreement) == reference_vote(answers, ranks)
    shuffled = [answers[i] for i in order if i < len(answers)]
    assert decide(shuffled, seed=seed, question_id="q", temperature=0.5) == vote
    counts = Counter(a for a in answers if a is not None)
    assert vote.counts == counts and vote.abstained == answers.count(None)
    assert [c for c in vote.counts.values()] == sorted(counts.values(), reverse=True)
    ranked = list(vote.counts.items())
    assert all(a < b for (a, c), (b, d) in zip(ranked, ranked[1:], strict=False) if c == d)
