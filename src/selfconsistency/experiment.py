"""One self-consistency experiment: plan the paths, generate what the store lacks, store each one.

tasks -> prompts -> backends -> store; the analysis and report read the store alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import waves
from .answer_classes import Classifier
from .answer_stop import answer_complete_pattern
from .audit import AuditLog
from .backends import backend_spec, create_backend
from .backends.base import Backend, Generation, GenerationRequest, dollars
from .extract import PatternTimeout
from .math_answers import read_answer, split_thinking
from .preflight import preflight
from .prompts import Prompt, PromptFormat, build_prompt
from .runlock import prepare_run_dir
from .sampling import SamplingParams, path_seed
from .settings import RunSettings
from .store import SampleStore, StoredPath, StoredQuestion, Unsettled, writer
from .tasks import DataError, Task, TaskData
from .tasks.answer_types import answer_type

log = logging.getLogger(__name__)


class ExtractionFailed(DataError):
    """Paths were generated and stored, but the task's answer pattern could not read them."""


def prompt_digest(config: RunSettings, task: Task, data: TaskData) -> str:
    """What every prompt of the run shares (exemplars, instruction, format), hashed: part of the store's
    identity, since an edited exemplars file or other first K records change every path's prompt while
    the task spec and the options stay the same."""
    experiment = config.experiment
    zero_shot = task.zero_shot(experiment.zero_shot, experiment.prompt_format is PromptFormat.chat, data.exemplars)
    prompt = build_prompt("\x00", data.exemplars, experiment.prompt_format, zero_shot, task.zero_shot_instruction(),
                          instruction=task.instruction(), labels=task.labels())
    return hashlib.sha256(json.dumps([prompt.text, prompt.messages]).encode()).hexdigest()[:12]


def answer_stop_pattern(config: RunSettings, task: Task) -> str | None:
    """The completion condition paths end on with the embedded backend's --stop-at-answer, else None."""
    if not backend_spec(config.backend).stops_at_answer(config.options):
        return None
    pattern = answer_complete_pattern(task.spec.prompt.answer_statement, task.spec.answer.type,
                                      task.thinking_tags(config.experiment.thinking_tags))
    if pattern is None:
        raise DataError(f"--stop-at-answer: task {task.name}'s answers ({task.spec.answer.type}) have no fixed "
                        "shape to tell when its answer statement is complete; run without it")
    return pattern


def unsettled_said(config: RunSettings, store: SampleStore, unsettled: Unsettled, when: str) -> str:
    """One line on paid requests whose paths were never stored: how many, and what they count as spent."""
    price = config.price(on_demand=True, priced_as=(store.priced_as() or {}).get("model"))
    tokens = unsettled.prompt_tokens + unsettled.output_tokens
    amount = f"{dollars(price.cost(unsettled.prompt_tokens, unsettled.output_tokens))} ({tokens:,} tokens)" \
        if price is not None else f"{tokens:,} tokens"
    return (f"spend: {unsettled.requests:,} paid request{'s' * (unsettled.requests != 1)} {when}: unsettled at a "
            f"kill, counted at their worst case ({unsettled.unanswered:,} never answered; those answered, at what "
            f"they used), {amount}, against --max-cost / --max-tokens-total; the report's cost is the stored paths'")


def plan_requests(config: RunSettings, task: Task, data: TaskData,
                  wanted: dict[tuple[str, float], int] | None = None) -> list[GenerationRequest]:
    """Every path of the run, question by question (so a backend can reuse each question's prompt).

    `wanted` limits the plan to so many paths per (question id, temperature); absent keys get none.
    """
    experiment, sampling = config.experiment, config.sampling
    chat = experiment.prompt_format is PromptFormat.chat
    zero_shot = task.zero_shot(experiment.zero_shot, chat, data.exemplars)
    stop = task.stop(zero_shot, chat=chat)
    complete = answer_stop_pattern(config, task)
    requests = []
    temperatures = config.settings()
    if wanted is not None:  # paths at a temperature the settings no longer name (an earlier job's)
        temperatures += tuple(sorted({t for _, t in wanted} - set(temperatures)))
    for question in data.questions:
        prompt = build_prompt(question.text, data.exemplars, experiment.prompt_format, zero_shot,
                              task.zero_shot_instruction(), question.context, instruction=task.instruction(),
                              labels=task.labels())
        for temperature in temperatures:
            count = config.paths_at(temperature) if wanted is None else wanted.get((question.id, temperature), 0)
            for index in range(count):
                params = SamplingParams(temperature=temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                        max_tokens=sampling.max_tokens, stop=stop, complete=complete,
                                        seed=path_seed(sampling.seed, question.id, temperature, index))
                requests.append(GenerationRequest(question.id, temperature, index, prompt, params))
    return requests


