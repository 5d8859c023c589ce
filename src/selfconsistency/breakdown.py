"""Parts of the results for some tasks only: accuracy per group of questions (a record field the task names,
e.g. MATH's subject and level) and what grouping equivalent answers into classes changed. Pure: numbers
from numbers, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .analysis import accuracy, exact_curve
from .vote import decide


def by_group(fields: Sequence[str], groups: Sequence[dict[str, str] | None], greedy: Sequence[str | None] | None,
             golds: Sequence[str], sampled: Sequence[tuple[float, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """For each field, each of its values (in sorted order): how many labelled questions have it, the greedy
    accuracy and each sampled setting's exact accuracy of the vote over all N paths (`sampled`: temperature,
    encoded answers, gold ids, as analysis.encode gives them; rows in the order of `groups` and `golds`)."""
    out: dict[str, Any] = {}
    for name in fields:
        values = [(group or {}).get(name) for group in groups]
        rows = []
        for value in sorted({v for v in values if v is not None}, key=_natural):
            mask = np.array([v == value for v in values], dtype=bool)
            picked = np.flatnonzero(mask)
            rows.append({
                "value": value, "questions": int(mask.sum()),
                "greedy": None if greedy is None else accuracy([greedy[i] for i in picked], [golds[i] for i in picked]),
                "sampled": [{"temperature": temperature, "paths": int(encoded.shape[1]),
                             "accuracy": float(exact_curve(encoded[mask], gold_ids[mask])[-1])
                             if encoded.shape[1] else 0.0}
                            for temperature, encoded, gold_ids in sampled]})
        out[name] = rows
    return out


def _natural(value: str) -> tuple[int, float | str]:
    """Numbers (levels 1..5) in numeric order, before words in alphabetical order."""
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def equivalence_effect(classes: Sequence[Sequence[str | None]], written: Sequence[Sequence[str | None]],
                       golds: Sequence[str | None], qids: Sequence[str], seed: int, temperature: float
                       ) -> dict[str, Any]:
    """What the answer classes changed in each question's vote over its N paths: the questions whose paths
    wrote one class in two or more ways (`merged_questions`), those whose winner differs from the vote over
    written forms as strings (`winners_changed`), and the accuracy of that string vote (a written winner is
    right when its class is the gold's; `accuracy_as_strings`, over the labelled questions) beside the class
    vote's accuracy decided the same way (`accuracy_by_classes`: one seeded tie-break per question, not the
    exact curve's expectation over ties, so the two differ only where the winners do)."""
    merged = changed = right = right_by_class = labelled = 0
    for row_classes, row_written, gold, qid in zip(classes, written, golds, qids, strict=True):
        class_of = {form: key for form, key in zip(row_written, row_classes, strict=True) if form is not None}
        merged += len(set(class_of)) > len(set(class_of.values()))
        by_class = decide(row_classes, seed=seed, question_id=qid, temperature=temperature).answer
        by_string = decide(row_written, seed=seed, question_id=qid, temperature=temperature).answer
        string_class = class_of.get(by_string) if by_string is not None else None
        changed += string_class != by_class
        if gold is not None:
            labelled += 1
            right += string_class is not None and string_class == gold
            right_by_class += by_class is not None and by_class == gold
    return {"merged_questions": merged, "winners_changed": changed,
            "accuracy_as_strings": right / labelled if labelled else None,
            "accuracy_by_classes": right_by_class / labelled if labelled else None}
