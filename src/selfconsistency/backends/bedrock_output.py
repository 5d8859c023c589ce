"""Bedrock batch output, read: a job's records.jsonl.out joined back to the records sent by record id, each
answer's echoed modelInput checked against the body sent. Pure."""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

import msgspec

from ..collector import collector_paused
from .batch_plan import PerBody, Record, sent_json
from .batch_service import MALFORMED_CODE, JobResults, retryable_status
from .bedrock_bodies import BodyAdapter


class _OutputLine(msgspec.Struct):
    """A well-formed output line, its modelInput left as the bytes Bedrock wrote (compared before decoded)."""

    recordId: str
    modelInput: msgspec.Raw
    modelOutput: Any = msgspec.UNSET
    error: Any = None


_OUTPUT_LINE = msgspec.json.Decoder(_OutputLine)


_Line = tuple[Any, Any, bool, Any, Any]  # recordId, modelInput, has modelOutput, modelOutput, error


def _read_lines(data: bytes) -> list[_Line | None]:
    """Each output line as (recordId, modelInput, has modelOutput, modelOutput, error), None for one that
    is not a JSON object. Well-formed lines are read by msgspec, all at once, their echoes left undecoded
    (compared as bytes first); when any line is not, each line on its own, the others by json as before.
    Lines end at newlines only: a JSON text may hold U+2028 or U+0085 unescaped (str.splitlines cuts there)."""
    try:
        return [(line.recordId, line.modelInput, line.modelOutput is not msgspec.UNSET, line.modelOutput, line.error)
                for line in _OUTPUT_LINE.decode_lines(data)]
    except msgspec.MsgspecError:
        pass
    lines: list[_Line | None] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = _OUTPUT_LINE.decode(raw)
            lines.append((line.recordId, line.modelInput, line.modelOutput is not msgspec.UNSET, line.modelOutput,
                          line.error))
            continue
        except msgspec.MsgspecError:
            pass
        try:
            parsed = json.loads(raw.decode("utf-8", errors="replace"))
            lines.append((parsed.get("recordId"), parsed.get("modelInput"), "modelOutput" in parsed,
                          parsed.get("modelOutput"), parsed.get("error")))
        except (ValueError, AttributeError):
            lines.append(None)
    return lines


def _echoes(echoed: Any, record: Record, sent: PerBody) -> bool:
    """Whether the output's modelInput is the record's body: the bytes it was sent as, or else the same
    JSON value."""
    if isinstance(echoed, msgspec.Raw):
        if bytes(echoed) == sent(record.body):
            return True
        try:
            echoed = json.loads(bytes(echoed))
        except ValueError:
            return False
    return echoed == record.body


def read_output(data: bytes, job_records: Container[str], records: dict[str, Record],
                adapter: BodyAdapter) -> JobResults:
    """A job's records.jsonl.out: outputs, errors and mismatched echoes by record id (`records`: those of
    the job's records this run wants). A line that is not JSON or whose modelOutput is not the model's
    format is a failed record (the runner decides whether it goes round again), never an abort."""
    with collector_paused():
        return _read_output(data, job_records, records, adapter)


def _read_output(data: bytes, job_records: Container[str], records: dict[str, Record],
                 adapter: BodyAdapter) -> JobResults:
    results = JobResults()
    sent = sent_json()
    for line in _read_lines(data):
        if line is None:
            results.unreadable += 1
            continue
        record_id, echoed, has_output, output, error = line
        if not isinstance(record_id, str) or record_id not in job_records:
            results.unreadable += 1  # names no record of this job: many such lines make the job suspect
            continue
        record = records.get(record_id)
        if record is None:
            continue
        try:
            if not _echoes(echoed, record, sent):  # the output echoes its input: it must be what we sent
                results.mismatched.append(record.record_id)
            elif has_output:
                results.outputs[record.record_id] = adapter.response(output, record.requests[0].params)
            elif isinstance(error, dict):
                code = error.get("errorCode")
                results.errors[record.record_id] = (str(code), str(error.get("errorMessage", "")),
                                                    retryable_status(code))
            else:
                raise ValueError("neither modelOutput nor error")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            results.errors[record.record_id] = (MALFORMED_CODE, f"not in {adapter.family}'s output format", True)
    return results
