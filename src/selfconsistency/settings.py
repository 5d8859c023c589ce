"""A run's settings, declared once and grouped by concern: what is asked (experiment), how paths are
sampled (sampling), when a question stops getting paths (stopping), what may be spent (budget), and the
chosen backend's own options (declared in that backend's module, see `backends`).

    RunSettings(model="qwen2.5-0.5b-instruct", paths=10, temperatures=[0.7], stop="beta:0.95")

Settings may be given flat (each name belongs to exactly one group) or as the groups themselves. The
`run` command's options, validation and the run's identity (what a store is bound to) all follow from
the fields' declarations (`options.Cli`, `options.Identity`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from . import allocation
from .backends import backend_spec, backend_specs
from .backends.base import BackendConfig, BackendError, BudgetSettings
from .costs import Price, PriceTable
from .models import DEFAULT_MODEL, PACKAGED_MODELS
from .options import (
    BACKEND_PANEL,
    EXPERIMENT,
    INPUT,
    OUTPUT,
    SAMPLING,
    SETTINGS_COMMANDS,
    STOPPING,
    BackendOptions,
    Cli,
    Identity,
    cli_fields,
    identity_of,
)
from .prompts import PromptFormat
from .stopping import StoppingRule, parse_rule
from .tasks import Task, TaskData, builtin_task_files, get_task
from .tasks.spec import check_thinking_tags

GREEDY_TEMPERATURE = 0.0
# Upper bounds of the settings that size a run: each is far beyond any real run, and keeps a typo
# (--paths 100000000) from planning more work than memory holds.
MAX_PATHS = 10_000  # per question and temperature
MAX_QUESTIONS = 10_000_000
MAX_PLANNED_PATHS = 20_000_000  # in one invocation: questions x settings x paths


def _slug(text: str) -> str:
    """One safe path component from a name a config chose (`../../x` must not leave runs/)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "task"


