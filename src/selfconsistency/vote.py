"""A question's vote, defined once: which answer wins, how ties are broken, what agreement means and who
abstains. Every reader of stored paths (`answer`, `serve`, the Python API, report.html, `export
--questions`, the adaptive summary of results, `simulate`) decides a question with `decide`, so the same
paths give the same answer everywhere. Pure: no I/O, no global randomness.

- A path without an answer (None) abstains: it is a path spent, not a vote.
- The winner has the most votes (the largest summed weight, for a weighted vote).
- A tie for the lead is broken by the question's own tie-break order (`tie_rank`): a seeded random
  ranking of its answers, from the run's seed, the question's id and the temperature. It is uniform over
  the tied answers, and the same whichever paths arrived first, whichever other questions were asked,
  and whichever command reads them. With `ties="abstain"` a tie is no answer instead (as some graders
  count it).
- Agreement is the winner's share of the votes that were cast (abstentions left out); by weight, for a
  weighted vote; 0 when no path gave an answer.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

AGREEMENT_DIGITS = 4  # agreement as every output shows it (and as min_agreement is compared with)
WEIGHT_DIGITS = 6


def tie_rank(seed: int, question_id: str, temperature: float, answer: str) -> int:
    """The answer's place in its question's tie-break order (higher wins a tie): a 63-bit hash of the run's
    seed, the question, the temperature and the answer, so a tie goes to each tied answer equally often
    over seeds, and always the same way for the same run."""
    key = f"{seed}\x1f{question_id}\x1f{temperature!r}\x1f{answer}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8, person=b"sc-tie-break").digest(), "big") >> 1


def tie_ranks(seed: int, question_id: str, temperature: float, answers: Iterable[str | None]) -> dict[str, int]:
    """`tie_rank` of each distinct answer given (None abstains and has none)."""
    return {answer: tie_rank(seed, question_id, temperature, answer)
            for answer in dict.fromkeys(answers) if answer is not None}


@dataclass(frozen=True)
class Vote:
    """The outcome of one question's vote over the paths it used.

    `counts`: each answer's votes, most first (equal counts by answer); `weights`: each answer's summed
    weight in the same order, for a weighted vote (else None). `tied`: how many answers shared the lead
    (1: no tie; 0: no path gave an answer)."""

    answer: str | None
    agreement: float
    counts: dict[str, int]
    abstained: int
    tied: int
    weights: dict[str, float] | None = None

    @property
    def tie(self) -> bool:
        return self.tied > 1


TIE_RULES = ("random", "abstain")  # how a tie for the lead counts: broken by the tie order, or no answer


def decide(answers: Sequence[str | None], *, seed: int, question_id: str, temperature: float,
           weights: Sequence[float] | None = None, ties: str = "random") -> Vote:
    """The vote over one question's `answers` (the paths it used; their order does not matter), with each
    path's vote `weights` for a weighted vote (None: one vote each); `ties`: one of TIE_RULES."""
    counts = Counter(answers)
    abstained = counts.pop(None, 0)
    ranked = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    if weights is None:
        totals: dict[str, float] = {answer: float(count) for answer, count in ranked.items()}
    else:
        totals = dict.fromkeys(ranked, 0.0)
        for answer, weight in zip(answers, weights, strict=True):
            if answer is not None:
                totals[answer] += float(weight)
    if not totals:
        return Vote(None, 0.0, ranked, abstained, 0, {} if weights is not None else None)
    top = max(totals.values())
    leaders = [answer for answer, total in totals.items() if total == top]
    if len(leaders) > 1 and ties == "abstain":
        return Vote(None, 0.0, ranked, abstained, len(leaders),
                    None if weights is None else {a: round(t, WEIGHT_DIGITS) for a, t in totals.items()})
    winner = leaders[0] if len(leaders) == 1 else max(
        leaders, key=lambda answer: tie_rank(seed, question_id, temperature, answer))
    return Vote(winner, share(totals, winner), ranked, abstained, len(leaders),
                None if weights is None else {answer: round(total, WEIGHT_DIGITS) for answer, total in totals.items()})


def share(totals: dict[str, float] | dict[str, int], answer: str | None) -> float:
    """`answer`'s share of the votes cast (`totals`: each answer's votes or weight), as agreement is shown."""
    cast = sum(totals.values())
    return round(totals[answer] / cast, AGREEMENT_DIGITS) if answer is not None and cast else 0.0


def path_weights(method: str, logprob_sums: Sequence[float | None], lengths: Sequence[int]) -> np.ndarray:
    """Per-path vote weights.

    majority: 1 each. logprob: the path's length-normalised probability exp(mean token log-prob)
    (Wang et al. 2022, Table 1). cisc:T: confidence-weighted like CISC (Taubenfeld et al. 2025), a softmax
    of the mean log-prob at temperature T; the softmax's normaliser is common to a question's paths, so
    exp(mean / T) ranks answers the same way.
    """
    if method == "majority":
        return np.ones(np.shape(lengths))
    given = np.asarray(logprob_sums)
    if given.dtype == object and any(lp is None for lp in given.ravel()):  # numbers alone make a numeric array
        raise ValueError(f"vote {method!r} needs log-probabilities, and this backend gave none")
    # Also row by row for a (questions x paths) matrix of each: the softmax's max is per question.
    sums, counts = np.asarray(logprob_sums, dtype=float), np.asarray(lengths)
    if sums.shape != counts.shape:
        raise ValueError("one length per log-probability sum")
    mean = sums / np.maximum(counts, 1)
    if method == "logprob":
        return np.exp(mean)
    kind, _, temperature = method.partition(":")
    if kind == "cisc":
        t = float(temperature or 0.5)
        if t <= 0:
            raise ValueError("cisc temperature must be > 0")
        return np.exp((mean - mean.max(axis=-1, keepdims=True, initial=0.0)) / t)
    raise ValueError(f"unknown vote {method!r}; use majority, logprob or cisc:T")
