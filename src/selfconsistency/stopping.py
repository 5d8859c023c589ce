"""Rules that decide when a question has enough paths. Pure: `should_stop(answers_so_far) -> bool`.

Answers arrive in sampling order; `None` is a path without an answer (it counts as a path spent, not as a
vote). Every rule honours a minimum and a maximum number of paths.

- fixed:N          stop at N paths (plain self-consistency).
- beta:T           Adaptive-Consistency (Aggarwal et al. 2023): with a, b votes for the two leading answers,
                   stop when P(p_a > p_b) >= T under a Beta(a+1, b+1) posterior.
- dirichlet:T      the same over every answer seen: P(leader has the largest share) >= T under
                   Dirichlet(counts + 1), estimated with a fixed-seed Monte-Carlo (deterministic).
- esc:W            Early-Stopping SC (Li et al. 2024): sample in windows of W; stop after a window whose W
                   answers are all the same.
- entropy:T        stop when, after at least 4 paths, the normalised entropy of the answers so far is <= T
                   (on fewer paths any agreement would look certain).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .vote import tie_ranks


@dataclass(frozen=True)
class StoppingRule:
    """Base: the min/max bounds every rule shares; subclasses decide in between."""

    min_paths: int = 1
    max_paths: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.min_paths <= self.max_paths:
            raise ValueError(f"need 1 <= min paths ({self.min_paths}) <= max paths ({self.max_paths})")
        threshold = getattr(self, "threshold", None)
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside (0, 1]")
        if getattr(self, "window", 1) < 1 or getattr(self, "n", 1) < 1:
            raise ValueError("window and N must be at least 1")

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        if len(answers) >= self.max_paths:
            return True
        if len(answers) < self.min_paths:
            return False
        return self._decide(answers)

    def _decide(self, answers: Sequence[str | None]) -> bool:
        raise NotImplementedError

    def decides(self, answers: Sequence[str | None]) -> bool:
        """Whether the rule itself (not the maximum) is satisfied by these answers."""
        return len(answers) >= self.min_paths and self._decide(answers)

    @property
    def name(self) -> str:
        raise NotImplementedError


def _counts(answers: Sequence[str | None]) -> list[int]:
    return sorted(Counter(a for a in answers if a is not None).values(), reverse=True)


def beta_leader_probability(leader: int, runner_up: int) -> float:
    """P(X > 1/2) for X ~ Beta(leader+1, runner_up+1), exactly.

    For integer parameters, P(X <= x) = P(Binomial(a+b-1, x) >= a) with a = leader+1, b = runner_up+1,
    so P(X > 1/2) = P(Binomial(leader+runner_up+1, 1/2) <= leader).
    """
    n = leader + runner_up + 1
    return sum(math.comb(n, i) for i in range(leader + 1)) / 2**n


@dataclass(frozen=True)
class FixedN(StoppingRule):
    n: int = 40

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        return len(answers) >= min(self.n, self.max_paths)

    def _decide(self, answers: Sequence[str | None]) -> bool:
        return len(answers) >= self.n

    @property
    def name(self) -> str:
        return f"fixed:{self.n}"


@dataclass(frozen=True)
class BetaRule(StoppingRule):
    threshold: float = 0.95

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers) + [0, 0]
        if counts[0] == 0:
            return False
        return beta_leader_probability(counts[0], counts[1]) >= self.threshold

    @property
    def name(self) -> str:
        return f"beta:{self.threshold:g}"


@dataclass(frozen=True)
class DirichletRule(StoppingRule):
    threshold: float = 0.95
    draws: int = 4000

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers)
        if not counts:
            return False
        return _dirichlet_leader_wins(tuple(counts), self.draws, self.threshold)

    @property
    def name(self) -> str:
        return f"dirichlet:{self.threshold:g}"


@functools.lru_cache(maxsize=1 << 16)  # replays ask about the same counts again and again
def _dirichlet_leader_wins(counts: tuple[int, ...], draws: int, threshold: float) -> bool:
    """Whether the share of `draws` Dirichlet(counts + 1) samples whose largest share is the leader's
    (counts sorted descending) is >= threshold.

    The samples are drawn in chunks and counting stops as soon as the rest cannot change the answer: the
    same draws in the same order as one call of `draws` (numpy's Dirichlet takes its gamma variates row by
    row), so the decision is the one the full sample gives, at a fraction of the draws for most counts.
    """
    if len(counts) == 1:
        counts = counts + (0,)  # an unseen alternative keeps one answer from being certain at once
    # Seeded by the counts alone: the same answers always get the same decision.
    rng = np.random.default_rng([len(counts), *counts])
    alpha = np.array(counts, dtype=float) + 1.0
    needed = _wins_needed(draws, threshold)
    wins = drawn = 0
    while needed > wins >= needed - (draws - drawn):
        # At least as many draws as could settle a "no" (every one a loss for the leader), and 64.
        size = min(max(64, draws - needed + 1 - (drawn - wins)), draws - drawn)
        wins += int(np.count_nonzero(rng.dirichlet(alpha, size=size).argmax(axis=1) == 0))
        drawn += size
    return wins >= needed


@functools.lru_cache(maxsize=64)
def _wins_needed(draws: int, threshold: float) -> int:
    """The fewest leader wins w with w / draws >= threshold, as the share's float division rounds."""
    return next((w for w in range(draws + 1) if w / draws >= threshold), draws + 1)


