"""The Python API: answer one question or many with self-consistency, on any backend.

    from selfconsistency import SelfConsistency
    sc = SelfConsistency(model="qwen2.5-coder-1.5b", paths=10, temperature=0.7, stop="beta:0.95")
    result = sc.answer("Natalia sold clips to 48 of her friends in April, ...", task="gsm8k")
    result.answer, result.agreement, result.votes, result.paths

It is the run pipeline (`run_experiment` over in-memory records, then `answers_from_store`), not a copy
of it. Without `run_dir` each call works in a temporary directory that is removed afterwards; with one,
calls are resumable like the CLI (a question already answered there costs nothing again: a question's
id is a hash of its record).

One instance may be used from several threads: calls on a run directory run one at a time; on the
embedded model the paths of concurrent calls are decoded together, in shared batches; remote backends
serve calls in parallel.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .answers import Answer, answers_from_store, check_method, check_min_agreement
from .backends import backend_spec, check_backend_name, create_backend
from .backends.base import Backend, BackendError, Generation, GenerationRequest
from .experiment import run_experiment
from .models import DEFAULT_MODEL
from .prompts import PromptFormat
from .runlock import RunDirError
from .settings import RunSettings, one_temperature, unused_settings, without_budget
from .store import StoreMismatch
from .tasks import DataError, Task, TaskSpec, get_task
from .tasks.answer_types import answer_type
from .tasks.base import CHAT_CONTEXT

Question = str | Mapping[str, Any]  # a question's text, or a record shaped like the task's data


def run_config(task_name: str, options: Mapping[str, Any]) -> RunSettings:
    """The one place API and server options become run settings. `options` holds RunSettings fields, plus
    `temperature` (one sampling temperature). No greedy path: answers vote over sampled paths only.
    Settings `serve` ignores are refused, as the command line refuses them (their paths would be paid
    for and not counted, or they would do nothing)."""
    fields = dict(options)
    unused = unused_settings("serve")
    for name in fields:
        if name in unused:
            users = " and ".join(f"'{c}'" for c in unused[name])
            raise ValueError(f"{name} does not apply to SelfConsistency, whose answers vote over the sampled paths "
                             f"of the questions it is given (it is a setting of {users})")
    one_temperature(fields.get("temperatures", ()), "SelfConsistency", "temperatures")
    if "temperature" in fields:
        fields.setdefault("temperatures", (fields.pop("temperature"),))
    fields.setdefault("greedy", False)
    try:
        return RunSettings(task=task_name, **fields)
    except ValidationError as exc:
        problems = "; ".join((f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
                             + without_budget(e["msg"].removeprefix("Value error, ")) for e in exc.errors())
        raise ValueError(f"invalid self-consistency options: {problems}") from None


def default_method(task: Task) -> str:
    """Universal Self-Consistency for free-form answers (no extractor to vote with), else the majority."""
    return "usc" if answer_type(task.spec.answer.type).free else "majority"


def answer_data(config: RunSettings, run_dir: Path | None = None, *, method: str | None = None,
                min_agreement: float | None = None, on_start: Callable[[int, int], None] | None = None,
                on_path: Callable[[Generation], None] | None = None) -> tuple[Path, list[Answer]]:
    """What `selfconsistency answer` does: the run pipeline over the configured data (resumable in
    `run_dir`), the USC step when the method is "usc", then one Answer per selected question in input
    order. `method`: None for the task's default, "majority", "logprob", "cisc[:T]" or "usc"."""
    from .usc import select_with_usc  # usc imports the run pipeline too

    task = config.get_task()
    method = check_method(method or default_method(task))
    run_dir = run_experiment(config, run_dir, on_start=on_start, on_path=on_path, task=task)
    if method == "usc":  # a record's chat turns (chat_context) reach its selection request too
        select_with_usc(config, run_dir, questions=config.load(task).questions)
    return run_dir, answers_from_store(run_dir, method=method, min_agreement=min_agreement,
                                       verbatim=answer_type(task.spec.answer.type).free)


