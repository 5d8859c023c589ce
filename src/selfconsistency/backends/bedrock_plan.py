"""Bedrock batch job planning: pack paths into records, split records into jobs within the quotas. Pure.

Families that return several generations per request carry up to that many paths of one (question,
temperature) in one record, so the prompt is billed once for them; others get one record per path.
A record id is 11 alphanumeric characters (the form AWS documents); the planner returns which paths each
id stands for, so results join back whatever order the output file lists them in.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from .base import GenerationRequest
from .bedrock_bodies import BodyAdapter

_ALPHABET = string.digits + string.ascii_uppercase


class PlanError(ValueError):
    """A plan the quotas do not allow; the message says what to do instead."""


@dataclass(frozen=True)
class Quotas:
    """Bedrock batch inference quotas (configurable; defaults are AWS's at the time of writing)."""

    min_records_per_job: int = 100
    max_records_per_job: int = 50_000
    max_file_bytes: int = 1_000_000_000
    max_job_bytes: int = 5_000_000_000
    max_jobs_in_flight: int = 20  # in progress + submitted, per model


@dataclass(frozen=True)
class Record:
    record_id: str
    requests: tuple[GenerationRequest, ...]  # the paths this record's generations stand for, in order
    model_input: dict[str, Any]

    def line(self) -> str:
        return json.dumps({"recordId": self.record_id, "modelInput": self.model_input}, ensure_ascii=False)


def record_id(requests: tuple[GenerationRequest, ...]) -> str:
    key = "\x1f".join(f"{r.question_id}\x1e{r.temperature!r}\x1e{r.path_index}" for r in requests)
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    digits = []
    for _ in range(11):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def pack(requests: list[GenerationRequest], adapter: BodyAdapter) -> list[Record]:
    """Records for the requests, taken in order; a (question, temperature) group's paths share records."""
    records = []
    for _, group in groupby(requests, key=lambda r: (r.question_id, r.temperature)):
        group = list(group)
        size = 1 if group[0].params.greedy else adapter.max_generations
        for start in range(0, len(group), size):
            chunk = tuple(group[start: start + size])
            body = adapter.request(chunk[0].prompt, chunk[0].params, len(chunk))
            records.append(Record(record_id(chunk), chunk, body))
    return records


def split_jobs(records: list[Record], quotas: Quotas = Quotas()) -> list[list[Record]]:
    """Jobs of at least the minimum and at most the maximum records (and bytes), as even as possible."""
    total = len(records)
    if total < quotas.min_records_per_job:
        raise PlanError(f"{total} records is below Bedrock batch's minimum of {quotas.min_records_per_job} per "
                        "job: use the on-demand backend (--backend bedrock) for a run this small, or ask for "
                        "more questions or paths")
    sizes = [len(r.line().encode()) + 1 for r in records]
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
