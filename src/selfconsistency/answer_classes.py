"""The writer's side of answer classes: as a run stores paths, it regroups each question's written answers
(`equivalence.group`, with the answer type's verifier) and stores the classes and every comparison made,
so that every reader of the store sees the same classes (see equivalence.py for why they are stored).

A comparison's verdict, once stored, is reused by every later regrouping of the run (a resumed run
included): a pair is never decided twice, so a time limit hit once cannot come out differently later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .equivalence import gold_class, group
from .math_verifier import Verdict, Verifier
from .store import SampleStore

_OWN = ""  # the answer side of a form's own check (whether it is within the limits)


class Classifier:
    """Keeps a store's answer classes current; `verifier` decides pairs it has not seen."""

    def __init__(self, store: SampleStore, verifier: Verifier):
        self.store = store
        self.verifier = verifier
        self._checks = store.equivalence_checks()
        self._new: dict[tuple[str, str], str] = {}
        self._classes = store.answer_classes()

    def _usable(self, form: str) -> bool:
        key = (form, _OWN)
        if key not in self._checks:
            self._record(key, Verdict.same if self.verifier.usable(form) else Verdict.limit)
        return self._checks[key] != Verdict.limit

    def _same(self, gold: str, answer: str) -> bool:
        key = (gold, answer)
        if key not in self._checks:
            self._record(key, self.verifier.compare(gold, answer))
        return self._checks[key] == Verdict.same

    def _record(self, key: tuple[str, str], verdict: Verdict) -> None:
        self._checks[key] = self._new[key] = verdict.value

    def update(self, question_ids: Iterable[str], golds: Mapping[str, str | None]) -> None:
        """Regroup these questions' written answers (and place each one's gold, as written) from the store."""
        for qid in dict.fromkeys(question_ids):
            classes = group(self.store.written_answers(qid), self._same, self._usable)
            gold = golds.get(qid)
            if gold is not None:
                classes[gold] = gold_class(gold, classes, self._same, self._usable)
            if self._new:
                self.store.add_equivalence_checks(self._new)
                self._new = {}
            if classes != self._classes.get(qid):
                self.store.set_answer_classes(qid, classes)
                self._classes[qid] = classes


def beyond_limits(checks: Mapping[tuple[str, str], str]) -> dict[str, int]:
    """How often the limits were hit: written answers that counted as their own string, and comparisons
    that ran out of time (`checks`: a store's `equivalence_checks()`)."""
    limited = [key for key, verdict in checks.items() if verdict == Verdict.limit]
    return {"answers": sum(answer == _OWN for _, answer in limited),
            "comparisons": sum(answer != _OWN for _, answer in limited)}
