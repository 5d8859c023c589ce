"""`selfconsistency import`: another tool's stored generations (`sources/`) become a run directory that
`report`, `simulate`, `export` and `compare` read like any run.

Each question is parsed by the task (its text, its gold) and each path's answer re-read by the task's own
extractor, outside its thinking, as a run reads its own paths (`math_answers.read_answer`). The raw
response is the path's text; the tool's own extracted answer stays beside it (`source_answer`, per path
where the tool records one) and the tool's own per-question results in the question's `source`;
`export` shows both. The run has one sampling temperature (the tool's, or `--temperature`), no greedy
path (neither tool has one: lm-eval's score-first is the first *sampled* path), and a settings identity
bound to the file's digest: importing the same file again adds nothing, another file is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .answer_classes import Classifier
from .extract import PatternTimeout
from .math_answers import read_answer, split_thinking
from .report_tables import interval_text
from .runlock import prepare_run_dir
from .settings import RunSettings, SamplingSettings
from .sources import Source, SourceError, SourceQuestion, read_inspect, read_lm_eval
from .sources.base import has_control, plain_name
from .store import StoredPath, StoredQuestion, writer
from .tasks import Question, Task, get_task
from .tasks.answer_types import answer_type
from .vote import TIE_RULES

Tool = Literal["lm-eval", "inspect"]


@dataclass(frozen=True)
class Imported:
    """What an import did: where the run is, from what, and what the reading found."""

    run_dir: Path
    source: Source
    task: str
    temperature: float
    paths_per_question: int
    new_paths: int
    identical: int  # questions with more than one path, all of the same text
    disagreements: tuple[int, int]  # paths whose tool answer differs from the task's reading, of those compared
    timeouts: int  # paths whose answer pattern ran out of time (stored without an answer)
    notes: tuple[str, ...]  # what the import assumed (stored with the run too)


def read_source(tool: Tool, path: Path, task: Task) -> Source:
    """The file read by its tool's reader (lm-eval's doc ids become the task split's question ids)."""
    return read_lm_eval(path, task.spec.data.split) if tool == "lm-eval" else read_inspect(path)


def default_import_dir(source: Source) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source.task).strip("._-")[:40] or "task"
    return Path("runs") / f"import-{source.tool}-{slug}-{source.sha256[:10]}"


def import_run(tool: Tool, path: Path, task_name: str = "gsm8k", run_dir: Path | None = None,
               temperature: float | None = None, model: str | None = None, ties: str = "random") -> Imported:
    """Read `path` with `tool`'s reader and store it as a run (in `run_dir`, a new or empty directory, or a
    run of the same file); `temperature` replaces (or supplies) the one the file records, `model` the
    model's name; `ties` is the run's tie rule (--ties), which every reader of the run then follows."""
    _check_options(temperature, model)
    if ties not in TIE_RULES:
        raise BadOption(f"--ties {ties!r}: give one of {', '.join(TIE_RULES)}")
    task = get_task(task_name)
    source = read_source(tool, path, task)
    sampled_at, given = _temperature(source, temperature)
    n = max(len(q.paths) for q in source.questions)
    if n < 2:
        raise SourceError(f"{source.where}: one path per question (a task without repeats, an eval of one epoch): "
                          "nothing to vote over")
    plain = task.plain_golds()  # for another tool's targets, which hold the answer alone
    questions = [(plain if q.plain_gold else task).parse(q.where, _record(task, q), q.position,
                                                          task.spec.data.split, qid=q.id)[0]
                 for q in source.questions]
    model = model or source.model
    try:
        settings = RunSettings.from_stored({
            "backend": source.tool, "model": model, "task": task_name, "prompt_format": source.prompt_format,
            "paths": n, "temperatures": [sampled_at], "greedy": False, "seed": 0, "top_k": 0,
            "max_tokens": source.max_tokens or SamplingSettings().max_tokens, "top_p": source.top_p or 1.0,
            "ties": ties})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][-1:]))}: {e['msg']}" for e in exc.errors())
        raise SourceError(f"{source.where}: its generation settings are not a run's: {problems}") from None
    extract, tags = task.ruled_extractor(settings.experiment.flexible), task.thinking_tags()
    timeouts = 0

    def stored(question: Question, index: int, path) -> StoredPath:
        nonlocal timeouts
        try:
            answer, rule, thinking = read_answer(path.text, question, extract, tags)
        except PatternTimeout:
            timeouts += 1
            answer, rule, thinking = None, None, split_thinking(path.text, tags)
        return StoredPath(question_id=question.id, temperature=sampled_at, path_index=index, seed=0,
                          text=path.text, answer=answer, prompt_tokens=path.prompt_tokens,
                          completion_tokens=path.completion_tokens, latency_s=path.latency_s,
                          finish_reason=path.finish_reason, logprob_sum=None, backend=source.tool, model=model,
                          answer_rule=rule, ended_thinking=thinking.unclosed, source_answer=path.source_answer)

    paths = [[stored(q, i, p) for i, p in enumerate(sq.paths)] for q, sq in zip(questions, source.questions,
                                                                                 strict=True)]
    notes = [*source.notes, f"sampling temperature {sampled_at:g}: " + (
        "given with --temperature" if given else f"as {source.tool} recorded it")]
    short = [(q.id, len(q.paths)) for q in source.questions if len(q.paths) < n]
    if short:
        named = ", ".join(f"question {qid} has {count} of {n} paths in the file" for qid, count in short[:5])
        notes.append(f"{named}{f' (and {len(short) - 5} more)' if len(short) > 5 else ''}: the report leaves "
                     f"{'it' if len(short) == 1 else 'them'} out; the file holds no more paths, so importing it "
                     "again adds none")
    if source.max_tokens is None:
        notes.append(f"no token limit recorded: the run's max_tokens shows this tool's default "
                     f"({settings.sampling.max_tokens}), not the source's")
    run_dir = Path(run_dir) if run_dir else default_import_dir(source)
    existed = run_dir.exists()
    fresh = not existed or (run_dir.is_dir() and not any(run_dir.iterdir()))
    prepare_run_dir(run_dir)
    try:
        new = _store(run_dir, task, plain, source, questions, paths, settings, sampled_at, model, notes)
    except BaseException:
        if fresh:  # no half-made run directory is left behind
            _remove_new_run(run_dir, created=not existed)
        raise
    identical = sum(len(ps) > 1 and len({p.text for p in ps}) == 1 for ps in paths)
    return Imported(run_dir, source, task.name, sampled_at, n, new, identical,
                    _disagreements(paths, source.questions), timeouts, tuple(notes))


