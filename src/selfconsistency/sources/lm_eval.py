"""lm-evaluation-harness's `--log_samples` output (`samples_<task>_<date>.jsonl`) of a generate_until task
with `repeats`, such as `gsm8k_cot_self_consistency`.

The file has one line per document *and filter*: `doc_id`, `doc` (the dataset record), `target`,
`arguments` ({"gen_args_0": {"arg_0": prompt, "arg_1": generation kwargs}}), `resps` ([[the repeats'
generations]]), `filtered_resps` (the filter's output), `filter` (its name), `metrics` (their names) and
each metric's value. Every filter's line of a document carries the same `resps`: they are the paths, read
once; what each filter made of them (lm-eval's own extracted answer: the first path's for `score-first`,
the vote over the first k for `maj@k`) and its metrics are kept per question.

lm-eval records no token counts, latencies or finish reasons per generation, and has no greedy path: the
`score-first` filter scores the first *sampled* generation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .base import (
    Source,
    SourceError,
    SourceFigure,
    SourcePath,
    SourceQuestion,
    check_sizes,
    number_of,
    parse_json,
    plain_name,
    read_source_file,
    text_of,
)

MAX_DOC_ID = 10**12 - 1  # an index into a dataset (a run's question position is an SQLite integer)
_MAJORITY = re.compile(r"maj@(\d+)$")
_FIRST = "score-first"


def read_lm_eval(path: Path, split: str) -> Source:
    """The paths and lm-eval's own results of a samples file; question ids are `<split>-<doc_id>` (zero-padded
    to five digits), the ids a run of the same data file gives its questions."""
    path = Path(path)
    data = read_source_file(path, "an lm-eval samples file")
    if data.startswith(b"PK\x03\x04"):
        raise SourceError(f"{path}:1: a zip archive (an inspect_ai .eval log?), not lm-eval's samples JSONL: "
                          "use `selfconsistency import inspect` for inspect_ai logs")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"{path}:{line}: not UTF-8 text") from None
    docs: dict[int, dict[str, Any]] = {}
    generation: dict[str, Any] | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if not docs and line.strip() in ("{", "["):
            raise SourceError(f"{where}: one JSON document over many lines, not JSON lines (an inspect_ai .json "
                              "log? use `selfconsistency import inspect`)")
        sample = parse_json(where, line)
        _check_line(where, sample)
        kwargs = sample["arguments"]["gen_args_0"].get("arg_1")
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        if generation is None:
            generation = kwargs
        elif kwargs != generation:
            raise SourceError(f"{where}: generation settings {kwargs} differ from the first line's {generation}: "
                              "one import is one sampling setting")
        paths = [text_of(where, r, "a response") for r in sample["resps"][0]]
        doc_id = sample["doc_id"]
        seen = docs.get(doc_id)
        if seen is None:
            docs[doc_id] = seen = {"where": where, "doc": sample["doc"], "paths": paths, "filters": {},
                                   "target": sample.get("target")}
        elif seen["paths"] != paths or seen["doc"] != sample["doc"]:
            raise SourceError(f"{where}: doc_id {doc_id} has other responses or another doc than at "
                              f"{seen['where']}: not one run's samples")
        name = str(sample.get("filter", ""))
        if name in seen["filters"]:
            raise SourceError(f"{where}: doc_id {doc_id} and filter {name!r} again (first at {seen['where']})")
        seen["filters"][name] = _filter_result(sample)
    if not docs:
        raise SourceError(f"{path}: no samples in the file")
    _check_repeats(docs)
    questions = [_question(path, split, doc_id, doc) for doc_id, doc in docs.items()]
    check_sizes(str(path), questions)
    generation = generation or {}
    temperature = number_of(generation.get("temperature"))
    notes = ["lm-eval records no token counts, latencies or finish reasons per generation: they are stored "
             "as 0 and 'unknown'",
             "no greedy path: lm-eval's score-first filter scores the first sampled generation, kept with "
             "lm-eval's other filters as its own results"]
    if generation.get("do_sample") is False:
        notes.append("the task's generation settings say do_sample: false")
    first = next(iter(docs.values()))
    return Source(tool="lm-eval", file=path, where=first["where"], sha256=hashlib.sha256(data).hexdigest(),
                  task=_task_name(path), model=_model_name(path), prompt_format="completion",
                  temperature=temperature, max_tokens=_int_or_none(generation.get("max_gen_toks")),
                  top_p=number_of(generation.get("top_p")), questions=tuple(questions),
                  figures=_figures(docs, len(first["paths"])), notes=tuple(notes),
                  generation={k: v for k, v in generation.items() if _plain(v)})


def _check_line(where: str, sample: Any) -> None:
    """A samples line of a generate_until task: else SourceError saying what it is instead."""
    if not isinstance(sample, dict):
        raise SourceError(f"{where}: expected a JSON object (a line of lm-eval's samples_*.jsonl)")
    if "eval" in sample and "samples" in sample or "version" in sample and "eval" in sample:
        raise SourceError(f"{where}: an inspect_ai eval log, not lm-eval samples: use "
                          "`selfconsistency import inspect`")
    missing = [key for key in ("doc_id", "doc", "arguments", "resps") if key not in sample]
    if missing:
        raise SourceError(f"{where}: not a line of lm-eval's --log_samples output (no {', '.join(missing)})")
    if not isinstance(sample["doc"], dict):
        raise SourceError(f"{where}: doc is not a JSON object")
    arguments, resps = sample["arguments"], sample["resps"]
    if not isinstance(arguments, dict) or not isinstance(arguments.get("gen_args_0"), dict):
        raise SourceError(f"{where}: arguments hold no gen_args_0 (a request's prompt and settings)")
    if len(arguments) != 1 or not isinstance(resps, list) or len(resps) != 1 or not isinstance(resps[0], list):
        raise SourceError(f"{where}: {len(arguments) if isinstance(arguments, dict) else '?'} requests per "
                          "document: a loglikelihood (multiple-choice) task; only generate_until tasks sample "
                          "paths to vote on")
    doc_id = sample["doc_id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, int) or not 0 <= doc_id <= MAX_DOC_ID:
        raise SourceError(f"{where}: doc_id {json.dumps(doc_id)[:40]} is not a document's index (lm-eval's doc_id "
                          f"is an integer from 0 to {MAX_DOC_ID:,})")
    if not resps[0]:
        raise SourceError(f"{where}: no responses for doc_id {doc_id}")


def _check_repeats(docs: dict[int, dict[str, Any]]) -> None:
    """lm-eval samples every document of a task `repeats` times: a document with another number of responses
    is a cut or edited file, refused (its question could never have all the paths the others have)."""
    counts = Counter(len(doc["paths"]) for doc in docs.values())
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        other_id, other = next((i, d) for i, d in docs.items() if len(d["paths"]) != usual)
        usual_id, like = next((i, d) for i, d in docs.items() if len(d["paths"]) == usual)
        raise SourceError(f"{other['where']}: doc_id {other_id} has {len(other['paths'])} responses, doc_id "
                          f"{usual_id} (line {like['where'].rsplit(':', 1)[1]}) has {usual}: lm-eval samples every "
                          "document the task's `repeats` times, so this file is cut or edited; import the file "
                          "lm-eval wrote")


def _filter_result(sample: dict[str, Any]) -> dict[str, Any]:
    """What one filter made of a document's responses (its answer, lm-eval's own extraction) and the
    metrics lm-eval scored it with."""
    filtered = sample.get("filtered_resps")
    answer = filtered[0] if isinstance(filtered, list) and len(filtered) == 1 else filtered
    metrics = sample.get("metrics") if isinstance(sample.get("metrics"), list) else []
    return {"answer": answer if _plain(answer) else str(answer),
            **{m: sample[m] for m in metrics if isinstance(m, str) and m in sample and _plain(sample[m])}}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool) or (
        isinstance(value, list) and all(_plain(v) for v in value))


def _question(path: Path, split: str, doc_id: int, doc: dict[str, Any]) -> SourceQuestion:
    where = doc["where"]
    return SourceQuestion(id=f"{split}-{doc_id:05d}", position=doc_id, record=doc["doc"],
                          paths=tuple(SourcePath(text) for text in doc["paths"]),
                          source={"target": doc["target"], "filters": doc["filters"]}, where=where)


def _figures(docs: dict[Any, dict[str, Any]], n: int) -> tuple[SourceFigure, ...]:
    """lm-eval's own accuracy per filter (the mean of its first metric over the documents), and which of
    each document's paths it used."""
    out = []
    names = list(dict.fromkeys(name for doc in docs.values() for name in doc["filters"]))
    for name in names:
        values = [number_of(next((v for k, v in doc["filters"].get(name, {}).items() if k != "answer"), None))
                  for doc in docs.values()]
        if not values or any(v is None for v in values):
            continue
        majority = _MAJORITY.match(name)
        if majority:
            k, vote = min(int(majority.group(1)), n), True
        elif name == _FIRST:
            k, vote = 1, False
        else:
            continue
        out.append(SourceFigure(name, sum(values) / len(values), k, len(values), vote))
    return tuple(out)


def _task_name(path: Path) -> str:
    """The task, from lm-eval's file name `samples_<task>_<date>.jsonl`."""
    stem = path.stem
    if stem.startswith("samples_"):
        stem = stem.removeprefix("samples_").rsplit("_", 1)[0] or stem
    return plain_name(stem) or "unknown"


def _model_name(path: Path) -> str:
    """lm-eval writes samples under `<output_path>/<model name, sanitised>/`: that folder's name."""
    return plain_name(path.parent.name) or "unknown"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
