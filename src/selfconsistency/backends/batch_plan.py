"""Batch job planning, for every batch provider: pack paths into records, split records into jobs within
the provider's quotas. Pure.

A model that returns several generations per request carries up to that many paths of one (question,
temperature) in one record, so the prompt is billed once for them; others get one record per path.
A record id is 11 alphanumeric characters (the form AWS documents, and a valid OpenAI custom_id); the
planner returns which paths each id stands for, so results join back in whatever order the output lists them.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from ..costs import CHARS_PER_TOKEN
from ..prompts import Prompt
from ..sampling import SamplingParams
from .base import Generation, GenerationRequest, ParsedOutput, generations_from

_ALPHABET = string.digits + string.ascii_uppercase


class PlanError(ValueError):
    """A plan the quotas do not allow; the message says what to do instead."""


@dataclass(frozen=True)
class Quotas:
    """Batch quotas (configurable; defaults are Bedrock's at the time of writing)."""

    min_records_per_job: int = 100
    max_records_per_job: int = 50_000
    max_file_bytes: int = 1_000_000_000
    max_job_bytes: int = 5_000_000_000
    max_jobs_in_flight: int = 20  # in progress + submitted, per model


@dataclass(frozen=True)
class Record:
    record_id: str
    requests: tuple[GenerationRequest, ...]  # the paths this record's generations stand for, in order
    body: dict[str, Any]  # the request body of the provider's API
    line: str  # the record as a line of the provider's input file


def _short_id(key: str) -> str:
    """11 base-36 characters of the key's SHA-256: what a provider accepts as a record id."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    digits = []
    for _ in range(11):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def record_id(requests: tuple[GenerationRequest, ...], body: dict[str, Any] | None = None) -> str:
    """From what the record asks, not only where its question sits: each path's question id, prompt,
    temperature, index and seed, and the request body (sampling settings, model), so records of other data
    or settings never share an id (nor, through the ids, a job), and duplicate questions still differ."""
    key = "\x1f".join(f"{r.question_id}\x1e{r.prompt.text}\x1e{r.prompt.messages!r}\x1e{r.temperature!r}"
                       f"\x1e{r.path_index}\x1e{r.params.seed}" for r in requests)
    key += "\x1d" + json.dumps(body, sort_keys=True, ensure_ascii=False)
    return _short_id(key)


def legacy_record_id(requests: tuple[GenerationRequest, ...]) -> str:
    """The id versions before 0.2 gave a record: from its paths' positions alone. Only to collect a job
    such a version left in flight; never trusted to say what the record asked."""
    key = "\x1f".join(f"{r.question_id}\x1e{r.temperature!r}\x1e{r.path_index}" for r in requests)
    return _short_id(key)


BodyBuilder = Callable[[Prompt, SamplingParams, int], dict[str, Any]]  # (prompt, params, n paths) -> body
LineFormat = Callable[[str, dict[str, Any]], str]  # (record id, body) -> input file line


def pack(requests: list[GenerationRequest], per_record: int, build: BodyBuilder, line: LineFormat) -> list[Record]:
    """Records for the requests, taken in order; a (question, temperature) group's paths share records of
    up to `per_record` paths (greedy paths go alone: they would all be the same)."""
    records = []
    for _, group in groupby(requests, key=lambda r: (r.question_id, r.temperature)):
        group = list(group)
        size = 1 if group[0].params.greedy else per_record
        for start in range(0, len(group), size):
            chunk = tuple(group[start: start + size])
            body = build(chunk[0].prompt, chunk[0].params, len(chunk))
            rid = record_id(chunk, body)
            records.append(Record(rid, chunk, body, line(rid, body)))
    return records


def split_jobs(records: list[Record], quotas: Quotas = Quotas(), too_small: str = "") -> list[list[Record]]:
    """Jobs of at least the minimum and at most the maximum records (and bytes), as even as possible.
    `too_small` is the provider's advice when there are fewer records than one job's minimum."""
    total = len(records)
    if total < quotas.min_records_per_job:
        raise PlanError(f"{total} records is below the minimum of {quotas.min_records_per_job} per job"
                        + (f": {too_small}" if too_small else ""))
    sizes = [len(r.line.encode()) + 1 for r in records]
    if max(sizes) > quotas.max_file_bytes:
        raise PlanError("one record is larger than the input file size quota")
    byte_limit = min(quotas.max_file_bytes, quotas.max_job_bytes)
    jobs = max(-(-total // quotas.max_records_per_job), -(-sum(sizes) // byte_limit))
    while True:
        per_job = -(-total // jobs)
        chunks = [records[i: i + per_job] for i in range(0, total, per_job)]
        chunk_bytes = [sum(sizes[i: i + per_job]) for i in range(0, total, per_job)]
        if all(b <= byte_limit for b in chunk_bytes):
            break
        jobs += 1
    if any(len(chunk) < quotas.min_records_per_job for chunk in chunks):
        raise PlanError(f"cannot split {total} records into jobs of {quotas.min_records_per_job} to "
                        f"{quotas.max_records_per_job} records within the size quotas")
    return chunks


def record_generations(record: Record, outputs: list[ParsedOutput], seconds_each: float) -> Iterator[Generation]:
    """One Generation per path of a record; a prompt without a count is estimated from the record's body."""
    return generations_from(record.requests, outputs, seconds_each,
                            lambda: len(json.dumps(record.body)) // CHARS_PER_TOKEN)


def body_digest(body: dict[str, Any]) -> str:
    """A record body's fingerprint: a job's key hashes its records' bodies, so other bodies mean another job."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
