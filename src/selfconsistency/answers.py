"""One answer per question from its stored paths: the vote (or the Universal Self-Consistency pick), how
much the paths agree, and the evidence. `build_answer` is pure; `answers_from_store` reads a run.

The vote is `vote.decide`'s, as in every other reader of a run (ties, agreement and abstention are defined
there), so a question gets the same answer whichever other questions were asked with it and whichever
command asks (one call or many, CLI, API or server, report.html, `export --questions`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from pydantic import Field, TypeAdapter, ValidationError

from .costs import Price
from .per_question import paths_used
from .store import SampleStore, StoredPath, StoredQuestion, StoredSelection
from .vote import decide, path_weights
from .vote import share as vote_share


@dataclass(frozen=True)
class AnswerPath:
    """One path a question's answer used."""

    index: int
    answer: str | None  # None: the path abstained (no answer could be read)
    text: str
    completion_tokens: int
    logprob_sum: float | None
    finish_reason: str  # "stop" or "length" (cut at max_tokens)


class UscSelection(TypedDict):
    """`Answer.votes` under Universal Self-Consistency (method "usc"): the selection, not a count.

    `selected_path`: the index of the path whose text is the answer (None when every path abstained).
    `candidates`: how many responses were shown to the model (the used paths that gave an answer).
    `parsed`: False when the model's reply named no candidate and the majority vote's path stood in
    (or no path gave an answer)."""

    selected_path: int | None
    candidates: int
    parsed: bool


@dataclass(frozen=True)
class Answer:
    """The answer to one question.

    `answer` is the vote's winner (None when every path abstained). `agreement` is the winner's share of
    the non-abstaining votes (of their weight, for a weighted vote): the signal to act on; below
    `min_agreement` the answer is `low_confidence`. `votes` is what chose the answer: {answer: paths}
    for a vote (majority, logprob, cisc), and under Universal Self-Consistency (method "usc") the
    selection, a `UscSelection` ({"selected_path": i, "candidates": n, "parsed": bool}); the answer is
    then the selected path's (None, like the vote's, when every path abstained). For answer type free,
    `answer` is the chosen path's text as generated (stripped): the votes group paths by its normalised
    form, which would mangle code or prose. `gold`/`correct` are None for an unlabelled question.
    """

    id: str
    question: str
    answer: str | None
    agreement: float
    votes: dict[str, int] | UscSelection
    paths_used: int
    abstained: int
    stopped_by: str | None
    rationale: str | None  # the text of one path that gave the winning answer
    tokens: int  # prompt + completion tokens of every path generated for the question (and the USC request)
    cost_usd: float | None  # None: no price known for the model
    prompt_tokens: int = 0  # `tokens`, split
    completion_tokens: int = 0
    method: str = "majority"
    gold: str | None = None
    correct: bool | None = None
    low_confidence: bool | None = None  # None: no min_agreement was given
    weights: dict[str, float] | None = None  # each answer's summed weight, for a weighted vote
    paths: tuple[AnswerPath, ...] = field(default=(), repr=False)

    def to_record(self) -> dict[str, Any]:
        """The answer as one JSON line: gold/correct only when labelled, low_confidence only when asked
        for; paths' texts left out (the rationale is one of them)."""
        record = {key: value for key, value in asdict(self).items()
                  if key not in ("paths", "question", "gold", "correct", "low_confidence", "weights",
                                 "prompt_tokens", "completion_tokens")}
        if self.gold is not None:
            record.update(gold=self.gold, correct=self.correct)
        if self.low_confidence is not None:
            record["low_confidence"] = self.low_confidence
        if self.weights is not None:
            record["weights"] = self.weights
        return record


def check_method(method: str) -> str:
    """majority, logprob, cisc or cisc:T, or usc; anything else is refused before a run starts."""
    kind, _, temperature = method.partition(":")
    if method in ("majority", "logprob", "usc") or (kind == "cisc" and not temperature):
        return "cisc:0.5" if method == "cisc" else method
    if kind == "cisc":
        try:
            if float(temperature) > 0:
                return method
        except ValueError:
            pass
    raise ValueError(f"unknown answer method {method!r}; use majority, logprob, cisc[:T] (T > 0) or usc")


# `--min-agreement`, the API's `min_agreement` and serve's `self_consistency.min_agreement`: a share of the votes.
MinAgreement = Annotated[float, Field(ge=0.0, le=1.0)]
_MIN_AGREEMENT = TypeAdapter(MinAgreement | None)


def check_min_agreement(value: float | None) -> float | None:
    """A share of the votes, in [0, 1] (`MinAgreement`)."""
    try:
        return _MIN_AGREEMENT.validate_python(value)
    except ValidationError:
        raise ValueError(f"min_agreement {value} is outside [0, 1]: it is the winning share of the votes") from None


