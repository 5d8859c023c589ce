"""One self-consistency experiment: plan the paths, generate what the store lacks, store each one.

tasks -> prompts -> backends -> store; the analysis and report read the store alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .audit import AuditLog, redact_urls
from .backends import check_backend_name, create_backend
from .backends.base import Backend, BackendConfig, Generation, GenerationRequest
from .costs import PriceTable
from .extract import PatternTimeout
from .models import DEFAULT_MODEL, check_model_name
from .prompts import Prompt, PromptFormat, build_prompt
from .runlock import prepare_run_dir, run_lock
from .sampling import SamplingParams, path_seed
from .stopping import StoppingRule, parse_rule
from .store import SampleStore, StoredPath, StoredQuestion
from .tasks import DataError, Task, TaskData, get_task

log = logging.getLogger(__name__)

GREEDY_TEMPERATURE = 0.0


def _slug(text: str) -> str:
    """One safe path component from a name a config chose (`../../x` must not leave runs/)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "task"


class ExtractionFailed(DataError):
    """Paths were generated and stored, but the task's answer pattern could not read them."""


class RunConfig(BaseModel):
    """Everything a run is made of. Frozen; validated when built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = "gsm8k"  # a built-in task's name or a task config file
    data: str | None = None
    shots_from_data: int | None = Field(default=None, ge=1)
    split: str | None = None
    offset: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
    backend: str = "local"
    model: str = DEFAULT_MODEL
    prompt_format: PromptFormat = PromptFormat.completion
    zero_shot: bool = False
    greedy: bool = True
    paths: int = Field(default=5, ge=1)
    temperatures: tuple[float, ...] = (0.7,)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int = Field(default=0, ge=0)
    flexible: bool = True
    subset_runs: int = Field(default=100, ge=1)
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1, le=128)
    base_url: str | None = None
    api: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(default=4, ge=1, le=256)
    requests_per_second: float | None = Field(default=None, gt=0)
    max_tokens_total: int | None = Field(default=None, ge=1)  # paid backends: run-wide token budget
    region: str | None = None  # Bedrock
    bucket: str | None = None
    s3_prefix: str = "selfconsistency"
    role_arn: str | None = None
    create_bucket: bool = False
    converse: bool = False
    base_model: str | None = None  # Bedrock: the model behind an application profile ARN (fixed by the ARN)
    timeout_hours: int = Field(default=24, ge=24, le=168)  # Bedrock batch: a job's timeout (not the text)
    tags: tuple[tuple[str, str], ...] = ()  # Bedrock batch: job tags
    poll_seconds: float = Field(default=30.0, gt=0)
    max_cost: float | None = Field(default=None, gt=0)
    prices_file: str | None = None
    stop: str | None = None  # adaptive stopping rule, e.g. "beta:0.95"; `paths` is then the maximum
    min_paths: int = Field(default=1, ge=1)
    round_size: int = Field(default=4, ge=1)  # paths asked per undecided question per round
    log_prompts: bool = False  # audit log carries prompt and completion text
    strict_input: bool = False  # refuse, rather than neutralise, questions that forge prompt structure
    max_question_chars: int = Field(default=8000, ge=100)

    @field_validator("stop")
    @classmethod
    def _rule_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rule(value)
        return value

    @field_validator("prices_file")
    @classmethod
    def _prices_readable(cls, value: str | None) -> str | None:
        if value is not None:
            PriceTable.from_file(Path(value))  # a missing or malformed table fails here, not mid-run
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.stop and self.min_paths > self.paths:
            raise ValueError(f"--min-paths {self.min_paths} is more than --paths {self.paths}: no question "
                             "could ever stop; lower --min-paths or raise --paths")
        if not self.temperatures and not self.greedy:
            raise ValueError("no temperatures and no greedy path: nothing to run")
        return self

    def stopping_rule(self) -> StoppingRule | None:
        return parse_rule(self.stop, self.min_paths, self.paths) if self.stop else None

    @field_validator("temperatures")
    @classmethod
    def _sampling_temperatures(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for t in value:
            if not 0.0 < t <= 2.0:
                raise ValueError(f"sampling temperature {t} is outside (0, 2]; greedy (T=0) is always run")
        if len(set(value)) != len(value):
            raise ValueError("temperatures repeat")
        return tuple(value)

    def identity(self, task: Task) -> dict[str, object]:
        """The settings that decide each path's text and answer: a store made with others is refused."""
        return {
            "task": task.name, "task_spec": task.fingerprint(), "shots_from_data": self.shots_from_data,
            "backend": self.backend, "model": self.model,
            **({"base_url": self.stored_base_url(), "api": self.api} if self.backend != "local" else {}),
            **({"converse": True} if self.converse else {}),  # another request body (absent: older stores match)
            "prompt_format": self.prompt_format.value, "zero_shot": self.zero_shot,
            "top_p": self.top_p, "top_k": self.top_k, "max_tokens": self.max_tokens,
            "seed": self.seed, "flexible": self.flexible, "max_question_chars": self.max_question_chars,
        }

    def stored_base_url(self) -> str | None:
        """--base-url as kept in the store and shown anywhere: without credentials."""
        return redact_urls(self.base_url) if self.base_url else None

    def stored_settings(self) -> dict[str, object]:
        """The full configuration as the store keeps it: credentials in --base-url masked."""
        return {**self.model_dump(mode="json"), "base_url": self.stored_base_url()}

    def identity_hash(self, task: Task) -> str:
        canonical = json.dumps(self.identity(task), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:10]

    def default_run_dir(self, task: Task) -> Path:
        model = Path(self.model).stem if "/" in self.model else self.model
        return Path("runs") / f"{_slug(task.name)}-{_slug(model)}-{self.identity_hash(task)}"

    def backend_config(self, tokens_spent: int = 0, run_dir: Path | None = None, run_id: str = "run") -> BackendConfig:
        return BackendConfig(model=self.model, threads=self.threads, batch_size=self.batch_size,
                             base_url=self.base_url, api=self.api, concurrency=self.concurrency,
                             requests_per_second=self.requests_per_second,
                             max_tokens_total=self.max_tokens_total, tokens_spent=tokens_spent,
                             region=self.region, bucket=self.bucket, s3_prefix=self.s3_prefix,
                             role_arn=self.role_arn, create_bucket=self.create_bucket, converse=self.converse,
                             base_model=self.base_model, timeout_hours=self.timeout_hours, tags=self.tags,
                             poll_seconds=self.poll_seconds, max_cost=self.max_cost, prices_file=self.prices_file,
                             run_dir=str(run_dir) if run_dir else None,
                             run_id=run_id)

    def get_task(self) -> Task:
        return get_task(self.task, max_chars=self.max_question_chars, strict_input=self.strict_input)

    def load(self, task: Task) -> TaskData:
        return task.load(Path(self.data) if self.data else None, self.split, self.offset, self.limit,
                         self.shots_from_data)

    def settings(self) -> tuple[float, ...]:
        """Temperatures in report order: greedy first."""
        return ((GREEDY_TEMPERATURE,) if self.greedy else ()) + self.temperatures

    def paths_at(self, temperature: float) -> int:
        return 1 if temperature == GREEDY_TEMPERATURE else self.paths


