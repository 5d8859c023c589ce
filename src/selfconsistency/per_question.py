"""Each selected question as one record: its text, gold, greedy answer, the vote at each sampling
temperature and every path. Read from the store alone; `export --questions` and report.html use it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .stopping import parse_rule
from .store import SampleStore, StoredPath
from .vote import majority_vote


def _correct(answer: str | None, gold: str | None) -> bool | None:
    """Whether an answer is the gold; None for an unlabelled question (nothing to score)."""
    return None if gold is None else answer is not None and answer == gold


def paths_used(config: dict[str, Any], stops: dict[tuple[str, float], tuple[int, int, str]], qid: str,
               temperature: float, stored: int) -> tuple[int, str, bool]:
    """How many of a question's stored paths (in index order) its vote uses at one temperature, why
    (the stop reason, "undecided", or "fixed N"), and whether it has all it needs."""
    if config.get("stop"):
        used, _, reason = stops.get((qid, temperature), (stored, stored, "undecided"))
        return used, reason, reason != "undecided"
    return min(stored, config["paths"]), "fixed N", stored >= config["paths"]


def _vote(used: list[StoredPath], gold: str | None, rng: np.random.Generator) -> dict[str, Any]:
    """The majority vote over the paths a question used: each answer's count, most frequent first."""
    answers = [p.answer for p in used]
    counts = Counter(a for a in answers if a is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    winner = majority_vote(answers, rng)
    top = ranked[0][1] if ranked else 0
    return {"answer": winner, "counts": dict(ranked), "abstained": answers.count(None),
            # share of the used paths (abstentions included) that gave the winning answer
            "agreement": round(top / len(answers), 4) if answers else None,
            "tie": sum(count == top for _, count in ranked) > 1,
            "correct": _correct(winner, gold)}


def _path(p: StoredPath) -> dict[str, Any]:
    return {"temperature": p.temperature, "index": p.path_index, "answer": p.answer, "text": p.text,
            "logprob": p.logprob_sum, "completion_tokens": p.completion_tokens,
            "finish_reason": p.finish_reason}


def question_records(run_dir: Path) -> Iterator[dict[str, Any]]:
    """One record per selected question, in the selection's order; questions still missing paths are
    included with `complete` false (the report's accuracy leaves them out)."""
    with SampleStore.open_readonly(run_dir) as store:
        config = store.settings().stored_settings()
        selection = store.get_meta("selection") or []
        questions = {q.id: q for q in store.questions()}
        stops = store.stops(parse_rule(config["stop"], config["min_paths"], config["paths"]).name) \
            if config.get("stop") else {}
        by_question: dict[str, list[StoredPath]] = defaultdict(list)
        for path in store.paths():
            by_question[path.question_id].append(path)
    rng = np.random.default_rng(config["seed"])  # tie-breaks, as the report's votes
    for qid in selection:
        question = questions[qid]
        paths = by_question.pop(qid, [])
        greedy = next((p for p in paths if p.temperature == 0.0), None)
        votes, complete = [], greedy is not None or not config["greedy"]
        for temperature in config["temperatures"]:
            stored = [p for p in paths if p.temperature == temperature]  # in path-index order
            used, reason, has_all = paths_used(config, stops, qid, temperature, len(stored))
            complete = complete and has_all
            votes.append({"temperature": temperature, **_vote(stored[:used], question.gold, rng),
                          "paths_used": used, "paths_stored": len(stored), "stopped": reason})
        yield {"id": qid, "question": question.question, "gold": question.gold, "complete": complete,
               "greedy": None if greedy is None else {
                   "answer": greedy.answer, "correct": _correct(greedy.answer, question.gold)},
               "votes": votes, "paths": [_path(p) for p in paths]}