def build_answer(question: StoredQuestion, used: Sequence[StoredPath], generated: Sequence[StoredPath], *,
                 seed: int, method: str = "majority", stopped_by: str | None = None,
                 selection: StoredSelection | None = None, price: Price | None = None,
                 min_agreement: float | None = None, verbatim: bool = False, ties: str = "random") -> Answer:
    """The answer to `question` from the paths its vote `used` (in path-index order), the cost of all it
    `generated`, and under method "usc" the stored `selection` (required then). `verbatim` (answer type
    free): the answer is the chosen path's text as generated, stripped, not the normalised key it voted
    with."""
    method = check_method(method)
    used = sorted(used, key=lambda p: p.path_index)
    answers = [p.answer for p in used]
    temperature = used[0].temperature if used else 0.0
    per_path = None if method in ("majority", "usc") else path_weights(
        method, [p.logprob_sum for p in used], [p.completion_tokens for p in used])
    vote = decide(answers, seed=seed, question_id=question.id, temperature=temperature, weights=per_path,
                  ties=ties)
    winner, share = vote.answer, vote.agreement
    votes: dict[str, int] | UscSelection = vote.counts
    rationale_path = next((p for p in used if winner is not None and p.answer == winner), None)
    extra_prompt = extra_completion = 0
    if method == "usc":
        if selection is None:
            raise ValueError(f"question {question.id}: no Universal Self-Consistency selection is stored")
        by_index = {p.path_index: p for p in used}
        parsed = selection.parsed and selection.chosen in by_index
        # Fallback (a reply naming no candidate): the majority vote's path; none when every path abstained.
        picked = by_index[selection.chosen] if parsed else rationale_path
        votes = UscSelection(selected_path=picked.path_index if picked else None,
                             candidates=len(answers) - vote.abstained, parsed=parsed)
        rationale_path = picked
        winner = picked.answer if picked else None
        share = vote_share(vote.counts, winner)
        extra_prompt, extra_completion = selection.prompt_tokens, selection.completion_tokens
    prompt_tokens = sum(p.prompt_tokens for p in generated) + extra_prompt
    completion_tokens = sum(p.completion_tokens for p in generated) + extra_completion
    agreement = share
    correct = None if question.gold is None else winner is not None and winner == question.gold
    if verbatim and rationale_path is not None:
        winner = rationale_path.text.strip()
    return Answer(
        id=question.id, question=question.question, answer=winner, agreement=agreement, votes=votes,
        paths_used=len(used), abstained=answers.count(None), stopped_by=stopped_by,
        rationale=rationale_path.text if rationale_path else None, tokens=prompt_tokens + completion_tokens,
        cost_usd=round(price.cost(prompt_tokens, completion_tokens), 6) if price else None,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, method=method,
        gold=question.gold, correct=correct,
        low_confidence=None if min_agreement is None else agreement < min_agreement,
        weights=vote.weights,
        paths=tuple(AnswerPath(p.path_index, p.answer, p.text, p.completion_tokens, p.logprob_sum, p.finish_reason)
                    for p in used))


def answers_from_store(run_dir: Path, *, method: str = "majority", min_agreement: float | None = None,
                       temperature: float | None = None, ids: Sequence[str] | None = None,
                       verbatim: bool = False) -> list[Answer]:
    """One Answer per question (`ids`, default the latest selection), in that order, voting over the
    paths at `temperature` (default: the run's first sampling temperature) that the run used. `verbatim`
    (answer type free): each answer is its chosen path's text, as `build_answer` says."""
    method = check_method(method)
    with SampleStore.open_readonly(run_dir) as store:
        settings = store.settings()
        temperatures = settings.sampling.temperatures or settings.settings()
        temperature = temperatures[0] if temperature is None else temperature
        if temperature not in settings.settings():
            raise ValueError(f"no paths at T={temperature:g} in {run_dir}")
        wanted = list(ids) if ids is not None else store.get_meta("selection") or []
        questions = {q.id: q for q in store.questions()}
        rule, stops_name = settings.stopping_rule(), settings.stops_name()
        stops = store.stops(stops_name) if stops_name else {}
        selections = store.selections() if method == "usc" else {}
        by_question: dict[str, list[StoredPath]] = defaultdict(list)
        for path in store.paths():
            if path.temperature == temperature and path.question_id in questions:
                by_question[path.question_id].append(path)
    price = settings.price()
    out = []
    for qid in wanted:
        generated = by_question.get(qid, [])  # in path-index order
        if temperature == 0.0:
            used, reason = len(generated[:1]), "fixed N"
        else:
            used, reason, _ = paths_used(settings, stops, qid, temperature, len(generated))
        stopped_by = {"rule": rule.name if rule else None, "max paths": "max_paths", "budget": stops_name}.get(reason)
        out.append(build_answer(questions[qid], generated[:used], generated, seed=settings.sampling.seed,
                                method=method, ties=settings.experiment.ties, stopped_by=stopped_by,
                                selection=selections.get((qid, temperature, used)), price=price,
                                min_agreement=min_agreement, verbatim=verbatim))
    return out