def parse_temperatures(value: str) -> tuple[float, ...]:
    """--temperatures as typed: comma-separated numbers."""
    try:
        temperatures = tuple(float(t) for t in value.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--temperatures: expected comma-separated numbers, got {value!r}") from None
    if not temperatures:
        raise ValueError(f"--temperatures: no temperature in {value!r}; give at least one, e.g. 0.7")
    return temperatures


def parse_thinking_tags(value: str) -> tuple[str, str]:
    """--thinking-tags as typed: OPEN,CLOSE."""
    return check_thinking_tags(tuple(part.strip() for part in value.split(",")))  # type: ignore[arg-type]


# Settings some commands ignore (`Cli.not_in`): `answer` and `serve` vote over sampled paths and write no
# report (no greedy baseline, no accuracy curve); `serve`'s questions come from requests, not a data file.
_NO_REPORT = ("answer", "serve")
_SERVE_ASKS = ("serve",)


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExperimentSettings(_Group):
    """Which questions, and how they are put to the model."""

    task: Annotated[str, Cli(f"A built-in task ({', '.join(builtin_task_files())}) or a task config file "
                             "(.yaml/.toml); see 'selfconsistency tasks'.", EXPERIMENT, argument=True)] = "gsm8k"
    data: Annotated[str | None, Cli(
        "Local JSONL file of the task (GSM8K: 'question' and 'answer' ending in '#### N'). Without it the "
        "task's dataset is loaded from the Hugging Face hub.", EXPERIMENT, cli_type=Path, parse=str,
        not_in=_SERVE_ASKS)] = None
    shots_from_data: Annotated[int | None, Field(ge=1, le=1000), Identity(), Cli(
        "Use the data's first K items as the exemplars (their explanations as rationales) and evaluate the "
        "rest; items without explanations make it zero-shot CoT.", EXPERIMENT, not_in=_SERVE_ASKS)] = None
    split: Annotated[str | None, Cli("Split name: the hub split to load, and the prefix of question ids.",
                                     EXPERIMENT, default_shown="test", not_in=_SERVE_ASKS)] = None
    offset: Annotated[int, Field(ge=0, le=MAX_QUESTIONS), Cli("Skip this many questions first.", EXPERIMENT,
                                                               not_in=_SERVE_ASKS)] = 0
    limit: Annotated[int | None, Field(ge=1, le=MAX_QUESTIONS), Cli("Use at most this many questions.", EXPERIMENT,
                                                  not_in=_SERVE_ASKS)] = None
    prompt_format: Annotated[PromptFormat, Identity(stored=lambda f: f.value), Cli(
        "completion: 'Q: ...\\nA: ...' few-shot text; chat: the exemplars as chat turns.", EXPERIMENT)
    ] = PromptFormat.completion
    zero_shot: Annotated[bool, Identity(), Cli(
        "No exemplars; zero-shot chain of thought (\"Let's think step by step.\").", EXPERIMENT)] = False
    flexible: Annotated[bool, Identity(), Cli("When a path has no 'The answer is N', take its last number.",
                                              EXPERIMENT)] = True
    thinking_tags: Annotated[tuple[str, str] | None, AfterValidator(
        lambda tags: None if tags is None else check_thinking_tags(tags)), Identity(only_if_set=True), Cli(
        "The model's thinking tags, OPEN,CLOSE (default: the task's, <think>,</think>): a path's thinking "
        "block is kept but never searched for its answer.", EXPERIMENT, cli_type=str,
        parse=parse_thinking_tags)] = None
    strict_input: Annotated[bool, Cli(
        "Refuse questions whose text forges prompt structure (Q:/A: lines, 'The answer is', chat tokens, "
        "control characters, over-long text) instead of neutralising them.", INPUT)] = False
    max_question_chars: Annotated[int, Field(ge=100, le=1_000_000), Identity(), Cli(
        "Longest question text accepted; longer text is cut (refused with --strict-input).", INPUT)] = 8000
    ties: Annotated[Literal["random", "abstain"], Cli(
        "How a tie for the lead counts: random (the question's seeded tie-break order picks one of the tied "
        "answers) or abstain (a tie is no answer, as some graders count it).", OUTPUT, cli_type=str)] = "random"
    subset_runs: Annotated[int, Field(ge=1, le=10_000), Cli("Random subsets per k for mean ± std.", OUTPUT,
                                                 not_in=_NO_REPORT)] = 100
    log_prompts: Annotated[bool, Cli("Write prompt and completion text into the audit log (audit.jsonl) too.",
                                     OUTPUT)] = False


def _sampling_temperature(value: float) -> float:
    if not 0.0 < value <= 2.0:
        raise ValueError(f"sampling temperature {value:g} is outside (0, 2]: self-consistency samples at T > 0 "
                         "(the greedy path, T=0, is --greedy)")
    return value


Temperature = Annotated[float, AfterValidator(_sampling_temperature)]


class SamplingSettings(_Group):
    """How each path is sampled."""

    paths: Annotated[int, Field(ge=1, le=MAX_PATHS), Cli(
        "Sampled paths per question at each temperature (the maximum, with --stop).", SAMPLING)] = 5
    temperatures: Annotated[tuple[Temperature, ...], Cli(
        "Comma-separated sampling temperatures in (0, 2], e.g. 0.5,0.7,1.0.", SAMPLING, cli_type=str,
        parse=parse_temperatures, default_shown="0.7")] = (0.7,)
    greedy: Annotated[bool, Cli("Also run the greedy (T=0) baseline path.", SAMPLING, not_in=_NO_REPORT)] = True
    top_p: Annotated[float, Field(gt=0.0, le=1.0), Identity(), Cli("Nucleus sampling mass (1 = off).",
                                                                   SAMPLING)] = 1.0
    top_k: Annotated[int, Field(ge=0, le=1_000_000), Identity(), Cli("Sample among the k most likely tokens (0 = off).",
                                                       SAMPLING)] = 40
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), Identity(), Cli("Most tokens generated per path.",
                                                                          SAMPLING)] = 256
    seed: Annotated[int, Field(ge=0, le=2**63 - 1), Identity(), Cli(
        "Run seed: each path's seed derives from it and the path's (question, temperature, index).",
        SAMPLING)] = 0

    @field_validator("temperatures")
    @classmethod
    def _distinct(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(value)) != len(value):
            raise ValueError("temperatures repeat")
        return tuple(value)