def prompt_digest(config: RunConfig, task: Task, data: TaskData) -> str:
    """What every prompt of the run shares (exemplars, instruction, format), hashed: part of the store's
    identity, since an edited exemplars file or other first K records change every path's prompt while
    the task spec and the options stay the same."""
    zero_shot = config.zero_shot or not data.exemplars
    prompt = build_prompt("\x00", data.exemplars, config.prompt_format, zero_shot, task.zero_shot_instruction())
    return hashlib.sha256(json.dumps([prompt.text, prompt.messages]).encode()).hexdigest()[:12]


def plan_requests(config: RunConfig, task: Task, data: TaskData,
                  wanted: dict[tuple[str, float], int] | None = None) -> list[GenerationRequest]:
    """Every path of the run, question by question (so a backend can reuse each question's prompt).

    `wanted` limits the plan to so many paths per (question id, temperature); absent keys get none.
    """
    zero_shot = config.zero_shot or not data.exemplars
    stop = task.stop(zero_shot, chat=config.prompt_format is PromptFormat.chat)
    requests = []
    for question in data.questions:
        prompt = build_prompt(question.text, data.exemplars, config.prompt_format, zero_shot,
                              task.zero_shot_instruction())
        for temperature in config.settings():
            count = config.paths_at(temperature) if wanted is None else wanted.get((question.id, temperature), 0)
            for index in range(count):
                params = SamplingParams(temperature=temperature, top_p=config.top_p, top_k=config.top_k,
                                        max_tokens=config.max_tokens, stop=stop,
                                        seed=path_seed(config.seed, question.id, temperature, index))
                requests.append(GenerationRequest(question.id, temperature, index, prompt, params))
    return requests