def _remove_new_run(run_dir: Path, created: bool) -> None:
    """The files an import that failed made in a directory it found empty, and the directory if it `created`
    it and nothing else is there."""
    from .runlock import LOCK_FILE
    from .safe_files import RUN_MARKER
    from .store import STORE_FILENAME

    for name in (RUN_MARKER, LOCK_FILE, *(STORE_FILENAME + end for end in ("", "-wal", "-shm", "-journal"))):
        (run_dir / name).unlink(missing_ok=True)
    if created:
        try:
            run_dir.rmdir()
        except OSError:  # something else is there now: left as it is
            pass


def _store(run_dir: Path, task: Task, plain: Task, source: Source, questions: list[Question],
           paths: list[list[StoredPath]], settings: RunSettings, sampled_at: float, model: str,
           notes: list[str]) -> int:
    """The questions and paths stored in the run directory; how many paths are new."""
    identity = {"task": task.name, "task_spec": task.fingerprint(), "imported_from": source.tool,
                "source_sha256": source.sha256, "temperature": sampled_at, "model": model}
    with writer(run_dir, create=True) as store:
        store.bind_config(identity, settings.stored_settings())
        store.add_questions(StoredQuestion(q.id, q.position, q.text, q.gold, dict(q.groups) or None, source=sq.source)
                            for q, sq in zip(questions, source.questions, strict=True))
        neutralised = {**task.neutralised(), **plain.neutralised()}
        store.set_selection([q.id for q in questions], {k: list(v) for k, v in neutralised.items()})
        store.record_import({"tool": source.tool, "file": str(source.file), "sha256": source.sha256,
                             "task": source.task, "model": source.model, "generation": source.generation,
                             "figures": [asdict(f) for f in source.figures], "notes": notes})
        new = sum(store.add_paths(question_paths) for question_paths in paths)
        kind = answer_type(task.spec.answer.type)
        if kind.equivalence:  # answers written many ways (math): their classes, as a run stores them
            Classifier(store, kind.equivalence()).update([q.id for q in questions], {q.id: q.gold for q in questions})
    return new


class BadOption(ValueError):
    """An option of the import the user gave (--temperature, --model) that cannot be used: the message names it."""


def _check_options(temperature: float | None, model: str | None) -> None:
    """The user's own options, refused before the file is read: a temperature that is no sampling
    temperature, a model name with control characters (which would land raw in the report and plot)."""
    if temperature is not None and not (math.isfinite(temperature) and 0.0 < temperature <= 2.0):
        why = " (greedy decoding: its repeats are one path, not samples)" if temperature == 0 else ""
        raise BadOption(f"--temperature {temperature:g} is not a sampling temperature{why}: give the one the paths "
                        "were sampled at, in (0, 2]")
    if model is not None and any("\ud800" <= ch <= "\udfff" for ch in model):  # bytes the shell gave undecoded
        raise BadOption("--model is not UTF-8 text: give the model's name as plain text")
    if model is not None and has_control(model):
        raise BadOption(f"--model holds control characters (escape sequences, line breaks, bidirectional "
                        f"overrides): give the model's name as plain text, such as {plain_name(model)!r}")
    if model is not None and not model.strip():
        raise BadOption("--model is empty: give the model's name")


