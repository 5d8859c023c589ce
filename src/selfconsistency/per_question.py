"""Each selected question as one record: its text, gold, greedy answer, the vote at each sampling
temperature and every path. Read from the store alone; `export --questions` and report.html use it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from .stopping import parse_rule
from .store import SampleStore
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


def _vote(answers: list[str | None], gold: str | None, rng: np.random.Generator) -> dict[str, Any]:
    """The majority vote over the answers of the paths a question used: each answer's count, most frequent
    first."""
    counts = Counter(a for a in answers if a is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    winner = majority_vote(answers, rng)
    top = ranked[0][1] if ranked else 0
    return {"answer": winner, "counts": dict(ranked), "abstained": answers.count(None),
            # share of the used paths (abstentions included) that gave the winning answer
            "agreement": round(top / len(answers), 4) if answers else None,
            "tie": sum(count == top for _, count in ranked) > 1,
            "correct": _correct(winner, gold)}


# The fields a record shows of each path, as the store returns them (key order: question, temperature, index).
PATH_FIELDS = ("question_id", "temperature", "path_index", "answer", "logprob_sum", "finish_reason",
               "completion_tokens", "text")
_TEMPERATURE, _ANSWER = 1, 3


def question_records(run_dir: Path) -> Iterator[dict[str, Any]]:
    """One record per selected question, in the selection's order; questions still missing paths are
    included with `complete` false (the report's accuracy leaves them out)."""
    for record, paths in _records(run_dir):
        yield {**record, "paths": [{"temperature": t, "index": index, "answer": answer, "text": text,
                                    "logprob": logprob, "completion_tokens": tokens, "finish_reason": finish}
                                   for _, t, index, answer, logprob, finish, tokens, text in paths]}


def compact_records(run_dir: Path, rows: list[tuple[Any, ...]] | None = None) -> Iterator[dict[str, Any]]:
    """`question_records` as report.html carries them: answer counts as [answer, count] pairs (a JS object
    would reorder numeric keys) and each path as a short array [temperature, index, answer, log-prob to 3
    decimals, finish reason, completion tokens, text] (most of the page's size is paths). `rows`: every
    path as store.path_rows returned it, PATH_FIELDS first, when the caller has read them already."""
    for record, paths in _records(run_dir, rows):
        yield {**record, "votes": [{**vote, "counts": list(vote["counts"].items())} for vote in record["votes"]],
               "paths": [(p[1], p[2], p[3], None if p[4] is None else round(p[4], 3), p[5], p[6], p[7])
                         for p in paths]}


def _records(run_dir: Path, rows: list[tuple[Any, ...]] | None = None
             ) -> Iterator[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
    """Each selected question's record without its paths, and its paths' rows (PATH_FIELDS first) in key order."""
    with SampleStore.open_readonly(run_dir) as store:
        config = store.settings().stored_settings()
        selection = store.get_meta("selection") or []
        questions = {q.id: q for q in store.questions()}
        stops = store.stops(parse_rule(config["stop"], config["min_paths"], config["paths"]).name) \
            if config.get("stop") else {}
        # Rows come in key order: one list per question without a Python object per path.
        rows = store.path_rows(PATH_FIELDS) if rows is None else rows
    by_question = {qid: list(paths) for qid, paths in groupby(rows, key=itemgetter(0))}
    rng = np.random.default_rng(config["seed"])  # tie-breaks, as the report's votes
    for qid in selection:
        question = questions[qid]
        paths = by_question.pop(qid, [])
        greedy = next((p for p in paths if p[_TEMPERATURE] == 0.0), None)
        votes, complete = [], greedy is not None or not config["greedy"]
        for temperature in config["temperatures"]:
            stored = [p[_ANSWER] for p in paths if p[_TEMPERATURE] == temperature]  # in path-index order
            used, reason, has_all = paths_used(config, stops, qid, temperature, len(stored))
            complete = complete and has_all
            votes.append({"temperature": temperature, **_vote(stored[:used], question.gold, rng),
                          "paths_used": used, "paths_stored": len(stored), "stopped": reason})
        yield {"id": qid, "question": question.question, "gold": question.gold, "complete": complete,
               "greedy": None if greedy is None else {
                   "answer": greedy[_ANSWER], "correct": _correct(greedy[_ANSWER], question.gold)},
               "votes": votes}, paths