ProgressHook = Callable[[Generation], None]


def run_experiment(config: RunConfig, run_dir: Path | None = None,
                   on_start: Callable[[int, int], None] | None = None,
                   on_path: ProgressHook | None = None, *, task: Task | None = None,
                   records: Sequence[dict[str, Any]] | None = None, record_ids: Sequence[str] | None = None,
                   backend: Backend | None = None) -> Path:
    """Generate every path the store lacks. Returns the run directory.

    Questions are loaded and validated, and the store checked, before the backend starts.
    `on_start(pending, already_stored)` and `on_path(generation)` report progress. `task` (a Task object)
    replaces config.task; `records` (in-memory records, named by `record_ids` if given) replace the data
    file; `backend`, a backend already started, is used and left open (the caller owns it).
    """
    task = task or config.get_task()
    data = config.load(task) if records is None else task.load(
        None, config.split, config.offset, config.limit, config.shots_from_data, records=records, ids=record_ids)
    given_backend = backend
    # Everything a typo could break is checked before the run directory records any setting.
    check_backend_name(config.backend)
    if config.backend == "local":
        check_model_name(config.model)
    run_dir = Path(run_dir) if run_dir else config.default_run_dir(task)
    prepare_run_dir(run_dir)
    extract = task.extractor(config.flexible)
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

    def answer_of(text: str, question) -> str | None:
        """The path's answer; a pattern past its time limit gives none (the path is stored all the same:
        it was paid for), and is not tried again this run."""
        if timeouts:
            return None
        try:
            return extract(text, question)
        except PatternTimeout as exc:
            timeouts.append(exc)
            audit.event("extraction_timeout", pattern=exc.pattern)
            return None

    with run_lock(run_dir), SampleStore(run_dir) as store:
        store.bind_config({**config.identity(task), "prompt": prompt_digest(config, task, data)},
                          config.stored_settings())
        store.add_questions(StoredQuestion(q.id, q.position, q.text, q.gold) for q in data.questions)
        store.set_selection(list(questions), {k: list(v) for k, v in data.neutralised.items()})
        audit = AuditLog(run_dir, config.identity_hash(task), config.log_prompts)
        audit.event("run_start", backend=config.backend, model=config.model, task=task.name,
                    questions=len(data.questions), neutralised_records=len(data.neutralised))
        backend = given_backend

        def started_backend():
            nonlocal backend
            if backend is None:
                backend = create_backend(config.backend, config.backend_config(
                    store.tokens_used(), run_dir, config.identity_hash(task)))
            return backend

        def pending_of(requests: list[GenerationRequest]) -> list[GenerationRequest]:
            stored = store.stored_keys()
            return [r for r in requests if (r.question_id, r.temperature, r.path_index) not in stored]

        def generate(requests: list[GenerationRequest]) -> None:
            pending = pending_of(requests)
            if on_start:
                on_start(len(pending), len(requests) - len(pending))
            if not pending:
                return
            for item in started_backend().generate(pending):
                group = item if isinstance(item, tuple) else (item,)  # a record's paths: stored together
                store.add_paths(StoredPath(
                    question_id=g.request.question_id, temperature=g.request.temperature,
                    path_index=g.request.path_index, seed=g.request.params.seed, text=g.text,
                    answer=answer_of(g.text, questions[g.request.question_id]),
                    prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens, latency_s=g.latency_s,
                    finish_reason=g.finish_reason, logprob_sum=g.logprob_sum,
                    backend=backend.name, model=backend.model) for g in group)
                for generation in group:
                    request = generation.request
                    audit.event("generation", backend=backend.name, model=backend.model,
                                request_id=f"{request.question_id}/{request.temperature:g}/{request.path_index}",
                                prompt_tokens=generation.prompt_tokens,
                                completion_tokens=generation.completion_tokens,
                                latency_s=round(generation.latency_s, 4), status=generation.finish_reason,
                                prompt=logged_prompt(request.prompt) if config.log_prompts else None,
                                completion=generation.text)
                    if on_path:
                        on_path(generation)

        try:
            rule = config.stopping_rule()
            if rule is None:
                generate(plan_requests(config, task, data))
            else:
                # Each round goes in one wave (all temperatures together); the greedy path goes with the first.
                wanted = {**({(q, GREEDY_TEMPERATURE): 1 for q in questions} if config.greedy else {}),
                          **_next_round(config, rule, store, list(questions))}

                def wave(counts: dict[tuple[str, float], int]) -> list[GenerationRequest]:
                    return pending_of(plan_requests(config, task, data, counts))

                first = True
                while wanted:
                    generate(plan_requests(config, task, data, _fill_wave(wanted, wave, started_backend,
                                                                          rule.max_paths, first)))
                    first = False
                    wanted = _next_round(config, rule, store, list(questions))
        except BaseException as exc:
            audit.event("run_error", error=type(exc).__name__)
            raise
        else:
            audit.event("run_end")
            if timeouts:
                raise ExtractionFailed(f"{timeouts[0]}: paths from then on are stored without an answer "
                                       f"(they abstain) in {run_dir}")
        finally:
            if backend is not None and backend is not given_backend:
                backend.close()
            audit.close()
    return run_dir