@dataclass(frozen=True)
class WindowRule(StoppingRule):
    window: int = 5

    def _decide(self, answers: Sequence[str | None]) -> bool:
        if len(answers) % self.window:
            return False
        last = answers[-self.window:]
        return last[0] is not None and all(a == last[0] for a in last)

    @property
    def name(self) -> str:
        return f"esc:{self.window}"


@dataclass(frozen=True)
class EntropyRule(StoppingRule):
    threshold: float = 0.3
    at_least: int = 4

    def _decide(self, answers: Sequence[str | None]) -> bool:
        counts = _counts(answers)
        total = sum(counts)
        if total == 0 or len(answers) < self.at_least:
            return False
        if len(counts) == 1:
            return True  # zero entropy
        probabilities = np.array(counts) / total
        entropy = float(-(probabilities * np.log(probabilities)).sum())
        return entropy / math.log(len(answers)) <= self.threshold

    @property
    def name(self) -> str:
        return f"entropy:{self.threshold:g}"


RuleFactory = Callable[[str, int, int], StoppingRule]  # (value after the colon, min paths, max paths)
RULES: dict[str, RuleFactory] = {
    "fixed": lambda value, lo, hi: FixedN(min_paths=lo, max_paths=hi, n=int(value or hi)),
    "beta": lambda value, lo, hi: BetaRule(min_paths=lo, max_paths=hi, threshold=float(value or 0.95)),
    "dirichlet": lambda value, lo, hi: DirichletRule(min_paths=lo, max_paths=hi, threshold=float(value or 0.95)),
    "esc": lambda value, lo, hi: WindowRule(min_paths=lo, max_paths=hi, window=int(value or 5)),
    "entropy": lambda value, lo, hi: EntropyRule(min_paths=lo, max_paths=hi, threshold=float(value or 0.3)),
}


def register_rule(kind: str, factory: RuleFactory) -> None:
    """Make `kind:VALUE` a stopping rule everywhere a rule is named (--stop, simulate, the Python API)."""
    RULES[kind] = factory


def parse_rule(text: str, min_paths: int = 1, max_paths: int = 40) -> StoppingRule:
    """`beta:0.95`, `dirichlet:0.95`, `esc:5`, `entropy:0.3`, `fixed:16`, or a registered kind."""
    kind, _, value = text.partition(":")
    if kind not in RULES:
        raise ValueError(f"unknown stopping rule {text!r}; use " + ", ".join(f"{k}:…" for k in RULES))
    try:
        return RULES[kind](value, min_paths, max_paths)
    except ValueError:
        raise ValueError(f"bad value in stopping rule {text!r}") from None


