"""The weighted vote at N (results.weighted_right, for the paired weighted-vs-majority comparison) against a
plain per-question reading of its definition."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from selfconsistency.results import weighted_right


def one_question(row, weights, gold):
    totals = {}
    for answer, weight in zip(row, weights, strict=True):
        if answer > 0:
            totals[answer] = totals.get(answer, 0.0) + weight
    if gold not in totals:
        return 0.0
    leaders = [a for a, total in totals.items() if total == max(totals.values())]
    return 1.0 / len(leaders) if gold in leaders else 0.0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8).flatmap(lambda width: st.lists(
    st.tuples(st.lists(st.integers(0, width), min_size=width, max_size=width),
              st.lists(st.sampled_from([0.1, 0.25, 0.5, 1.0, 0.3]), min_size=width, max_size=width),
              st.integers(-1, width)), min_size=1, max_size=12)))
def test_the_weighted_vote_of_every_question_is_its_definition(questions):
    encoded = np.array([row for row, _, _ in questions])
    weights = np.array([w for _, w, _ in questions])
    golds = np.array([gold for _, _, gold in questions])
    expected = [one_question(row, w, gold) for row, w, gold in questions]
    assert weighted_right(encoded, weights, golds).tolist() == expected