class StoppingSettings(_Group):
    """Adaptive stopping: sample in rounds, stop a question once its rule fires."""

    stop: Annotated[str | None, Cli(
        "Sample in rounds and stop a question once this rule fires: beta:T (Adaptive-Consistency), "
        "dirichlet:T, esc:W (Early-Stopping SC), entropy:T, fixed:N.", STOPPING)] = None
    min_paths: Annotated[int, Field(ge=1, le=MAX_PATHS), Cli(
        "With --stop: never stop before this many paths; with a budget: every question's first paths.",
        STOPPING)] = 1
    round_size: Annotated[int, Field(ge=1, le=MAX_PATHS), Cli(
        "With --stop: paths asked per undecided question per round.", STOPPING)] = 4
    # Another name for --paths that says what it is under a rule or a budget; taken into `paths`, never stored.
    max_paths: Annotated[int | None, Field(ge=1, le=MAX_PATHS), Cli(
        "With --stop or a budget: the most paths a question may get (what --paths is then).", STOPPING)] = None
    budget_paths: Annotated[int | None, Field(ge=1, le=MAX_PLANNED_PATHS), Cli(
        "Spend this many sampled paths over the questions (at each temperature), in waves, each path going "
        "where it is most likely to change or settle a vote (--allocate); --paths is the most one question "
        "may get.", STOPPING, not_in=_SERVE_ASKS)] = None  # a budget spends over a data file's questions
    allocate: Annotated[str | None, Cli(
        "With --budget-paths, or --max-cost as the amount to spend: who gets the next paths. blend-asc "
        "(Blend-ASC, the default), asc (the least settled vote first) or uniform (fixed N).", STOPPING,
        default_shown="blend-asc", not_in=_SERVE_ASKS)] = None
    wave_paths: Annotated[int | None, Field(ge=1, le=MAX_PLANNED_PATHS), Cli(
        "With a budget: paths per wave at each temperature (default: a quarter of the questions, at least a "
        "batch job's minimum of records and enough records to go as a job, not on demand). Smaller waves adapt "
        "more, larger ones wait less.", STOPPING,
        not_in=_SERVE_ASKS)] = None

    @field_validator("stop")
    @classmethod
    def _rule_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rule(value)
        return value

    @field_validator("allocate")
    @classmethod
    def _allocator_known(cls, value: str | None) -> str | None:
        if value is not None:
            allocation.scorer(value)
        return value

    def budgeted(self, max_cost: float | None) -> bool:
        """Whether paths are spent as a budget: --budget-paths, or --allocate with --max-cost."""
        return self.budget_paths is not None or (self.allocate is not None and max_cost is not None)


class UnknownBackendOptions(BackendOptions):
    """The options a stored run recorded for a backend this process has not registered (a plugin)."""

    model_config = ConfigDict(extra="allow")


GROUPS: dict[str, type[BaseModel]] = {"experiment": ExperimentSettings, "sampling": SamplingSettings,
                                      "stopping": StoppingSettings, "budget": BudgetSettings}


# A rule's setting given without a rule says a budget would take it too; where no budget can be given
# (SelfConsistency and `serve`, api.run_config), `without_budget` leaves that out of the message.
_OR_BUDGET, _OR_BUDGET_PATHS = " or a budget, neither of which is given", " or --budget-paths"


def without_budget(message: str) -> str:
    """A settings error as said where budgets are not taken."""
    return message.replace(_OR_BUDGET, ", which is not given").replace(_OR_BUDGET_PATHS, "")


