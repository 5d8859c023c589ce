"""Majority vote over extracted answers. Pure: the only randomness is the generator passed in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def majority_vote(answers: Sequence[str | None], rng: np.random.Generator) -> str | None:
    """The most frequent answer; ties broken uniformly at random; `None` answers abstain.

    Returns None when every path abstained (the question then counts as wrong).
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    # Sorted so the draw depends only on the RNG, not on the order the paths arrived in.
    leaders = sorted(answer for answer, count in counts.items() if count == top)
    return leaders[int(rng.integers(len(leaders)))] if len(leaders) > 1 else leaders[0]


def abstention_rate(answers: Sequence[str | None]) -> float:
    return sum(a is None for a in answers) / len(answers) if answers else 0.0
