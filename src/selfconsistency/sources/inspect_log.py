"""inspect_ai eval logs with `epochs` > 1: each sample's epochs are its paths. Read without inspect_ai.

Two formats (inspect_ai's `log/_recorders`): `.json`, one JSON document (`version`, `status`, `eval`,
`plan`, `results`, `stats`, `samples`, `reductions`); and `.eval`, a zip archive holding `header.json`
(the document without samples), one `samples/<id>_epoch_<n>.json` per sample and epoch, `summaries.json`
and `reductions.json`. inspect_ai writes its members zstd-compressed (zip method 93), which Python's
zipfile reads only from 3.14: `zip_members.py` reads them with `zstandard`, deflated ones (older logs) with
zipfile.

A sample carries `input` (text or chat messages), `target`, `output` (`completion`, the choices' stop
reason, `usage`, `time`) and `scores` (each scorer's `value` and its own extracted `answer`); long strings
may be stored once in the sample's `attachments` and referred to as `attachment://<hash>`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from ..settings import MAX_PATHS
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
from .lm_eval import MAX_DOC_ID
from .zip_members import read_member

_SAMPLE = re.compile(r"samples/(.+)_epoch_(\d+)\.json$")
_ATTACHMENT = "attachment://"
_STOP = {"stop": "stop", "max_tokens": "length", "model_length": "length"}


def read_inspect(path: Path) -> Source:
    path = Path(path)
    data = read_source_file(path, "an inspect_ai log")
    archive = data.startswith(b"PK\x03\x04")
    header, samples = (_eval_archive if archive else _json_log)(path, data)
    where = f"{path}:{'header.json' if archive else 1}"
    spec = header.get("eval")
    if not isinstance(spec, dict) or "task" not in spec or "model" not in spec:
        raise SourceError(f"{where}: not an inspect_ai eval log (no eval spec with task and model)")
    config = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    epochs = config.get("epochs")
    if not isinstance(epochs, int) or epochs < 2:
        raise SourceError(f"{where}: an eval log with {epochs or 1} epoch: each sample has one path; "
                          "self-consistency needs several (inspect eval --epochs N)")
    if epochs > MAX_PATHS:
        raise SourceError(f"{where}: an eval log with {epochs:,} epochs, more paths per question than a run holds "
                          f"({MAX_PATHS:,})")
    generate = {**_dict(header.get("plan"), "config"), **_dict(spec, "model_generate_config")}
    order = spec.get("dataset", {}).get("sample_ids") if isinstance(spec.get("dataset"), dict) else None
    questions, skipped = _questions(samples, order if isinstance(order, list) else [], epochs)
    check_sizes(str(path), questions)
    notes = [f"inspect_ai has no greedy path: the {epochs} epochs of a sample are its paths, in epoch order"]
    if skipped:
        notes.append(f"{len(skipped)} sample epoch(s) ended in an error and have no path: {', '.join(skipped[:5])}")
    if header.get("status") != "success":
        notes.append(f"the log's status is {header.get('status')!r}: only its finished samples are imported")
    return Source(tool="inspect_ai", file=path, where=where, sha256=hashlib.sha256(data).hexdigest(),
                  task=plain_name(str(spec["task"])) or "unknown", model=plain_name(str(spec["model"])) or "unknown",
                  prompt_format="chat",
                  temperature=number_of(generate.get("temperature")),
                  max_tokens=generate.get("max_tokens") if isinstance(generate.get("max_tokens"), int) else None,
                  top_p=number_of(generate.get("top_p")), questions=tuple(questions),
                  figures=_figures(header, epochs), notes=tuple(notes),
                  generation={k: v for k, v in generate.items() if isinstance(v, str | int | float | bool)})


def _dict(value: Any, key: str) -> dict[str, Any]:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


# -- the two formats ---------------------------------------------------------------------------------------


def _json_log(path: Path, data: bytes) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"{path}:{line}: not UTF-8 text") from None
    try:
        log = parse_json(str(path), text, document=True)
    except SourceError as error:
        try:
            first = json.loads(text.lstrip().split("\n", 1)[0])
        except (ValueError, RecursionError):  # the first line alone is no JSON value either
            first = None
        if isinstance(first, dict) and "resps" in first:
            raise SourceError(f"{path}:1: lm-eval samples (JSON lines), not an inspect_ai log: use "
                              "`selfconsistency import lm-eval`") from None
        raise error from None
    if not isinstance(log, dict) or "eval" not in log:
        raise SourceError(f"{path}:1: not an inspect_ai eval log (no 'eval' spec)")
    keys, lines = _top_level_lines(path, text)
    samples = log.get("samples") or []
    if not isinstance(samples, list):
        raise SourceError(f"{path}:{keys['samples']}: 'samples' is not a list")
    log["results"] = _results(f"{path}:{keys.get('results', 1)}", log.get("results"))
    return log, [(f"{path}:{line}", sample) for line, sample in zip(lines, samples, strict=True)]


def _top_level_lines(path: Path, text: str) -> tuple[dict[str, int], list[int]]:
    """The line each key of the top-level object is on, and the line each element of its "samples" list
    starts on (the text is known to be valid JSON, each object's keys distinct: `parse_json`): walks the
    top-level object with raw_decode, value by value."""
    decoder, space = json.JSONDecoder(), re.compile(r"\s*")
    keys: dict[str, int] = {}
    lines, counted, line = [], 0, 1

    def skip(i: int) -> int:
        return space.match(text, i).end()

    def line_at(i: int) -> int:
        nonlocal counted, line
        line += text.count("\n", counted, i)
        counted = i
        return line

    i = skip(0) + 1
    while text[skip(i)] != "}":
        key, i = decoder.raw_decode(text, skip(i))
        keys[key] = line_at(i)
        i = skip(skip(i) + 1)  # past the colon
        if key == "samples" and text[i] == "[":
            i += 1
            while text[skip(i)] != "]":
                i = skip(i)
                lines.append(line_at(i))
                _, i = decoder.raw_decode(text, i)
                i = skip(i) + (text[skip(i)] == ",")
            i = skip(i) + 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i) + (text[skip(i)] == ",")
    return keys, lines


def _results(where: str, results: Any) -> Any:
    """The log's results (none in a log that did not finish): an object whose scores (inspect_ai's own
    figures), if given, are a list of scorers, each with a name and its metrics, each metric a number."""
    if results is None:
        return None
    if not isinstance(results, dict):
        raise SourceError(f"{where}: the results are {type(results).__name__}, not an object (inspect_ai's scores)")
    scores = results.get("scores")
    if scores is not None and not isinstance(scores, list):
        raise SourceError(f"{where}: the results' scores are {type(scores).__name__}, not a list of scorers")
    for index, score in enumerate(scores or []):
        if not isinstance(score, dict):
            raise SourceError(f"{where}: the results' scorer {index} is {json.dumps(score)[:40]}, not an object "
                              "(a scorer's name and metrics)")
        if not isinstance(score.get("name"), str):
            raise SourceError(f"{where}: the results' scorer {index} has no name (text)")
        metrics = score.get("metrics", {})
        if not isinstance(metrics, dict):
            raise SourceError(f"{where}: the results' scorer {index}'s metrics are {type(metrics).__name__}, not an "
                              "object of metrics")
        for name, metric in metrics.items():
            if not isinstance(metric, dict) or number_of(metric.get("value")) is None:
                raise SourceError(f"{where}: the results' scorer {index}'s metric {name!r} has no value that is a "
                                  "finite number")
    return results


def _eval_archive(path: Path, data: bytes) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, ValueError) as exc:
        raise SourceError(f"{path}: not a readable zip archive ({exc}): not an inspect_ai .eval log") from None
    name = "header.json" if "header.json" in members else "_journal/start.json"
    if name not in members:
        raise SourceError(f"{path}: a zip archive without header.json: not an inspect_ai .eval log")
    header = parse_json(f"{path}:{name}", read_member(path, data, members[name]), document=True)
    if not isinstance(header, dict):
        raise SourceError(f"{path}:{name}: not a JSON object")
    header["results"] = _results(f"{path}:{name}", header.get("results"))
    samples = []
    for member, info in members.items():
        if not member.startswith("samples/"):
            continue
        if not _SAMPLE.fullmatch(member):
            raise SourceError(f"{path}:{member}: a sample stored in chunks, which this import does not read: "
                              "convert the log with `inspect log convert --to json` and import that")
        where = f"{path}:{member}"
        samples.append((where, parse_json(where, read_member(path, data, info), document=True)))
    return header, samples


# -- samples -----------------------------------------------------------------------------------------------


def _questions(samples: list[tuple[str, Any]], order: list[Any],
               epochs: int) -> tuple[list[SourceQuestion], list[str]]:
    """Each sample id's epochs as its paths, in epoch order; the samples ordered as the dataset lists them."""
    by_id: dict[str, dict[str, Any]] = {}
    skipped = []
    for where, sample in samples:
        if not isinstance(sample, dict) or "id" not in sample or "epoch" not in sample:
            raise SourceError(f"{where}: not an inspect_ai sample (no id and epoch)")
        qid, epoch = _sample_id(where, sample["id"]), sample["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
            raise SourceError(f"{where}: epoch {json.dumps(epoch)[:40]} is not an epoch of this log (1 to {epochs})")
        entry = by_id.setdefault(qid, {"where": where, "id": sample["id"], "epochs": {}, "sample": sample})
        if entry["id"] != sample["id"]:
            raise SourceError(f"{where}: sample id {json.dumps(sample['id'])} and {json.dumps(entry['id'])} (at "
                              f"{entry['where']}) are one id as text: not one log's samples")
        if epoch in entry["epochs"]:
            raise SourceError(f"{where}: sample {qid} epoch {epoch} again (first at {entry['where']})")
        if sample.get("error"):
            skipped.append(f"{qid} epoch {epoch}")
            continue
        entry["epochs"][epoch] = (where, sample)
    rank = {str(sid): index for index, sid in enumerate(order)}
    entries = sorted(by_id.values(), key=lambda e: (rank.get(str(e["id"]), len(rank)), str(e["id"])))
    questions = []
    for position, entry in enumerate(entries):
        first = entry["sample"]
        where = entry["where"]
        attachments = first.get("attachments") if isinstance(first.get("attachments"), dict) else {}
        paths = [_path(w, s) for _, (w, s) in sorted(entry["epochs"].items())]
        epochs = [{"epoch": e, "scores": _scores(s)} for e, (_, s) in sorted(entry["epochs"].items())]
        target = first.get("target")
        target = target[0] if isinstance(target, list) and target else target
        record = {"input": _input_text(where, first.get("input"), attachments),
                  "target": text_of(where, _resolve(target, attachments), "target")}
        questions.append(SourceQuestion(id=str(entry["id"]), position=position, record=record, paths=tuple(paths),
                                        source={"target": record["target"], "epochs": epochs}, where=where,
                                        plain_gold=True))
    return questions, skipped


def _sample_id(where: str, value: Any) -> str:
    """A sample's id as the question's id: inspect_ai's ids are text or integers."""
    if isinstance(value, str):
        return text_of(where, value, "the sample id")
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_DOC_ID:
        raise SourceError(f"{where}: sample id {json.dumps(value)[:40]} is neither text nor an integer of at most "
                          f"{len(str(MAX_DOC_ID))} digits (inspect_ai's sample ids)")
    return str(value)


def _path(where: str, sample: dict[str, Any]) -> SourcePath:
    attachments = sample.get("attachments") if isinstance(sample.get("attachments"), dict) else {}
    output = sample.get("output")
    if not isinstance(output, dict):
        raise SourceError(f"{where}: sample {sample.get('id')} epoch {sample.get('epoch')} has no output")
    choices = output.get("choices") if isinstance(output.get("choices"), list) else []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    completion = output.get("completion")
    if completion is None:
        completion = _content_text(_dict(choice, "message").get("content"), attachments)
    usage = output.get("usage") if isinstance(output.get("usage"), dict) else {}
    scores = _scores(sample)
    answer = next((s.get("answer") for s in scores.values() if isinstance(s.get("answer"), str)), None)
    return SourcePath(text=text_of(where, _resolve(completion, attachments), "the output's completion"),
                      source_answer=answer, prompt_tokens=_count(usage.get("input_tokens")),
                      completion_tokens=_count(usage.get("output_tokens")),
                      latency_s=number_of(output.get("time")) or number_of(sample.get("working_time")) or 0.0,
                      finish_reason=_STOP.get(str(choice.get("stop_reason")), "unknown"))


def _scores(sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    scores = sample.get("scores") if isinstance(sample.get("scores"), dict) else {}
    return {str(name): {key: score[key] for key in ("value", "answer") if isinstance(score.get(key), str | int | float)}
            for name, score in scores.items() if isinstance(score, dict)}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else 0


def _resolve(value: Any, attachments: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith(_ATTACHMENT):
        return attachments.get(value.removeprefix(_ATTACHMENT), value)
    return value


def _content_text(content: Any, attachments: dict[str, Any]) -> Any:
    """A message's text: a string, or its text parts joined."""
    if isinstance(content, list):
        return "".join(str(_resolve(part.get("text", ""), attachments)) for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    return _resolve(content, attachments)


def _input_text(where: str, value: Any, attachments: dict[str, Any]) -> str:
    """The question: the sample's input text, or its last user message's."""
    if isinstance(value, list):
        users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = _content_text(users[-1].get("content"), attachments) if users else None
    return text_of(where, _resolve(value, attachments), "the sample's input")


def _figures(header: dict[str, Any], epochs: int) -> tuple[SourceFigure, ...]:
    """inspect_ai's own accuracy per scorer, as its results hold it: the mean over samples of each sample's
    score reduced over its epochs (by default their mean), i.e. one path's accuracy averaged over all."""
    results = header.get("results") if isinstance(header.get("results"), dict) else {}
    out = []
    for score in results.get("scores") or []:
        if not isinstance(score, dict):
            continue
        accuracy = _dict(score, "metrics").get("accuracy")
        value = number_of(accuracy.get("value")) if isinstance(accuracy, dict) else None
        if value is not None:
            out.append(SourceFigure(f"{score.get('name', 'score')} accuracy", value, None,
                                    _count(score.get("scored_samples")), False))
    return tuple(out)
