"""Each selected question as one record: its text, gold, greedy answer, the vote at each sampling
temperature and every path. Read from the store alone; `export --questions` and report.html use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .settings import RunSettings
from .store import SampleStore, StoredQuestion
from .vote import decide


def _correct(answer: str | None, gold: str | None) -> bool | None:
    """Whether an answer is the gold; None for an unlabelled question (nothing to score)."""
    return None if gold is None else answer is not None and answer == gold


def paths_used(settings: RunSettings, stops: dict[tuple[str, float], tuple[int, int, str]], qid: str,
               temperature: float, stored: int) -> tuple[int, str, bool]:
    """How many of a question's stored paths (in index order) its vote uses at one temperature, why
    (the stop reason, "undecided", or "fixed N"), and whether it has all it needs."""
    if settings.stops_name():
        used, _, reason = stops.get((qid, temperature), (stored, stored, "undecided"))
        return used, reason, reason != "undecided"
    paths = settings.sampling.paths
    return min(stored, paths), "fixed N", stored >= paths


def _vote(answers: list[str | None], question: StoredQuestion, temperature: float, settings: RunSettings
          ) -> dict[str, Any]:
    """The vote over the answers of the paths a question used (`vote.decide`): each answer's count, most
    frequent first."""
    vote = decide(answers, seed=settings.sampling.seed, question_id=question.id, temperature=temperature,
                  ties=settings.experiment.ties)
    return {"answer": vote.answer, "counts": vote.counts, "abstained": vote.abstained,
            "agreement": vote.agreement, "tie": vote.tie, "correct": _correct(vote.answer, question.gold)}


# The fields a record shows of each path, in the order report.html's path rows hold them (report.js reads
# them by position); the store returns them so, in key order (question, temperature, index).
PATH_FIELDS = ("temperature", "path_index", "answer", "logprob_sum", "finish_reason", "completion_tokens", "text")
_ANSWER = 2


def question_records(run_dir: Path) -> Iterator[dict[str, Any]]:
    """One record per selected question, in the selection's order; questions still missing paths are
    included with `complete` false (the report's accuracy leaves them out)."""
    _, records, rows = _read(run_dir)
    for record, (first, count) in records:
        yield {**record, "paths": [{"temperature": t, "index": index, "answer": answer, "text": text,
                                    "logprob": logprob, "completion_tokens": tokens, "finish_reason": finish}
                                   for t, index, answer, logprob, finish, tokens, text in rows[first: first + count]]}


def page_data(run_dir: Path) -> dict[str, Any]:
    """`question_records` as report.html carries them: the run's temperatures; each record with its answer
    counts as [answer, count] pairs (a JS object would reorder numeric keys) and its paths as [first row,
    count] of `paths`; `paths`: every path of the selected questions as the store returns it, [temperature,
    index, answer, log-prob, finish reason, completion tokens, text] in key order. Most of the page is
    paths: no Python work per path."""
    settings, records, rows = _read(run_dir)
    return {"temperatures": list(settings.sampling.temperatures),
            "questions": [{**record, "votes": [{**vote, "counts": list(vote["counts"].items())}
                                               for vote in record["votes"]], "paths": span}
                          for record, span in records],
            "paths": rows}


def _read(run_dir: Path
          ) -> tuple[RunSettings, list[tuple[dict[str, Any], tuple[int, int]]], list[tuple[Any, ...]]]:
    """The run's settings; each selected question's record without its paths, and where its paths are in
    the rows ([first row, count]); the selected questions' paths' rows (PATH_FIELDS), in key order (a
    narrowed rerun's store keeps other questions' paths: they are not shown, nor shipped in the page)."""
    with SampleStore.open_readonly(run_dir) as store, store.snapshot():
        settings = store.settings()
        selection = store.get_meta("selection") or []
        questions = {q.id: q for q in store.questions()}
        stops_name = settings.stops_name()
        stops = store.stops(stops_name) if stops_name else {}
        groups = store.path_groups(selection)  # the same snapshot as the rows they index
        rows = store.path_rows(PATH_FIELDS, selection)
    return settings, list(_records(settings, selection, questions, stops, groups, rows)), rows


def _records(settings: RunSettings, selection: list[str], questions: dict[str, Any],
             stops: dict[tuple[str, float], tuple[int, int, str]], groups: list[tuple[str, float, int]],
             rows: list[tuple[Any, ...]]) -> Iterator[tuple[dict[str, Any], tuple[int, int]]]:
    spans: dict[str, dict[float, tuple[int, int]]] = {}  # question -> temperature -> (first row, count)
    first = 0
    for qid, temperature, count in groups:
        spans.setdefault(qid, {})[temperature] = (first, count)
        first += count
    answers = [row[_ANSWER] for row in rows]  # slices of one list: no scan of a question's rows per setting
    for qid in selection:
        question = questions[qid]
        where = spans.get(qid, {})
        greedy = answers[where[0.0][0]] if 0.0 in where else _NO_PATH
        votes, complete = [], greedy is not _NO_PATH or not settings.sampling.greedy
        for temperature in settings.sampling.temperatures:
            start, stored = where.get(temperature, (0, 0))
            used, reason, has_all = paths_used(settings, stops, qid, temperature, stored)
            complete = complete and has_all
            votes.append({"temperature": temperature, **_vote(answers[start: start + used], question, temperature,
                                                                     settings),
                          "paths_used": used, "paths_stored": stored, "stopped": reason})
        # A question's groups are consecutive rows, whatever their temperatures.
        span = (min(start for start, _ in where.values()), sum(count for _, count in where.values())) \
            if where else (0, 0)
        record = {"id": qid, "question": question.question, "gold": question.gold, "complete": complete,
                  "greedy": None if greedy is _NO_PATH else {
                      "answer": greedy, "correct": _correct(greedy, question.gold)},
                  "votes": votes}
        if question.source is not None:  # imported: the source tool's own results for this question
            record["source"] = question.source
        yield record, span


_NO_PATH = object()  # no greedy path stored (its answer may be None: a path without an answer)