def _temperature(source: Source, given: float | None) -> tuple[float, bool]:
    """The paths' sampling temperature and whether the user gave it; SourceError when it is unknown or
    not a sampling temperature."""
    temperature = given if given is not None else source.temperature
    if temperature is None:
        raise SourceError(f"{source.where}: {source.tool} recorded no sampling temperature; give --temperature T, "
                          "the one the paths were sampled at")
    if not 0.0 < temperature <= 2.0:
        why = " (greedy decoding: its repeats are one path, not samples)" if temperature == 0 else ""
        raise SourceError(f"{source.where}: paths sampled at temperature {temperature:g}{why}; self-consistency "
                          "votes over samples at a temperature in (0, 2]: give --temperature if the file is wrong")
    return temperature, given is not None


def _record(task: Task, source: SourceQuestion) -> dict[str, Any]:
    """The record the task parses: the tool's own (lm-eval's doc), or a sample's input and target put into
    the task's question and gold fields."""
    if not source.plain_gold:
        return source.record
    record: dict[str, Any] = {}
    for field_name, value in ((task.spec.fields.question, source.record["input"]),
                              (task.spec.fields.gold, source.record["target"])):
        *parents, last = field_name.split(".")
        inner = record
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[last] = value
    return record


def _disagreements(paths: list[list[StoredPath]], questions: tuple[SourceQuestion, ...]) -> tuple[int, int]:
    """How many paths the tool and the task read differently, of those where the tool recorded an answer:
    per path (inspect_ai's scorer), or the first path (lm-eval's score-first filter)."""
    differ = compared = 0
    for stored, question in zip(paths, questions, strict=True):
        first = question.source.get("filters", {}).get("score-first", {}).get("answer")
        pairs = [(p.source_answer, p.answer) for p in stored if p.source_answer is not None]
        if first is not None and stored:
            pairs.append((first, stored[0].answer))
        compared += len(pairs)
        differ += sum(tool != ours for tool, ours in pairs)
    return differ, compared


def import_markdown(imported: Imported, results: dict[str, Any]) -> tuple[str, list[str]]:
    """What was imported and the tool's own figures beside the exact maj@k at the same k (Markdown), and
    what the reading found and assumed (lines)."""
    source, n = imported.source, imported.paths_per_question
    lines = [f"Imported {len(source.questions)} questions × {n} paths from {source.tool} ({source.task}, "
             f"`{source.model}`, T={imported.temperature:g}) into {imported.run_dir} "
             f"({imported.new_paths} new paths); answers re-read by task {imported.task}'s extractor, "
             f"{source.tool}'s own kept beside them (`selfconsistency export`).", ""]
    curve = {p["k"]: p for p in (results["sampled"][0]["curve"] if results.get("sampled") else [])}
    if source.figures and curve:
        lines += [f"| {source.tool}'s own figure | paths it used | its value | exact maj@k here (every k-subset) | "
                  "95% interval |", "|---|---|---:|---:|---:|"]
        for figure in source.figures:
            k = figure.first_k or 1
            used = (f"first {k} of {n}, voted" if figure.vote else "the first path alone") if figure.first_k else \
                "each path alone, averaged over all"
            point = curve.get(k)
            ours = f"maj@{k} {point['exact']:.1%}" if point else "–"
            interval = interval_text((point.get("low"), point.get("high")) if point else None)
            lines.append(f"| {figure.name} | {used} | {figure.value:.1%} | {ours} | {interval} |")
    notes = []
    differ, compared = imported.disagreements
    if compared:
        notes.append(f"{source.tool}'s own extraction and the task's differ on {differ} of the {compared} paths "
                     f"{source.tool} read an answer from one by one (`export` shows both)")
    if imported.identical:
        notes.append(f"warning: {imported.identical} question(s) have {n} paths of one and the same text: the source "
                     "sent one seed with every request (lm-eval's local-completions sends seed 1234 unless given "
                     "--gen_kwargs seed=None), so its repeats are not independent samples")
    if imported.timeouts:
        notes.append(f"{imported.timeouts} path(s) ran the task's answer pattern out of time: stored without an "
                     "answer")
    return "\n".join(lines), notes + list(imported.notes)