def answer_lines(answers: Iterable[Answer]) -> Iterator[str]:
    """One JSON line per answer (Answer.to_record)."""
    for answer in answers:
        yield json.dumps(answer.to_record(), ensure_ascii=False) + "\n"


def write_answers(answers: Iterable[Answer], out: Any) -> int:
    """`answer_lines` to a text stream; how many were written."""
    count = 0
    for line in answer_lines(answers):
        out.write(line)
        count += 1
    return count


def task_options(config: RunSettings) -> dict[str, Any]:
    """The input limits a Task takes from the run settings (as RunSettings.get_task applies them)."""
    return {"max_chars": config.experiment.max_question_chars, "strict_input": config.experiment.strict_input}


class Cancelled(Exception):
    """The caller set the call's cancel event: no more paths were asked for."""


def _cancellable(on_path: Callable[[Generation], None] | None,
                 cancel: threading.Event) -> Callable[[Generation], None]:
    def checked(generation: Generation) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled by the caller")
        if on_path is not None:
            on_path(generation)

    return checked


class _Shared:
    """What an instance and its `with_options` siblings share: started backends and the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards `backends`; held for a whole call on a run directory
        self.backends: dict[str, Backend] = {}


_DONE = object()


class _Call:
    """One call's paths on the shared decoder: where its generations go, and whether it still listens."""

    def __init__(self, requests: list[GenerationRequest]):
        self.requests = requests
        self.delivered: queue.SimpleQueue = queue.SimpleQueue()
        self.gone = threading.Event()  # finished, failed or abandoned (a cancelled call)
        self.waiting_for = len(requests)  # generations not yet delivered