@dataclass(frozen=True)
class ReplayResult:
    rule: str
    accuracy: float  # mean over runs
    accuracy_std: float  # over runs
    mean_paths: float  # paths used per question, mean over runs and questions
    per_question: tuple[float, ...] = ()  # each question's accuracy over the runs (for intervals over questions)


@dataclass(frozen=True)
class TieBreaks:
    """Whose tie-break orders the replayed votes use (`vote.tie_rank`): the run's seed, its questions' ids
    (one per row of answers) and the temperature, so a replayed vote over all of a question's paths is the
    answer every other reader gives it."""

    seed: int
    question_ids: Sequence[str]
    temperature: float
    rule: str = "random"  # vote.TIE_RULES: under "abstain" a tie is no answer

    @classmethod
    def anonymous(cls, questions: int) -> TieBreaks:
        """For answers with no run behind them: questions named by their position."""
        return cls(0, [str(i) for i in range(questions)], 0.0)


def _state_kind(rule: StoppingRule) -> str | None:
    """What a rule's decision depends on besides the number of paths: the multiset of answer counts
    (beta, dirichlet, entropy), the run of equal answers at the end (esc), nothing (fixed)."""
    if type(rule) is FixedN:
        return "length"
    if type(rule) is WindowRule:
        return "trailing"
    if type(rule) in (BetaRule, DirichletRule, EntropyRule):
        return "counts"
    return None


def replay_many(rules: Sequence[StoppingRule], answers: Sequence[Sequence[str | None]], golds: Sequence[str],
                runs: int = 100, seed: int = 0, ties: TieBreaks | None = None) -> list[ReplayResult]:
    """Apply each rule to stored paths taken in `runs` random orders (drawn from `seed`; the same orders for
    every rule), all (run, question) pairs at once; the vote at the stop is the question's vote
    (`vote.decide`), tie-broken by `ties` (default: `TieBreaks.anonymous`).

    Each pair draws its paths one at a time (a Fisher-Yates shuffle taken step by step) and keeps what the
    rules look at: the multiset of answer counts and the run of equal answers at the end. A rule decides
    once per distinct state, by its own `should_stop` on a prefix with that state, so the decisions are
    the rule's; the vote at the stop is `vote.decide`'s (a tie goes to the higher tie rank). Rules of other
    types are replayed path by path.
    """
    from .analysis import encode

    if not golds:
        return [ReplayResult(rule.name, 0.0, 0.0, 0.0) for rule in rules]
    ties = ties or TieBreaks.anonymous(len(golds))
    if len(ties.question_ids) != len(golds):
        raise ValueError("one question id per row of answers")
    encoded, gold_ids = encode(answers, golds)
    order_rng = np.random.default_rng(seed).spawn(2)[0]  # the orders as before tie-breaks were ranked
    fast = [rule for rule in rules if _state_kind(rule) is not None]
    results = dict(zip([id(r) for r in fast],
                       _replay_states(fast, encoded, gold_ids, _label_ranks(answers, golds, ties), runs, order_rng,
                                      ties.rule),
                       strict=True))
    out = []
    for rule in rules:
        out.append(results[id(rule)] if id(rule) in results
                   else _replay_paths(rule, answers, golds, runs, order_rng, ties))
    return out


