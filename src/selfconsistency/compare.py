"""Two runs over the same questions, compared question by question (`selfconsistency compare RUN_A RUN_B`):
two models, two prompts, two temperatures. For each shared setting, the mean difference of the per-question
scores, its 95 % paired-bootstrap interval and a paired permutation test's p-value (stats.py).

Only the questions both runs completed and labelled alike are compared; a question whose gold differs
between the runs is refused, since then the runs did not ask the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analysis import encode, exact_curves
from .results import sampled_answers
from .stats import Paired, paired, resample_weights
from .store import SampleStore


@dataclass(frozen=True)
class RunScores:
    """One run's per-question scores: greedy right or wrong, and the exact maj@k of its sampled paths."""

    name: str
    temperature: float | None
    golds: dict[str, str]
    greedy: dict[str, float]
    majority: dict[str, np.ndarray]  # question id -> exact maj@k for k = 1..N
    ties: str = "random"  # the run's tie rule (--ties), which its maj@k follows


def run_scores(run_dir: Path, temperature: float | None = None) -> RunScores:
    with SampleStore.open_readonly(run_dir) as store:
        settings = store.settings()
        rule = settings.experiment.ties
        temperatures = settings.sampling.temperatures
        temperature = temperatures[0] if temperature is None and temperatures else temperature
        majority: dict[str, np.ndarray] = {}
        golds: dict[str, str] = {}
        if temperature is not None:
            answers, gold_list, _, ties = sampled_answers(store, temperature)
            if answers:
                curves = exact_curves(*encode(answers, gold_list), rule)
                majority = dict(zip(ties.question_ids, curves, strict=True))
                golds.update(zip(ties.question_ids, gold_list, strict=True))
        greedy: dict[str, float] = {}
        if settings.sampling.greedy:
            questions = {q.id: q.gold for q in store.questions()}
            for path in store.paths(text=False):
                if path.temperature == 0.0 and path.path_index == 0 and questions.get(path.question_id) is not None:
                    gold = questions[path.question_id]
                    greedy[path.question_id] = float(path.answer is not None and path.answer == gold)
                    golds.setdefault(path.question_id, gold)
    return RunScores(str(run_dir), temperature, golds, greedy, majority, rule)


@dataclass(frozen=True)
class Comparison:
    setting: str
    result: Paired


def compare(a: RunScores, b: RunScores) -> list[Comparison]:
    """Greedy against greedy and SC@k against SC@k (k the smaller N), on the questions both have."""
    shared = sorted(a.golds.keys() & b.golds.keys())
    differing = [qid for qid in shared if a.golds[qid] != b.golds[qid]]
    if differing:
        raise ValueError(f"question {differing[0]!r} has gold {a.golds[differing[0]]!r} in {a.name} and "
                         f"{b.golds[differing[0]]!r} in {b.name}: the runs did not ask the same questions")
    if a.ties != b.ties and a.majority and b.majority:
        raise ValueError(f"{a.name} counts a tie as --ties {a.ties} and {b.name} as --ties {b.ties}: their SC@k "
                         "would differ by the rule, not the runs; compare runs made with the same --ties")
    out = []
    both = [qid for qid in shared if qid in a.greedy and qid in b.greedy]
    if both:
        weights = resample_weights(len(both))
        out.append(Comparison("greedy", paired(np.array([a.greedy[q] for q in both]),
                                               np.array([b.greedy[q] for q in both]), weights)))
    both = [qid for qid in shared if qid in a.majority and qid in b.majority]
    if both:
        k = min(len(a.majority[both[0]]), len(b.majority[both[0]]))
        weights = resample_weights(len(both))
        out.append(Comparison(f"SC@{k} (T={a.temperature:g} vs T={b.temperature:g})",
                              paired(np.array([a.majority[q][k - 1] for q in both]),
                                     np.array([b.majority[q][k - 1] for q in both]), weights)))
    if not out:
        raise ValueError(f"{a.name} and {b.name} share no complete, labelled question")
    return out


def comparison_markdown(a: RunScores, b: RunScores, comparisons: list[Comparison]) -> str:
    rows = [f"A = {a.name}, B = {b.name}", "",
            "| setting | questions | A | B | A - B | 95% interval | p |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in comparisons:
        r = c.result
        rows.append(f"| {c.setting} | {r.questions} | {r.a:.1%} | {r.b:.1%} | {r.difference * 100:+.1f} pt | "
                    f"{r.low * 100:+.1f} to {r.high * 100:+.1f} pt | {r.p_value:.3g} |")
    return "\n".join(rows + ["", f"Paired on the same questions: {comparisons[0].result.method}."])
