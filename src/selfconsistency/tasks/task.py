"""A task made from its spec: read and validate the data, render questions, pick exemplars, and read
a path's answer the way the spec's answer type says."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import regex
from jinja2.sandbox import SecurityError

from ..extract import compile_user_pattern, search_user_pattern
from ..sanitize import DEFAULT_MAX_CHARS, UnsafeInput, label_markers, sanitize, visible
from .answer_types import Extractor, RuledExtractor, answer_type
from .base import CHAT_CONTEXT, CONTEXT_ROLES, CompletionLabels, DataError, Exemplar, Question
from .records import Located, read_records
from .sandbox import MAX_LENGTH, TemplateSandbox, TemplateTimeout, render
from .spec import ADDED_FIELDS, ExemplarSpec, TaskSpec, load_exemplar_file

_ENV = TemplateSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class TaskData:
    questions: list[Question]  # the selected questions to evaluate
    exemplars: tuple[Exemplar, ...]  # empty: zero-shot chain of thought
    neutralised: dict[str, tuple[str, ...]] = field(default_factory=dict)  # record -> what was defused


def _as_record(index: int, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"record {index}: expected a mapping of fields, got {type(record).__name__}")
    return record


class _CleanRecord(Mapping):
    """A record as a template reads it: every string is neutralised when read (`{{ record.hint }}` is
    data like the question), nested objects and lists too, and so are keys (`record.items()` shows them).
    Read-only, and the raw values stay hidden."""

    __slots__ = ("_values", "_clean", "_raw_keys")

    def __init__(self, values: dict[str, Any], clean: Callable[[str], str]):
        self._values = values
        self._clean = clean
        self._raw_keys: dict[str, str] | None = None  # neutralised key -> the record's key

    def _keys(self) -> dict[str, str]:
        if self._raw_keys is None:
            self._raw_keys = {self._clean(str(key)): key for key in self._values}
        return self._raw_keys

    def __getitem__(self, key: str) -> Any:
        # The template's own names (`record.hint`) are looked up as written; iteration yields clean keys.
        raw_key = key if key in self._values else self._keys()[key]
        return _clean_value(self._values[raw_key], self._clean)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _clean_value(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return _CleanRecord(value, clean)
    if isinstance(value, list | tuple):
        return tuple(_clean_value(item, clean) for item in value)
    return value


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"missing field {dotted!r}")
        value = value[part]
    return value


class Task:
    def __init__(self, spec: TaskSpec, base_dir: Path, max_chars: int = DEFAULT_MAX_CHARS,
                 strict_input: bool = False):
        self.spec = spec
        self.base_dir = base_dir
        self.max_chars = max_chars
        self.strict_input = strict_input
        self._neutralised: dict[str, tuple[str, ...]] = {}
        # the task's own labels are prompt structure a question must not forge, as Q: and A: are
        self._markers = label_markers(spec.prompt.question_label, spec.prompt.answer_label)
        self.config_file: Path | None = None  # set by get_task: named in template errors
        gold_pattern = spec.answer.gold_pattern
        self._gold_pattern = compile_user_pattern(gold_pattern, regex.DOTALL) if gold_pattern else None
        try:
            self._template = _ENV.from_string(spec.prompt.template)
        except (jinja2.TemplateError, RecursionError) as exc:
            raise DataError(f"task {spec.name}: bad prompt template: {exc}") from None

    @property
    def name(self) -> str:
        return self.spec.name

    def neutralised(self) -> dict[str, tuple[str, ...]]:
        """What `parse` neutralised since the last `load`, by record location (`file:line`)."""
        return dict(self._neutralised)

    def plain_golds(self) -> Task:
        """This task reading each gold as the answer alone, without its gold_pattern: another tool's target
        (inspect_ai's gsm8k sample has target '18', not the record's '... #### 18')."""
        if self._gold_pattern is None:
            return self
        answer = self.spec.answer.model_copy(update={"gold_pattern": None})
        task = Task(self.spec.model_copy(update={"answer": answer}), self.base_dir, self.max_chars, self.strict_input)
        task.config_file = self.config_file
        return task

    def fingerprint(self) -> str:
        """Changes whenever the spec would change prompts, golds or answers."""
        dumped = self.spec.model_dump(mode="json")
        defaults = TaskSpec.model_validate({"name": self.spec.name}).model_dump(mode="json")
        for part, names in ADDED_FIELDS.items():
            for name in names:
                if dumped[part][name] == defaults[part][name]:
                    del dumped[part][name]
        return hashlib.sha256(json.dumps(dumped, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()[:12]

    def stop(self, zero_shot: bool, chat: bool) -> tuple[str, ...]:
        """Few-shot completion prompts stop where the exemplars end their rationale; otherwise only a
        forged next question stops a path (chat models end their turn themselves)."""
        forged = "\n" + self.spec.prompt.question_label.strip()
        return (forged,) if zero_shot or chat else tuple(self.spec.prompt.stop)

    def zero_shot(self, zero_shot: bool, chat: bool, exemplars: tuple[Exemplar, ...]) -> bool:
        """Whether prompts go without exemplars: asked for, none configured, or a chat prompt of a task
        whose exemplars are for the completion format only."""
        return zero_shot or not exemplars or (chat and not self.spec.prompt.chat_exemplars)

    def labels(self) -> CompletionLabels:
        prompt = self.spec.prompt
        return CompletionLabels(prompt.question_label, prompt.answer_label, prompt.rationale_separator)

    def instruction(self) -> str | None:
        """The answer type's own zero-shot instruction (None: 'End with' the answer statement)."""
        return answer_type(self.spec.answer.type).instruction

    def thinking_tags(self, override: tuple[str, str] | None = None) -> tuple[str, str] | None:
        """The tags of a thinking block: the run's (the model's) if given, else the task's."""
        return override or self.spec.answer.thinking

    def answer_statement(self, answer: str) -> str:
        return self.spec.prompt.answer_statement.format(answer=answer)

    def zero_shot_instruction(self) -> str:
        """How a zero-shot path must end; "" for answers with no answer statement (free)."""
        placeholder = answer_type(self.spec.answer.type).placeholder
        return "" if placeholder is None else self.answer_statement(placeholder)

    # -- reading ---------------------------------------------------------------------------------

    def _choices(self, record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        mapping = self.spec.fields.choices
        if mapping is None:
            return ()
        if isinstance(mapping, list):  # CSV-style: columns named by their labels
            raw: Any = {column: _get(record, column) for column in mapping}
        else:
            raw = _get(record, mapping)
        if isinstance(raw, dict):
            pairs = [(str(label), str(text)) for label, text in raw.items()]
        elif isinstance(raw, list) and raw and all(isinstance(c, dict) for c in raw):
            pairs = [(str(c["label"]), str(c["text"])) for c in raw]
        elif isinstance(raw, list) and len(raw) <= len(string.ascii_uppercase):
            pairs = [(string.ascii_uppercase[i], str(text)) for i, text in enumerate(raw)]
        elif isinstance(raw, list):
            raise ValueError(f"{len(raw)} options; a question needs 2 to 10")
        else:
            raise ValueError(f"choices must be a list or a map, got {type(raw).__name__}")
        pairs = [(label.strip().upper(), text.strip()) for label, text in pairs if text.strip()]
        if not 2 <= len(pairs) <= 10:
            raise ValueError(f"{len(pairs)} options; a question needs 2 to 10")
        if len({label for label, _ in pairs}) != len(pairs):
            raise ValueError("option labels repeat")
        for label, _ in pairs:  # labels stand in the prompt and are what paths answer with
            if len(label) != 1 or label not in string.ascii_uppercase:
                raise ValueError(f"option label {label[:20]!r} is not a single letter A-Z")
        return tuple(pairs)

    def _gold(self, record: dict[str, Any], choices: tuple[tuple[str, str], ...]) -> tuple[str | None, int]:
        """The canonical gold and how many labels it has; (None, 1) for a record without one (absent,
        null or empty): a question to answer, not to score."""
        try:
            value = _get(record, self.spec.fields.gold)
        except KeyError:
            return None, 1
        if value is None or (isinstance(value, str) and not value.strip()):
            return None, 1
        raw = str(value).strip()
        if self._gold_pattern is not None:
            match = search_user_pattern(self._gold_pattern, raw, "gold_pattern")
            if not match:
                # the pattern as written in the config (a repr would double each backslash)
                raise ValueError(f"gold {raw[-40:]!r} does not match gold_pattern '{self.spec.answer.gold_pattern}'")
            raw = match.group(1).strip()
        return answer_type(self.spec.answer.type).gold(raw, self.spec.answer, choices)

    def _render(self, question: str, choices: tuple[tuple[str, str], ...], record: Mapping[str, Any]) -> str:
        try:
            return render(self._template, question=question, choices=choices, record=record).strip()
        except UnsafeInput:
            raise
        except TemplateTimeout as exc:
            raise ValueError(f"prompt template of {self.config_file or self.name} refused: {exc}") from None
        except SecurityError as exc:
            raise ValueError(f"prompt template of {self.config_file or self.name} refused by the sandbox: "
                             f"{exc}") from None
        except Exception as exc:  # noqa: BLE001 - a template can raise anything ({{ 1/0 }}); the user fixes it
            raise ValueError(f"prompt template of {self.config_file or self.name} failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None

    def parse(self, where: str, record: dict[str, Any], position: int, split: str,
              qid: str | None = None, turns: bool = False) -> tuple[Question, str | None]:
        """A question (and its explanation, if any) from one record; DataError names the record. `qid`: the
        id the caller gives it (the Python API's), instead of the task's id field or its position. `turns`:
        the record may carry chat turns before the question (CHAT_CONTEXT); only callers who own the
        conversation pass them (the Python API, serve), never a data file."""
        try:
            text = _get(record, self.spec.fields.question)
            if isinstance(text, int | float) and not isinstance(text, bool):
                text = str(text)  # a question such as 1234 read from JSON is still text
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"empty {self.spec.fields.question!r}")
            text = self._clean(where, text)
            if not visible(text):
                raise ValueError(f"{self.spec.fields.question!r} is empty once neutralised (it held only "
                                 "control characters, separators or other hidden text)")
            if CHAT_CONTEXT in record and not turns:
                raise ValueError(f"a {CHAT_CONTEXT!r} field: data records may not carry chat roles (a system "
                                 "prompt, earlier turns); only the Python API and serve, whose callers own the "
                                 "conversation, pass them")
            choices = tuple((label, self._clean(where, option)) for label, option in self._choices(record))
            gold, n_answers = self._gold(record, choices)
            if qid is None:
                qid = str(_get(record, self.spec.fields.id)) if self.spec.fields.id else f"{split}-{position:05d}"
            explanation = None
            if self.spec.fields.explanation and self.spec.fields.explanation in record:
                explanation = self._clean(where, str(_get(record, self.spec.fields.explanation))) or None
            body = self._render(text, choices, _CleanRecord(record, lambda value: self._clean(where, value)))
            # Filters can rebuild structure from neutralised data (`wordwrap` moving a "Q:" to a line's start,
            # `striptags` turning "&lt;|im_start|&gt;" into a chat token): what the template rendered is
            # neutralised again, as a whole.
            body = self._clean(where, body, MAX_LENGTH)
            context = self._context(where, record.get(CHAT_CONTEXT)) if turns else ()
            groups = self._groups(record)
        except UnsafeInput as exc:
            raise DataError(f"{where}: refused by --strict-input: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise DataError(f"{where}: {self.name} record unusable: {message}") from None
        return Question(qid, position, body, gold, choices, n_answers, context, groups), explanation

    def _groups(self, record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The record's values of the task's grouping fields; a record without one is in no group of it
        (a question sent through the API or the server)."""
        out = []
        for name in self.spec.fields.groups:
            try:
                value = _get(record, name)
            except KeyError:
                continue
            if value is not None:
                out.append((name, str(value)))
        return tuple(out)

    def _context(self, where: str, turns: Any) -> tuple[tuple[str, str], ...]:
        """The chat turns before the question, neutralised like it: a system message first, if any."""
        if turns is None:
            return ()
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise ValueError(f"{CHAT_CONTEXT!r} must be a list of {{role, content}} turns")
        out = []
        for index, turn in enumerate(turns):
            role, content = turn.get("role"), turn.get("content")
            if role not in CONTEXT_ROLES or (role == "system" and index > 0) or not isinstance(content, str):
                raise ValueError(f"{CHAT_CONTEXT!r} turn {index}: a system message (first only), user or "
                                 "assistant turn with text content is expected")
            if content.strip():
                out.append((role, self._clean(where, content)))
        return tuple(out)

    def _clean(self, where: str, text: str, max_chars: int | None = None) -> str:
        cleaned = sanitize(text, max_chars or self.max_chars, self.strict_input, self._markers)
        if cleaned.issues:
            self._neutralised[where] = tuple(sorted(set(self._neutralised.get(where, ()) + cleaned.issues)))
        return cleaned.text

    def load(self, data: Path | None, split: str | None = None, offset: int = 0, limit: int | None = None,
             shots_from_data: int | None = None, records: Sequence[dict[str, Any]] | None = None,
             ids: Sequence[str] | None = None) -> TaskData:
        """Validate every record before returning any; the first K records become exemplars when asked.

        `records` are in-memory records read instead of any file (`ids`, if given, name them instead of
        the task's id field or their position)."""
        split = split or self.spec.data.split
        self._neutralised = {}
        source = Path(data) if data is not None else self._default_data()
        located: list[Located]
        if records is not None:
            source = None
            located = [(f"record {index}", _as_record(index, record)) for index, record in enumerate(records)]
        elif source is not None:
            located = list(read_records(source, self._format_of(data)))
        else:
            located = list(self._hub_records(split))
        if ids is not None and len(ids) != len(located):
            raise ValueError("one id per record")
        parsed = [self.parse(where, record, position, split, None if ids is None else ids[position],
                             turns=records is not None)
                  for position, (where, record) in enumerate(located)]
        wheres = [where for where, _ in located]
        if not parsed:
            raise DataError(f"{source or self.name}: no records {'given' if records is not None else 'found'}")
        seen: dict[str, str] = {}
        for (question, _), where in zip(parsed, wheres, strict=True):
            if question.id in seen:
                raise DataError(f"{where}: duplicate id {question.id!r} (first at {seen[question.id]})")
            seen[question.id] = where
        shots = shots_from_data or self.spec.prompt.shots_from_data
        if shots and shots >= len(parsed):
            raise DataError(f"{source or self.name}: {shots} exemplars from the data leave nothing to "
                            f"evaluate ({len(parsed)} records); lower --shots-from-data")
        if shots:
            exemplars = self._exemplars_from(parsed[:shots], wheres[:shots])
            used = wheres[:shots]
            parsed, wheres = parsed[shots:], wheres[shots:]
        else:
            exemplars = self.configured_exemplars()
            used = []
        end = None if limit is None else offset + limit
        selected = [q for q, _ in parsed[offset:end]]
        if not selected:
            raise DataError(f"offset {offset} is past the {len(parsed)} questions of {self.name}")
        used += wheres[offset:end]  # only what reaches a prompt is reported as neutralised
        neutralised = {where: self._neutralised[where] for where in used if where in self._neutralised}
        return TaskData(selected, exemplars, neutralised)

    def _format_of(self, data: Path | None) -> str | None:
        """A file given on the command line is read by its extension; the task's format is for its own
        default data (and files of unknown extension)."""
        if data is not None and Path(data).suffix.lower() in (".csv", ".json", ".jsonl"):
            return None
        return self.spec.data.format

    def input_files(self, data: Path | None = None) -> dict[Path, str]:
        """The files a run of this task reads, each with what it is: the data (`data`, or the config's own
        data path), the config file and its exemplars file. What no output may overwrite."""
        files = {}
        source = Path(data) if data is not None else self._default_data()
        if source is not None:
            files[source] = "the run's data file"
        if self.config_file is not None:
            files[self.config_file] = "the task's config"
        if self.spec.prompt.exemplars_file:
            files[self.base_dir / self.spec.prompt.exemplars_file] = "the task's exemplars file"
        return files

    def _default_data(self) -> Path | None:
        return self.base_dir / self.spec.data.path if self.spec.data.path else None

    def _hub_records(self, split: str) -> list[Located]:
        from .hub import hub_records

        if self.spec.data.hub is None:
            raise DataError(f"task {self.name} needs --data PATH (it has no default data or hub dataset)")
        return hub_records(*self.spec.data.hub, split)

    # -- exemplars -------------------------------------------------------------------------------

    def _exemplars_from(self, items: list[tuple[Question, str | None]], wheres: list[str]) -> tuple[Exemplar, ...]:
        """Data records as exemplars: explanation + answer statement. Without explanations: none.
        The gold is data too (a text gold is only normalised): it is neutralised like the question."""
        if any(explanation is None for _, explanation in items):
            return ()
        unlabelled = [q.id for q, _ in items if q.gold is None]
        if unlabelled:  # an exemplar's rationale ends with its gold answer
            raise DataError(f"{self.name}: exemplar record {unlabelled[0]} from the data has no gold answer; "
                            "put labelled records first or lower --shots-from-data")
        exemplars = []
        for (question, explanation), where in zip(items, wheres, strict=True):
            try:
                answer = self._clean(where, self._display(question.gold))
            except UnsafeInput as exc:
                raise DataError(f"{where}: refused by --strict-input: {exc}") from None
            exemplars.append(Exemplar(question.text, f"{explanation} {self.answer_statement(answer)}"))
        return tuple(exemplars)

    def _display(self, gold: str) -> str:
        return answer_type(self.spec.answer.type).display(gold)

    def configured_exemplars(self) -> tuple[Exemplar, ...]:
        specs: list[ExemplarSpec] = list(self.spec.prompt.exemplars or [])
        if self.spec.prompt.exemplars_file:
            specs = load_exemplar_file(self.base_dir / self.spec.prompt.exemplars_file)
        out = []
        for index, item in enumerate(specs):
            try:
                if isinstance(item.question, dict):  # a record shaped like the data's; needs no gold
                    record = item.question
                    body = self._render(str(_get(record, self.spec.fields.question)).strip(),
                                        self._choices(record), record)
                else:
                    body = self._render(item.question, (), {})
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"task {self.name}, exemplar {index}: {exc}") from None
            out.append(Exemplar(body, item.rationale))
        return tuple(out)

    # -- answers ---------------------------------------------------------------------------------

    def extractor(self, flexible: bool = True) -> Extractor:
        return answer_type(self.spec.answer.type).extractor(self.spec.answer, flexible)

    def ruled_extractor(self, flexible: bool = True) -> RuledExtractor:
        """A path's answer and the rule that read it (None for types that name no rules)."""
        kind = answer_type(self.spec.answer.type)
        if kind.ruled is not None:
            return kind.ruled(self.spec.answer, flexible)
        extract = kind.extractor(self.spec.answer, flexible)
        return lambda text, question: (extract(text, question), None)