def _label_ranks(answers: Sequence[Sequence[str | None]], golds: Sequence[str], ties: TieBreaks) -> np.ndarray:
    """ranks[question, label]: the tie rank of each answer by its replay label (1 gold, 2.. the others by
    their `encode` id + 1, as `_replay_states` labels them); -1 where a question has no such answer."""
    rows = []
    for row, gold, qid in zip(answers, golds, ties.question_ids, strict=True):
        ids: dict[str, int] = {}
        for answer in row:
            if answer is not None:
                ids.setdefault(answer, len(ids) + 1)
        ranks = tie_ranks(ties.seed, qid, ties.temperature, ids)
        rows.append({1 if answer == gold else ids[answer] + 1: rank for answer, rank in ranks.items()})
    width = max((max(labels, default=0) for labels in rows), default=0) + 1
    table = np.full((len(rows), max(width, 2)), -1, dtype=np.int64)
    for question, labels in enumerate(rows):
        for label, rank in labels.items():
            table[question, label] = rank
    return table


def _replay_states(rules: list[StoppingRule], encoded: np.ndarray, gold_ids: np.ndarray, ranks: np.ndarray,
                   runs: int, order_rng: np.random.Generator, tie_rule: str = "random") -> list[ReplayResult]:
    if not rules:
        return []
    n_questions, n = encoded.shape
    rows = runs * n_questions
    row = np.arange(rows)
    question = np.tile(np.arange(n_questions), runs)
    label = np.where(encoded == gold_ids[:, None], 1, np.where(encoded > 0, encoded + 1, 0)).ravel()
    width = int(label.max(initial=1)) + 1
    left = np.repeat(np.arange(n, dtype=np.int16 if n < 2**15 else np.int64)[:, None], rows, axis=1)
    left_flat = left.reshape(-1)
    counts = np.zeros(rows * width, dtype=np.int64)
    # Each row's multiset of vote counts as an index into `multisets` (descending tuples), moved along
    # grown[multiset, count that rose by one] -> multiset, a table filled as new multisets appear.
    multisets: list[tuple[int, ...]] = [()]
    grown = np.full((64, n + 1), -1, dtype=np.int64)
    state = np.zeros(rows, dtype=np.int64)
    trailing = np.zeros(rows, dtype=np.int64)
    previous = np.full(rows, -1)
    gold = np.zeros(rows, dtype=np.int64)
    best_other = np.zeros(rows, dtype=np.int64)
    best_rank = np.full(rows, -1, dtype=np.int64)  # the highest tie rank among the other answers at the best count
    gold_rank = ranks[question, 1]
    used = [np.full(rows, n) for _ in rules]
    correct = [np.zeros(rows, dtype=bool) for _ in rules]
    active = [np.ones(rows, dtype=bool) for _ in rules]
    for k in range(n):
        pick = (order_rng.random(rows) * (n - k)).astype(np.intp) + k
        cell = pick * rows + row
        path = left_flat[cell]
        left_flat[cell] = left[k]
        drawn = label[question * n + path]
        slot = row * width + drawn
        before = counts[slot]
        counts[slot] = before + 1
        voted = drawn > 0
        grown = _grow_multisets(state, voted, before, multisets, grown)
        trailing = np.where(voted & (drawn == previous), trailing + 1, voted.astype(np.int64))
        previous = drawn
        gold += drawn == 1
        other = np.where(drawn > 1, before + 1, -1)
        drawn_rank = ranks[question, drawn]
        best_rank = np.where(other > best_other, drawn_rank,
                             np.where(other == best_other, np.maximum(best_rank, drawn_rank), best_rank))
        np.maximum(best_other, other, out=best_other)
        length = k + 1
        for i, rule in enumerate(rules):
            rows_left = np.flatnonzero(active[i])
            if rows_left.size == 0:
                continue
            kind = _state_kind(rule)
            if length == n:
                stop = np.ones(rows_left.size, dtype=bool)
            elif kind == "length":
                stop = np.full(rows_left.size, rule.should_stop([None] * length))
            elif kind == "trailing":
                runs_at_end = np.minimum(trailing[rows_left], length)
                table = np.array([rule.should_stop([None] * (length - r) + ["a"] * r) for r in range(length + 1)])
                stop = table[runs_at_end]
            else:
                which = state[rows_left]
                present = np.zeros(len(multisets), dtype=bool)
                present[which] = True
                table = np.zeros(len(multisets), dtype=bool)
                for m in np.flatnonzero(present).tolist():  # only the multisets some undecided row has
                    table[m] = rule.should_stop(_prefix_with_counts(multisets[m], length))
                stop = table[which]
            stopped = rows_left[stop]
            if stopped.size:
                used[i][stopped] = length
                wins = gold[stopped] > best_other[stopped]
                tie = (gold[stopped] == best_other[stopped]) & (gold[stopped] > 0)
                if tie_rule == "random":  # under "abstain" a tie is no answer: gold wins only alone
                    wins |= tie & (gold_rank[stopped] > best_rank[stopped])
                correct[i][stopped] = wins
                active[i][stopped] = False
    results = []
    for i, rule in enumerate(rules):
        accuracy = correct[i].reshape(runs, n_questions).mean(axis=1)
        mean_paths = used[i].reshape(runs, n_questions).mean(axis=1)
        per_question = correct[i].reshape(runs, n_questions).mean(axis=0)
        results.append(ReplayResult(rule.name, float(accuracy.mean()), float(accuracy.std()), float(mean_paths.mean()),
                                    tuple(per_question.tolist())))
    return results