def _fill_wave(wanted: dict[tuple[str, float], int],
               plan: Callable[[dict[tuple[str, float], int]], list[GenerationRequest]],
               backend: Callable[[], object], max_paths: int, first: bool) -> dict[tuple[str, float], int]:
    """A wave below a batch job's minimum of records, grown by one path per undecided question at a time
    (up to the maximum) until it reaches the minimum: always for the first wave (a run too small for a job
    is refused), for later ones only while the paths at batch price cost no more than the wave would on
    demand (twice the batch price). Otherwise the wave is left as it is and goes on demand."""
    asked = plan(wanted)
    if not asked:
        return wanted
    minimum = getattr(backend(), "min_records_per_job", 1)
    count = getattr(backend(), "count_records", len)
    if count(asked) >= minimum:
        return wanted
    grown = wanted
    while True:
        bigger = {key: n if key[1] == GREEDY_TEMPERATURE else min(n + 1, max_paths) for key, n in grown.items()}
        if bigger == grown:
            break
        grown = bigger
        requests = plan(grown)
        if not first and len(requests) > 2 * len(asked):
            break
        if count(requests) >= minimum:
            log.info(f"adaptive stopping: wave grown from {len(asked)} to {len(requests)} paths to reach "
                     f"a batch job's minimum of {minimum} records")
            return grown
    if not first:
        log.warning(f"adaptive stopping: a wave of {len(asked)} paths ({count(asked)} records) is below a "
                    f"batch job's minimum of {minimum} records: it goes on demand, at twice the batch price")
    return wanted


def _next_round(config: RunConfig, rule: StoppingRule, store: SampleStore,
                question_ids: list[str]) -> dict[tuple[str, float], int]:
    """Record the questions the rule has decided; how many paths each undecided one needs next."""
    answers = store.answers_in_order()
    decided = store.stops(rule.name)
    wanted = {}
    for qid in question_ids:
        for temperature in config.temperatures:
            if (qid, temperature) in decided:
                continue
            sofar = answers.get((qid, temperature), [])
            used = next((k for k in range(1, len(sofar) + 1) if rule.should_stop(sofar[:k])), None)
            if used is not None:
                reason = "max paths" if used >= rule.max_paths and not rule.decides(sofar[:used]) else "rule"
                store.record_stop(qid, temperature, rule.name, used, len(sofar), reason)
            else:
                wanted[(qid, temperature)] = min(len(sofar) + config.round_size, rule.max_paths)
    return wanted
