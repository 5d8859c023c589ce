"""Universal Self-Consistency (Chen et al. 2023, arXiv:2311.17311): after sampling, one more request shows
the model its candidate responses, numbered, and asks which is most consistent with the others; the one it
names is the answer. It needs no answer extractor, so it serves free-form answers (summaries, code).

`usc_prompt` and `parse_choice` are pure; `select_with_usc` makes the requests through the run's backend
and stores each pick, so a rerun asks only for the questions still without one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .backends import backend_spec, create_backend
from .backends.base import Backend, GenerationRequest, flatten
from .per_question import paths_used
from .prompts import Prompt, PromptFormat
from .sampling import SamplingParams, path_seed
from .settings import RunSettings
from .store import StoredPath, StoredSelection, writer
from .tasks.base import Question

# The paper's prompt (its Figure 2), responses numbered from 1.
_INSTRUCTION = ("Evaluate these responses.\nSelect the most consistent response based on majority consensus.\n"
                'Start your answer with "The most consistent response is Response X" (without quotes).')
ANSWER_PREFIX = "The most consistent response is Response"
# The reply's first words name the pick; the rest is not needed. A completion prompt ends with
# "...is Response", so its reply opens with the number, but chat APIs send even a completion-format
# prompt as a message, and the reply then states the whole sentence: room for it either way.
USC_MAX_TOKENS = 32
_USC_SEED_INDEX = -2  # path_seed's index for the selection request (paths use 0, 1, ...)

_STATED = re.compile(r"most\s+consistent\s+response\s+is\s*:?\s*[*_\"'(\[]*\s*(?:response\s*)?#?\s*(\d+)", re.I)
_NAMED = re.compile(r"\bresponse\s*#?\s*(\d+)", re.I)
_LEADING = re.compile(r"^\s*[*_\"'(\[]*\s*#?(\d+)\b")


def usc_prompt(question: str, responses: Sequence[str], fmt: PromptFormat,
               context: tuple[tuple[str, str], ...] = ()) -> Prompt:
    """The selection prompt over `responses` (numbered 1..k). In completion format the prompt ends with the
    answer's opening words, so the model's next token is the number. `context`: the chat turns before the
    question (a system message first, earlier turns), which the chat request shows before the selection,
    as the sampling prompts did: a question like "and for 5 apples?" means nothing without them."""
    listed = "\n\n".join(f"Response {number}: {text.strip()}" for number, text in enumerate(responses, start=1))
    body = f"I have generated the following responses to the question: {question.strip()}\n\n{listed}\n\n{_INSTRUCTION}"
    return Prompt(shared="", question=f"{body}\n\n{ANSWER_PREFIX}", messages=(*context, ("user", body)), format=fmt,
                  has_context=bool(context))


def parse_choice(reply: str, candidates: int, fmt: PromptFormat = PromptFormat.chat) -> int | None:
    """The 0-based candidate the reply names, or None when it names none of 1..`candidates`.

    Read in order: "the most consistent response is (Response) N", then the first "Response N", then a
    number the reply starts with; a completion prompt already ends with "...is Response", so there the
    number the reply starts with comes first (unless a chat API sent the prompt as a message and the reply
    states the sentence). A number out of range counts as none; the caller then falls back to the
    majority vote's path."""
    order = (_LEADING, _STATED, _NAMED) if fmt is PromptFormat.completion else (_STATED, _NAMED, _LEADING)
    for pattern in order:
        match = pattern.search(reply)
        if match:
            number = int(match.group(1))
            return number - 1 if 1 <= number <= candidates else None
    return None


def _candidates(used: Sequence[StoredPath]) -> list[StoredPath]:
    """The paths shown to the model: those that gave an answer (an abstaining path is not a candidate)."""
    return [p for p in used if p.answer is not None]


def select_with_usc(config: RunSettings, run_dir: Path, backend: Backend | None = None,
                    temperature: float | None = None,
                    questions: Iterable[Question] = ()) -> int:
    """Store a USC pick for every selected question of the run that lacks one over the paths it used;
    returns how many requests were made (through `backend`, left open, or one started for them).
    `questions`: the questions as loaded, whose chat turns before them (Question.context) the selection
    request shows too.

    No request is made when the candidates cannot disagree: one candidate, or every candidate with the
    same answer (the first is the pick), or none (no pick; the answer is None)."""
    sampling, fmt = config.sampling, config.experiment.prompt_format
    contexts = {q.id: q.context for q in questions if q.context}
    temperature = sampling.temperatures[0] if temperature is None else temperature
    with writer(run_dir) as store:
        stored_settings = store.settings()
        stops_name = config.stops_name()
        stops = store.stops(stops_name) if stops_name else {}
        done = store.selections()
        question_texts = {q.id: q.question for q in store.questions()}  # as the sampling prompts showed them
        by_question: dict[str, list[StoredPath]] = {}
        for path in store.paths():
            if path.temperature == temperature:
                by_question.setdefault(path.question_id, []).append(path)
        pending: list[tuple[GenerationRequest, list[StoredPath], int]] = []
        for qid in store.get_meta("selection") or []:
            stored = by_question.get(qid, [])
            used, _, _ = paths_used(stored_settings, stops, qid, temperature, len(stored))
            if (qid, temperature, used) in done:
                continue
            shown = _candidates(stored[:used])
            if len({p.answer for p in shown}) <= 1:
                store.record_selection(StoredSelection(qid, temperature, used, shown[0].path_index if shown else None,
                                                       True, "", 0, 0))
                continue
            prompt = usc_prompt(question_texts[qid], [p.text for p in shown], fmt, contexts.get(qid, ()))
            stop = ("\n",) if fmt is PromptFormat.completion else ("\n\n",)
            params = SamplingParams(temperature=0.0, top_p=sampling.top_p, top_k=sampling.top_k,
                                    max_tokens=USC_MAX_TOKENS, stop=stop,
                                    seed=path_seed(sampling.seed, qid, temperature, _USC_SEED_INDEX))
            pending.append((GenerationRequest(qid, 0.0, _USC_SEED_INDEX, prompt, params), shown, used))
        if not pending:
            return 0
        own = backend is None
        if own:  # a batch backend's on-demand twin: one short request per question needs no job
            twin = config
            on_demand = backend_spec(config.backend).on_demand
            if on_demand:  # the batch-only options (bucket, role) do not apply to it
                twin = RunSettings.from_stored({**config.flat(), "backend": on_demand})
            backend = create_backend(twin.backend, twin.backend_config(store.tokens_used(), job_state=store))
        try:
            by_key = {request.question_id: (shown, used) for request, shown, used in pending}
            for generation in flatten(backend.generate([request for request, _, _ in pending])):
                qid = generation.request.question_id
                shown, used = by_key[qid]
                picked = parse_choice(generation.text, len(shown), fmt)
                store.record_selection(StoredSelection(
                    qid, temperature, used, None if picked is None else shown[picked].path_index, picked is not None,
                    generation.text, generation.prompt_tokens, generation.completion_tokens))
        finally:
            if own:
                backend.close()
    return len(pending)