class _BatchingDecoder:
    """One decoder (the embedded model) shared by concurrent calls, with continuous batching across
    them: one worker thread starts a batch with every call queued, and, when the backend takes a `feed`,
    paths of calls that arrive meanwhile join free slots of the running batch (if it has room for them;
    else they wait for it to drain). Each generation goes back to its call, which ends as soon as its own
    paths are done. A call that goes away has its paths dropped. Only the worker touches the backend
    (llama.cpp is not thread-safe)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name, self.model = backend.name, backend.model
        if hasattr(backend, "rendered_prompt"):
            self.rendered_prompt = backend.rendered_prompt
        self._takes_feed = "feed" in inspect.signature(backend.generate).parameters
        self._waiting: list[_Call] = []  # calls not in a batch yet (guarded by _wake)
        self._wake = threading.Condition()
        self._closed = False
        # the worker's own state: the running batch's calls, each path's call, whether admission has stopped
        self._running: list[_Call] = []
        self._owner: dict[int, _Call] = {}
        self._draining = False
        self._worker = threading.Thread(target=self._decode, name="selfconsistency-decoder", daemon=True)
        self._worker.start()

    def generate(self, requests: list[GenerationRequest]) -> Iterator[Generation]:
        if not requests:
            return
        call = _Call(list(requests))
        with self._wake:
            if self._closed:
                raise BackendError("the model was closed")
            self._waiting.append(call)
            self._wake.notify()
        try:
            while (item := call.delivered.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            call.gone.set()  # the worker drops what is left of this call

    # -- the feed the backend asks from the worker thread (PathFeed) -----------------------------

    def more(self, fits: Callable[[Sequence[GenerationRequest]], bool]) -> list[GenerationRequest]:
        joining: list[GenerationRequest] = []
        with self._wake:
            while self._waiting and not self._draining:
                call = self._waiting[0]
                if not call.gone.is_set():
                    if not fits(call.requests):
                        self._draining = True  # it waits for the next batch, and nobody overtakes it
                        break
                    self._admit(call)
                    joining += call.requests
                self._waiting.pop(0)
        return joining

    def wants(self, request: GenerationRequest) -> bool:
        call = self._owner.get(id(request))
        return call is not None and not call.gone.is_set()

    # -- the worker ------------------------------------------------------------------------------

    def _admit(self, call: _Call) -> None:
        self._running.append(call)
        self._owner.update((id(request), call) for request in call.requests)

    def _deliver(self, generation: Generation) -> None:
        call = self._owner.pop(id(generation.request), None)
        if call is None:
            return
        call.delivered.put(generation)
        call.waiting_for -= 1
        if call.waiting_for == 0:
            call.delivered.put(_DONE)  # this call is done, whatever the batch still decodes for others
            self._running.remove(call)

    def _decode(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if not self._waiting:
                    return
                calls, self._waiting = [c for c in self._waiting if not c.gone.is_set()], []
            if not calls:
                continue
            self._running, self._owner, self._draining = [], {}, False
            for call in calls:
                self._admit(call)
            requests = [r for call in calls for r in call.requests]
            stream = (self.backend.generate(requests, feed=self) if self._takes_feed
                      else self.backend.generate(requests))
            try:
                for item in stream:
                    for generation in item if isinstance(item, tuple) else (item,):
                        self._deliver(generation)
                    if all(call.gone.is_set() for call in self._running):
                        break  # nobody listens any more: stop decoding this batch (waiting calls start anew)
            except BaseException as exc:  # noqa: BLE001 - every call of the batch gets the failure
                for call in self._running:
                    call.delivered.put(exc)
            else:
                for call in self._running:  # a backend that gave fewer generations than asked
                    call.delivered.put(_DONE)
            finally:
                stream.close()
                self._running, self._owner = [], {}

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._worker.join()
        self.backend.close()


class _Lent:
    """A started backend lent to one call, which must not close it (the instance does)."""

    def __init__(self, inner: Backend | _BatchingDecoder):
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        if hasattr(inner, "rendered_prompt"):
            self.rendered_prompt = inner.rendered_prompt

    def generate(self, requests: list[GenerationRequest]) -> Iterator[Generation]:
        return self.inner.generate(requests)

    def close(self) -> None:
        pass


class SelfConsistency:
    """Self-consistency as a function: sample `paths` reasoning paths per question at `temperature`, read
    each path's answer, and vote (or let the model pick, Universal Self-Consistency, for free-form answers).

    `model`/`backend` choose where paths come from (the embedded model by default; `backend="openai",
    base_url=..., model=...` for any OpenAI-compatible server; Bedrock and the batch APIs too). `stop` is
    an adaptive stopping rule ("beta:0.95"): `paths` is then the maximum. `task` is a built-in task's
    name, a task config file or a TaskSpec; `answer_type` overrides its answer type. `method` is
    "majority", "logprob", "cisc[:T]" (weighted votes) or "usc" (the default for answer type "free").
    `min_agreement` marks answers below it `low_confidence`. Any other keyword is a run setting
    (`max_tokens`, `seed`, `prompt_format`, `top_p`, `base_url`, `api`, `concurrency`, `region`, ...).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, paths: int | None = None, temperature: float | None = None,
                 stop: str | None = None, backend: str = "local", task: str | TaskSpec | Task = "gsm8k",
                 answer_type: str | None = None, method: str | None = None, min_agreement: float | None = None,
                 run_dir: str | Path | None = None, **options: Any):
        # A setting not given takes the settings' own default, as on the command line.
        given = {"paths": paths, "temperature": temperature, "stop": stop}
        self._options = {"model": model, "backend": backend, **{k: v for k, v in given.items() if v is not None},
                         **options}
        self.task, self.answer_type, self.method = task, answer_type, method
        self.min_agreement = check_min_agreement(min_agreement)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._shared = _Shared()
        check_backend_name(backend)
        self._task_of(task)  # a bad task, answer type or option fails here, not at the first question
        if method is not None:
            check_method(method)

    @property
    def model(self) -> str:
        return str(self._options["model"])

    def settings(self) -> tuple[RunSettings, Task]:
        """The run settings this instance's calls use, and its task."""
        task = self._task_of(self.task)
        return run_config(task.name, self._options), task

    @property
    def prompt_format(self) -> PromptFormat:
        """completion or chat: whether a question's earlier chat turns have a place in its prompts."""
        return self.settings()[0].experiment.prompt_format

    def chat_question(self, question: str, context: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """A question with the chat turns before it, (role, text): a system message first, then earlier
        user/assistant turns. They reach chat-format prompts (system message first, the turns after the
        task's exemplars, before the question); a completion-format run refuses them. Pass the record
        to `answer`/`answer_many`; the turns are part of its id."""
        record: dict[str, Any] = {self._task_of(self.task).spec.fields.question: question}
        turns = [{"role": role, "content": text} for role, text in context]
        if turns:
            record[CHAT_CONTEXT] = turns
        return record

    def with_options(self, **changes: Any) -> SelfConsistency:
        """A sibling with some settings changed (e.g. `paths=20`) that shares this instance's started
        backends; the server makes one per request that overrides settings."""
        sibling = object.__new__(SelfConsistency)
        sibling.__dict__.update(self.__dict__)
        sibling._options = dict(self._options)
        for key in ("task", "answer_type", "method", "min_agreement"):
            if key in changes:
                setattr(sibling, key, changes.pop(key))
        if "run_dir" in changes:
            value = changes.pop("run_dir")
            sibling.run_dir = Path(value) if value is not None else None
        if "temperature" in changes:  # one temperature given replaces the list (e.g. from the command line)
            sibling._options.pop("temperatures", None)
        sibling._options.update(changes)
        sibling._task_of(sibling.task)  # checks the options too
        if sibling.method is not None:
            check_method(sibling.method)
        check_min_agreement(sibling.min_agreement)
        return sibling

    # -- answering -------------------------------------------------------------------------------

    def answer(self, question: Question, task: str | TaskSpec | Task | None = None) -> Answer:
        """The answer to one question (its text, or a record with the task's fields, e.g. choices)."""
        return self.answer_many([question], task)[0]

    def answer_many(self, questions: Iterable[Question], task: str | TaskSpec | Task | None = None,
                    on_path: Callable[[Generation], None] | None = None,
                    cancel: threading.Event | None = None) -> list[Answer]:
        """One Answer per question, in order, all sampled together (a backend batches them).
        `on_path(generation)` is called as each path arrives (progress). Setting `cancel` stops the
        call at its next path with Cancelled (the server does so when its client disconnects)."""
        if cancel is not None:
            on_path = _cancellable(on_path, cancel)
        task_obj = self._task_of(self.task if task is None else task)
        records = [self._record(question, task_obj) for question in questions]
        if not records:
            return []
        ids = [self._id_of(record, task_obj) for record in records]
        unique: dict[str, dict[str, Any]] = {}
        for qid, record in zip(ids, records, strict=True):
            if unique.setdefault(qid, record) != record:  # the same record twice is one question, answered once
                raise ValueError(f"two different questions have the id {qid!r}: ids must be unique")
        config = run_config(task_obj.name, self._options)
        method = check_method(self.method or default_method(task_obj))
        if self.run_dir is not None:
            with self._shared.lock, self._run_dir_named():  # one call at a time holds a run directory
                answers = self._run(config, task_obj, self.run_dir, unique, method, on_path)
        else:
            with tempfile.TemporaryDirectory(prefix="selfconsistency-") as scratch:
                answers = self._run(config, task_obj, Path(scratch), unique, method, on_path)
        by_id = {a.id: a for a in answers}
        return [by_id[qid] for qid in ids]

    def _run(self, config: RunSettings, task: Task, run_dir: Path, records: dict[str, dict[str, Any]],
             method: str, on_path: Callable[[Generation], None] | None) -> list[Answer]:
        from .usc import select_with_usc  # usc imports the run pipeline too

        backend = self._backend(config)
        run_experiment(config, run_dir, on_path=on_path, task=task, records=list(records.values()),
                       record_ids=list(records), backend=backend)
        if method == "usc":  # the selection request shows a conversation's earlier turns, as the paths' prompts did
            select_with_usc(config, run_dir, backend=backend,
                            questions=task.load(None, records=list(records.values()), ids=list(records)).questions)
        return answers_from_store(run_dir, method=method, min_agreement=self.min_agreement, ids=list(records),
                                  verbatim=answer_type(task.spec.answer.type).free)

    run_dir_option = "run_dir"  # how errors name the run directory setting (`serve` says --run-dir)

    @contextmanager
    def _run_dir_named(self) -> Iterator[None]:
        """The store's and the lock's errors name the command line's --run-dir: say what the caller gave."""
        try:
            yield
        except (StoreMismatch, RunDirError) as exc:
            if self.run_dir_option == "--run-dir":
                raise
            raise type(exc)(str(exc).replace("--run-dir", self.run_dir_option)) from None

    # -- settings --------------------------------------------------------------------------------

    def _task_of(self, task: str | TaskSpec | Task) -> Task:
        if isinstance(task, Task):
            spec, base_dir = task.spec, task.base_dir
        elif isinstance(task, TaskSpec):
            spec, base_dir = task, Path.cwd()
        else:
            loaded = get_task(str(task))
            spec, base_dir = loaded.spec, loaded.base_dir
        if self.answer_type is not None and self.answer_type != spec.answer.type:
            answer_type(self.answer_type)  # ValueError naming the known ones
            try:
                spec = TaskSpec.model_validate({**spec.model_dump(),
                                                "answer": {**spec.answer.model_dump(), "type": self.answer_type}})
            except ValidationError as exc:
                raise DataError(f"task {spec.name} cannot take answer type {self.answer_type!r}: "
                                f"{exc.errors()[0]['msg']}") from None
        return Task(spec, base_dir, **task_options(run_config(spec.name, self._options)))

    @staticmethod
    def _record(question: Question, task: Task) -> dict[str, Any]:
        if isinstance(question, str):
            return {task.spec.fields.question: question}
        if isinstance(question, Mapping):
            return dict(question)
        raise DataError(f"a question is its text or a record (a mapping), not {type(question).__name__}")

    @staticmethod
    def _id_of(record: dict[str, Any], task: Task) -> str:
        """The record's id field if the task names one and the record has it; else a hash of the record,
        so the same question is the same stored question in every call."""
        id_field = task.spec.fields.id
        if id_field and id_field in record:
            return str(record[id_field])
        canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
        return "q-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # -- backends --------------------------------------------------------------------------------

    def _backend(self, config: RunSettings) -> Backend | None:
        """A started backend shared by calls with the same transport settings. Batch backends keep their
        job state in the run directory, so each call starts its own (None: run_experiment does)."""
        if backend_spec(config.backend).job_service is not None:
            return None
        key = json.dumps({"backend": config.backend, "model": config.model,
                          "options": config.options.model_dump(mode="json"),
                          "budget": config.budget.model_dump(mode="json")}, sort_keys=True)
        # a call on a run directory holds the lock already (its calls run one at a time)
        with self._shared.lock if self.run_dir is None else nullcontext():
            backend = self._shared.backends.get(key)
            if backend is None:
                backend = create_backend(config.backend, config.backend_config())
                # A decoder for one thread at a time (the embedded model): concurrent calls share its batches.
                if backend_spec(config.backend).shared_decoder:
                    backend = _BatchingDecoder(backend)
                self._shared.backends[key] = backend
        return _Lent(backend)

    def close(self) -> None:
        """Close the started backends (an embedded model's memory, HTTP connections)."""
        with self._shared.lock:
            backends, self._shared.backends = list(self._shared.backends.values()), {}
        for backend in backends:
            backend.close()

    def __enter__(self) -> SelfConsistency:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