class RunSettings(BaseModel):
    """Everything a run is made of. Frozen; validated when built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Annotated[str, Identity(), Cli("Where paths are generated.", BACKEND_PANEL)] = "local"
    model: Annotated[str, Identity(), Cli(
        f"Packaged model name ({', '.join(PACKAGED_MODELS)}), a path to a GGUF file, or the backend's model id.",
        BACKEND_PANEL)] = DEFAULT_MODEL
    experiment: ExperimentSettings = ExperimentSettings()
    sampling: SamplingSettings = SamplingSettings()
    stopping: StoppingSettings = StoppingSettings()
    budget: BudgetSettings = BudgetSettings()
    options: SerializeAsAny[BackendOptions] = BackendOptions()  # the backend's own options model

    @model_validator(mode="before")
    @classmethod
    def _grouped(cls, data: Any, info: ValidationInfo) -> Any:
        """Flat settings into their groups; the backend's options into its own options model."""
        if not isinstance(data, dict):
            return data
        flat = dict(data)
        out: dict[str, Any] = {key: flat.pop(key) for key in ("backend", "model") if key in flat}
        for group in (*GROUPS, "options"):
            given = flat.pop(group, None)
            out[group] = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
        for group, model in GROUPS.items():
            out[group].update({key: flat.pop(key) for key in list(flat) if key in model.model_fields})
        most = out["stopping"].pop("max_paths", None)
        if most is not None:
            if not (out["stopping"].get("stop") or out["stopping"].get("budget_paths")
                    or out["stopping"].get("allocate")):
                raise ValueError(f"--max-paths is the most paths a question may get under --stop{_OR_BUDGET}: give "
                                 f"--paths for a fixed number of paths, or add a rule{_OR_BUDGET_PATHS}")
            if out["sampling"].get("paths", most) != most:
                raise ValueError(f"--max-paths {most} and --paths {out['sampling']['paths']} are the same setting: "
                                 "give one")
            out["sampling"]["paths"] = most
        name = out.get("backend", "local")
        stored = (info.context or {}).get("stored", False)
        try:
            options = backend_spec(name).options
        except BackendError as exc:
            if not stored:
                raise ValueError(str(exc)) from None
            options = UnknownBackendOptions  # a plugin this process does not know: its run is still readable
            out["options"].update(flat)
            flat = {}
        out["options"].update({key: flat.pop(key) for key in list(flat) if key in options.model_fields})
        out["options"] = options(**out["options"])
        for key in flat:  # another backend's option would be silently ignored: refused
            owners = [other for other, spec in backend_specs().items() if key in spec.options.model_fields]
            if owners:
                raise ValueError(f"--{key.replace('_', '-')} is an option of the {' and '.join(owners)} "
                                 f"backend{'s' * (len(owners) > 1)}, not of {name}")
        out.update(flat)  # anything else: refused as unknown
        return out

    @model_validator(mode="after")
    def _consistent(self) -> RunSettings:
        stopping, sampling = self.stopping, self.sampling
        budgeted = stopping.budgeted(self.budget.max_cost)
        # settings of a rule or a budget without one would be silently ignored
        for names, applies, what in ((("round_size",), stopping.stop, "--stop, which is not given: add a rule "
                                      "(e.g. --stop beta:0.95)"),
                                     (("min_paths",), stopping.stop or budgeted, f"--stop{_OR_BUDGET}: add a "
                                      f"rule (e.g. --stop beta:0.95){_OR_BUDGET_PATHS}"),
                                     (("wave_paths",), budgeted, "a budget, which is not given: add "
                                      "--budget-paths (or --allocate with --max-cost)")):
            given = [f"--{name.replace('_', '-')}" for name in names
                     if getattr(stopping, name) != StoppingSettings.model_fields[name].default]
            if given and not applies:
                raise ValueError(f"{given[0]} applies with {what}, or leave it out")
        if stopping.allocate is not None and not budgeted:
            raise ValueError("--allocate spends a budget: give --budget-paths N (paths over the questions) or "
                             "--max-cost $ (the amount to spend)")
        if (stopping.stop or budgeted) and stopping.min_paths > sampling.paths:
            what = "no question could ever stop" if not budgeted else "no question may get that many"
            raise ValueError(f"--min-paths {stopping.min_paths} is more than --paths {sampling.paths}: {what}; "
                             "lower --min-paths or raise --paths")
        if budgeted and stopping.stop and stopping.round_size != StoppingSettings.model_fields["round_size"].default:
            raise ValueError("--round-size sizes --stop's rounds, and a budget sends waves instead: give "
                             "--wave-paths, or leave --round-size out")
        if not sampling.temperatures and not sampling.greedy:
            raise ValueError("no temperatures and no greedy path: nothing to run")
        return self

    # -- identity: what decides each path's text ----------------------------------------------------

    def identity(self, task: Task) -> dict[str, object]:
        """The settings that decide each path's text and answer: a store made with others is refused."""
        return {"task": task.name, "task_spec": task.fingerprint(), **identity_of(self),
                **identity_of(self.experiment), **identity_of(self.sampling), **self.options.identity()}

    def settings_hash(self, task: Task) -> str:
        canonical = json.dumps(self.identity(task), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:10]

    def flat(self) -> dict[str, Any]:
        """Every setting by its own name (as `RunSettings(**flat)` takes them back)."""
        dumped = self.model_dump(mode="json")
        return {"backend": self.backend, "model": self.model,
                **{key: value for group in (*GROUPS, "options") for key, value in dumped[group].items()}}

    def stored_settings(self) -> dict[str, object]:
        """The settings as the store keeps them: flat, each identity field as recorded (a --base-url
        without credentials)."""
        flat = self.flat()
        return {**flat, **{key: value for key, value in self.options.identity().items() if key in flat}}

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> RunSettings:
        """A copy with some settings changed, by their own names (`paths`, `converse`...), validated again."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self)(**{**self.flat(), **update})

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> RunSettings:
        """Settings as a store kept them, for reading the run (a price file since moved is not checked)."""
        return cls.model_validate(stored, context={"stored": True})

    # -- what a run does with them --------------------------------------------------------------------

    def backend_config(self, tokens_spent: tuple[int, int] = (0, 0), job_state: Any = None,
                       settings_hash: str = "run", submit: bool = True, ledger: Any = None) -> BackendConfig:
        """`tokens_spent`: the (prompt, completion) tokens the run already used (store.tokens_used());
        `ledger`: the run's spend ledger (store.ledger())."""
        return BackendConfig(model=self.model, options=self.options, budget=self.budget,
                             tokens_spent=sum(tokens_spent), tokens_spent_split=tokens_spent,
                             settings_hash=settings_hash, job_state=job_state, submit=submit, ledger=ledger)

    def default_run_dir(self, task: Task) -> Path:
        model = Path(self.model).stem if "/" in self.model else self.model
        return Path("runs") / f"{_slug(task.name)}-{_slug(model)}-{self.settings_hash(task)}"

    def get_task(self) -> Task:
        return get_task(self.experiment.task, max_chars=self.experiment.max_question_chars,
                        strict_input=self.experiment.strict_input)

    def load(self, task: Task) -> TaskData:
        e = self.experiment
        return task.load(Path(e.data) if e.data else None, e.split, e.offset, e.limit, e.shots_from_data)

    def stopping_rule(self) -> StoppingRule | None:
        s = self.stopping
        return parse_rule(s.stop, s.min_paths, self.sampling.paths) if s.stop else None

    def budget_plan(self, questions: int, min_records: int = 1, total: int | None = None) -> allocation.Budget | None:
        """A budgeted run's plan at each temperature over `questions` questions (None: not budgeted);
        `total`: the paths a --max-cost budget came to (else --budget-paths). On a batch backend whose jobs
        need `min_records` records, the first wave (every question's first paths at every temperature,
        and the greedy paths) is made big enough for a job, and so is every wave but the last; by default a
        wave is also no smaller than the backend's `on_demand_below` (a later wave smaller than that goes on
        demand, at twice the batch price)."""
        s = self.stopping
        if not s.budgeted(self.budget.max_cost):
            return None
        temperatures = max(1, len(self.sampling.temperatures))
        greedy = questions if self.sampling.greedy else 0
        first = max(s.min_paths, -(-max(0, min_records - greedy) // max(1, questions * temperatures)))
        as_a_job = max(min_records, getattr(self.options, "on_demand_below", 0))
        wave = s.wave_paths or max(-(-questions // 4), -(-as_a_job // temperatures), 1)
        why = (f"a batch job needs {min_records:,} records: the first wave gives every question {first} paths at "
               "each temperature" if first > s.min_paths else "")
        return allocation.Budget(total=total or s.budget_paths or 1, min_paths=min(first, self.sampling.paths),
                                 max_paths=self.sampling.paths, wave=wave,
                                 allocator=s.allocate or allocation.DEFAULT_ALLOCATOR, why_first=why)

    def stops_name(self) -> str | None:
        """The name a run's stops are recorded under: the rule's, a budget's (its allocator, and its rule
        when both are given), or None for a fixed number of paths."""
        s = self.stopping
        if s.budgeted(self.budget.max_cost):  # the amount is part of the name: a new amount is a new plan
            amount = f"{s.budget_paths}" if s.budget_paths is not None else f"${self.budget.max_cost:g}"
            name = f"budget:{s.allocate or allocation.DEFAULT_ALLOCATOR}:{amount}"
            return f"{name}+{self.stopping_rule().name}" if s.stop else name
        return s.stop and self.stopping_rule().name

    def price(self, on_demand: bool = False, priced_as: str | None = None) -> Price | None:
        """The model's price in the run's price table: a batch backend's batch price (its on-demand price
        with `on_demand`, for the calls a batch run makes one at a time); None when the table has none
        (the embedded models). `priced_as`: the foundation model the run's calls were billed as, as the
        provider named it (an application inference profile's, kept in the store)."""
        try:
            batch = not on_demand and backend_spec(self.backend).batch
        except BackendError:  # a plugin's stored run, read where the plugin is not installed
            batch = False
        try:
            return PriceTable.from_file(self.budget.prices_file).price(
                self.model, batch=batch, base_model=priced_as or getattr(self.options, "base_model", None))
        except KeyError:
            return None

    def settings(self) -> tuple[float, ...]:
        """Temperatures in report order: greedy first."""
        return ((GREEDY_TEMPERATURE,) if self.sampling.greedy else ()) + self.sampling.temperatures

    def paths_at(self, temperature: float) -> int:
        return 1 if temperature == GREEDY_TEMPERATURE else self.sampling.paths


# -- what each command takes -----------------------------------------------------------------------


def request_field(group: type[BaseModel], name: str) -> Any:
    """The type of a request field that carries setting `name` of `group` (serve's body): the setting's own
    type and bounds, optional, and strict (JSON's "3" or true is not a number)."""
    field = group.model_fields[name]
    bounds = [m for m in field.metadata if not isinstance(m, Cli | Identity)]
    return Annotated[field.annotation | None, Field(strict=True), *bounds]



def declared_settings() -> dict[str, tuple[FieldInfo, Cli]]:
    """Every setting the commands offer: the run's groups', then each backend's own. Backends that share
    an option (inherited from one declaration) share it on the command line too."""
    models: list[type[BaseModel]] = [RunSettings, *GROUPS.values()]
    models += [spec.options for spec in backend_specs().values()]
    declared: dict[str, tuple[FieldInfo, Cli]] = {}
    for model in models:
        for name, (field, mark) in cli_fields(model).items():
            if name in declared and (declared[name][1] != mark or declared[name][0].default != field.default):
                raise TypeError(f"option --{name.replace('_', '-')} is declared twice, differently ({model.__name__})")
            declared[name] = (field, mark)
    return declared


def unused_settings(command: str) -> dict[str, tuple[str, ...]]:
    """The settings `command` ignores (declared with `Cli(not_in=...)`): name -> the commands that use it.
    The Python API takes what `serve` takes (questions come with each call; answers vote over sampled paths)."""
    return {name: tuple(c for c in SETTINGS_COMMANDS if c not in mark.not_in)
            for name, (_, mark) in declared_settings().items() if command in mark.not_in}


def one_temperature(temperatures: Sequence[float], command: str, setting: str = "--temperatures") -> None:
    """`answer`, `serve` and the Python API vote over the paths of one temperature: paths at others would
    be paid for and never used."""
    if len(temperatures) > 1:
        raise ValueError(f"{command} samples at one temperature: give one to {setting} (e.g. 0.7)")