ProgressHook = Callable[[Generation], None]


def run_experiment(config: RunSettings, run_dir: Path | None = None,
                   on_start: Callable[[int, int], None] | None = None,
                   on_path: ProgressHook | None = None, *, task: Task | None = None,
                   records: Sequence[dict[str, Any]] | None = None, record_ids: Sequence[str] | None = None,
                   backend: Backend | None = None, submit: bool = True) -> Path:
    """Generate every path the store lacks. Returns the run directory.

    Questions are loaded and validated, and the store checked, before the backend starts.
    `on_start(pending, already_stored)` and `on_path(generation)` report progress. `task` (a Task object)
    replaces config.task; `records` (in-memory records, named by `record_ids` if given) replace the data
    file; `backend`, a backend already started, is used and left open (the caller owns it). `submit=False`:
    a batch backend collects the jobs the run made and submits nothing new.
    """
    task = task or config.get_task()
    e = config.experiment
    data = config.load(task) if records is None else task.load(
        None, e.split, e.offset, e.limit, e.shots_from_data, records=records, ids=record_ids)
    given_backend = backend
    run_dir = Path(run_dir) if run_dir else config.default_run_dir(task)
    preflight(config, task, data, run_dir)
    prepare_run_dir(run_dir)
    extract = task.ruled_extractor(config.experiment.flexible)
    thinking_tags = task.thinking_tags(config.experiment.thinking_tags)
    kind = answer_type(task.spec.answer.type)
    questions = {q.id: q for q in data.questions}
    timeouts: list[PatternTimeout] = []
    rendered: dict[Prompt, object] = {}

    def logged_prompt(prompt: Prompt) -> object:
        """The prompt as the model received it: a backend that templates it says how; otherwise chat
        turns as messages, completion prompts as text."""
        if prompt not in rendered:
            render = getattr(backend, "rendered_prompt", None)
            rendered[prompt] = render(prompt) if render else (
                prompt.chat_messages if prompt.format is PromptFormat.chat else prompt.text)
        return rendered[prompt]

    def stored(g: Generation) -> StoredPath:
        """A generation as its path is stored: the answer read outside its thinking, whose tokens are
        counted apart (the provider's count, else the embedded model's tokens inside the blocks). A pattern
        past its time limit on this path's text gives this path no answer (it is stored all the same: it
        was paid for); every other path is read as usual."""
        try:
            answer, rule, thinking = read_answer(g.text, questions[g.request.question_id], extract, thinking_tags)
        except PatternTimeout as exc:
            timeouts.append(exc)
            audit.event("extraction_timeout", pattern=exc.pattern)
            answer, rule, thinking = None, None, split_thinking(g.text, thinking_tags)
        thinking_tokens = g.reasoning_tokens
        if thinking_tokens is None and thinking.spans and g.token_ends is not None:
            thinking_tokens = thinking.tokens_inside(g.token_ends)
        return StoredPath(
            question_id=g.request.question_id, temperature=g.request.temperature, path_index=g.request.path_index,
            seed=g.request.params.seed, text=g.text, answer=answer, prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens, latency_s=g.latency_s, finish_reason=g.finish_reason,
            logprob_sum=g.logprob_sum, backend=backend.name, model=backend.model, answer_rule=rule,
            thinking_tokens=thinking_tokens, ended_thinking=thinking.unclosed)

    with writer(run_dir, create=True) as store:
        store.bind_config({**config.identity(task), "prompt": prompt_digest(config, task, data)},
                          config.stored_settings())
        store.add_questions(StoredQuestion(q.id, q.position, q.text, q.gold, dict(q.groups) or None)
                            for q in data.questions)
        store.set_selection(list(questions), {k: list(v) for k, v in data.neutralised.items()})
        golds = {q.id: q.gold for q in data.questions}
        # answers written many ways (math): each question's classes follow its stored paths
        classifier = Classifier(store, kind.equivalence()) if kind.equivalence else None
        if classifier:
            classifier.update((qid for qid, _, _ in store.path_groups(list(questions))), golds)
        settings_hash = config.settings_hash(task)
        audit = AuditLog(run_dir, settings_hash, config.experiment.log_prompts)
        audit.event("run_start", backend=config.backend, model=config.model, task=task.name,
                    questions=len(data.questions), neutralised_records=len(data.neutralised))
        killed = store.mark_killed_bookings()  # requests a killed process had in flight: paid, perhaps
        if killed.requests:
            audit.event("unsettled_at_kill", requests=killed.requests, prompt_tokens=killed.prompt_tokens,
                        output_tokens=killed.output_tokens)
            log.warning(unsettled_said(config, store, killed, "were in flight when a run of this directory was "
                                       "killed"))
        backend = given_backend

        def started_backend():
            nonlocal backend
            if backend is None:
                backend = create_backend(config.backend, config.backend_config(
                    store.tokens_used(), job_state=store, settings_hash=settings_hash, submit=submit,
                    ledger=store.ledger(config.backend)))
                priced = getattr(backend, "priced_as", None)
                if priced:  # what the calls are billed as (an inference profile's model): reports price by it
                    store.set_priced_as(priced, getattr(backend, "priced_how", ""))
            return backend

        def pending_of(requests: list[GenerationRequest]) -> list[GenerationRequest]:
            stored = store.stored_keys()
            return [r for r in requests if (r.question_id, r.temperature, r.path_index) not in stored]

        def paid_requests() -> list[GenerationRequest]:
            """Every path of today's questions that a batch job not yet collected stands for (a run of more
            paths, interrupted: paid for, so stored even beyond today's plan), planned in the order a run
            plans them so that they pack into the records the job holds (the same ids)."""
            owed = {key for key in store.uncollected_paths() if key[0] in questions}
            if not owed:
                return []
            counts: dict[tuple[str, float], int] = {}
            for qid, temperature, index in owed:
                counts[(qid, temperature)] = max(counts.get((qid, temperature), 0), index + 1)
            return [r for r in plan_requests(config, task, data, counts)
                    if (r.question_id, r.temperature, r.path_index) in owed]

        def store_all(items, report: bool = True) -> None:
            with contextlib.closing(items):  # a caller that stops (on_path raised) closes the backend's generator
                _store_each(items, report)

        def _store_each(items, report: bool) -> None:
            for item in items:
                group = item if isinstance(item, tuple) else (item,)  # a record's paths: stored together
                store.add_paths(stored(g) for g in group)
                if classifier:
                    classifier.update((g.request.question_id for g in group), golds)
                for generation in group:
                    request = generation.request
                    audit.event("generation", backend=backend.name, model=backend.model,
                                request_id=f"{request.question_id}/{request.temperature:g}/{request.path_index}",
                                prompt_tokens=generation.prompt_tokens,
                                completion_tokens=generation.completion_tokens,
                                latency_s=round(generation.latency_s, 4), status=generation.finish_reason,
                                prompt=logged_prompt(request.prompt) if config.experiment.log_prompts else None,
                                completion=generation.text)
                    if on_path and report:
                        on_path(generation)

        def generate(requests: list[GenerationRequest]) -> None:
            paid = paid_requests()
            if paid and hasattr(started_backend(), "collect"):  # collected first, nothing bought for them
                store_all(backend.collect(paid), report=False)
            pending = pending_of(requests)
            if on_start:
                on_start(len(pending), len(requests) - len(pending))
            if pending:
                store_all(started_backend().generate(pending))

        try:
            if config.stopping.budgeted(config.budget.max_cost) or config.stopping.stop:
                waves.run_waves(config, store, list(questions), started_backend,
                                plan=lambda wanted: pending_of(plan_requests(config, task, data, wanted)),
                                generate=generate)
            else:
                generate(plan_requests(config, task, data))
        except BaseException as exc:
            audit.event("run_error", error=type(exc).__name__)
            raise
        else:
            audit.event("run_end")
            if timeouts:
                raise ExtractionFailed(f"{timeouts[0]}: the {len(timeouts)} path(s) it timed out on are stored "
                                       f"without an answer (they abstain) in {run_dir}")
        finally:
            if backend is not None and backend is not given_backend:
                backend.close()
            audit.close()
    return run_dir