def _grow_multisets(state: np.ndarray, voted: np.ndarray, before: np.ndarray, multisets: list[tuple[int, ...]],
                    grown: np.ndarray) -> np.ndarray:
    """Move each voting row's multiset (`state`, in place) to the one where a count of `before` became
    before + 1; new multisets are appended to `multisets` and the table returned (grown when full)."""
    voters = np.flatnonzero(voted)
    key = state[voters] * grown.shape[1] + before[voters]
    moved = grown.ravel()[key]
    unknown = moved < 0
    if unknown.any():
        index = {multiset: m for m, multiset in enumerate(multisets)}
        for new_key in np.unique(key[unknown]).tolist():
            m, count = divmod(new_key, grown.shape[1])
            counts = list(multisets[m])
            if count:
                counts[counts.index(count)] += 1
            else:
                counts.append(1)
            multiset = tuple(sorted(counts, reverse=True))
            if multiset not in index:
                index[multiset] = len(multisets)
                multisets.append(multiset)
            grown[m, count] = index[multiset]
        if len(multisets) > len(grown):
            grown = np.vstack([grown, np.full((max(len(multisets), 2 * len(grown)) - len(grown), grown.shape[1]), -1,
                                              dtype=grown.dtype)])
        moved = grown.ravel()[key]
    state[voters] = moved
    return grown


def _prefix_with_counts(counts: tuple[int, ...], length: int) -> list[str | None]:
    """Some answers with these vote counts, padded with abstentions to `length`."""
    prefix: list[str | None] = []
    for answer, count in enumerate(counts):
        prefix += [f"a{answer}"] * count
    return prefix + [None] * (length - len(prefix))


def _replay_paths(rule: StoppingRule, answers: Sequence[Sequence[str | None]], golds: Sequence[str], runs: int,
                  rng: np.random.Generator, ties: TieBreaks) -> ReplayResult:
    """A rule of a type replay_many does not know: path by path."""
    from .vote import decide

    correct = np.zeros((runs, len(golds)))
    used = np.zeros(runs)
    for run in range(runs):
        spent = 0
        for q, (row, gold, qid) in enumerate(zip(answers, golds, ties.question_ids, strict=True)):
            order = [row[i] for i in rng.permutation(len(row))]
            k = next((k for k in range(1, len(order) + 1) if rule.should_stop(order[:k])), len(order))
            correct[run, q] = decide(order[:k], seed=ties.seed, question_id=qid, temperature=ties.temperature,
                                     ties=ties.rule).answer == gold
            spent += k
        used[run] = spent / len(golds)
    accuracy = correct.mean(axis=1)
    return ReplayResult(rule.name, float(accuracy.mean()), float(accuracy.std()), float(used.mean()),
                        tuple(correct.mean(axis=0).tolist()))
