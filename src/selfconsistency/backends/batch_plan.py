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

from ..collector import collector_paused
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
    on_demand_below: int = 0  # follow-up rounds (and later waves) of fewer records go on demand, not in a job


@dataclass(frozen=True)
class Record:
    record_id: str
    requests: tuple[GenerationRequest, ...]  # the paths this record's generations stand for, in order
    body: dict[str, Any]  # the request body of the provider's API
    line: str  # the record as a line of the provider's input file


# the 36**2 two-digit and 36**3 three-digit strings: 4 lookups instead of 11 divmods per id
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_TRIPLES = [a + b for a in _ALPHABET for b in _PAIRS]


def _short_id_of(digest: bytes) -> str:
    """11 base-36 characters of a SHA-256 digest: the number of its first 8 bytes, modulo 36**11."""
    number = int.from_bytes(digest[:8], "big")
    number, low = divmod(number, 46_656)
    number, middle = divmod(number, 46_656)
    number, high = divmod(number, 46_656)
    return f"{_PAIRS[number % 1296]}{_TRIPLES[high]}{_TRIPLES[middle]}{_TRIPLES[low]}"


def _short_id(key: str) -> str:
    """11 base-36 characters of the key's SHA-256: what a provider accepts as a record id."""
    return _short_id_of(hashlib.sha256(key.encode()).digest())


def _sorted_json(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def record_id(requests: tuple[GenerationRequest, ...], body: dict[str, Any] | None = None) -> str:
    """From what the record asks, not only where its question sits: each path's question id, prompt,
    temperature, index and seed, and the request body (sampling settings, model), so records of other data
    or settings never share an id (nor, through the ids, a job), and duplicate questions still differ."""
    return _RecordIds().record_id(requests, _sorted_json(body).encode())


class _RecordIds:
    """record_id, fast for many records of few prompts: the SHA-256 of the same key, fed in pieces, with
    each prompt's part encoded once and the hash of a path's shared prefix (question id, prompt) copied
    rather than computed again."""

    def __init__(self):
        self._prompts: dict[int, tuple[Prompt, bytes]] = {}
        self._prefixes: dict[tuple[str, int], tuple[Prompt, Any]] = {}

    def _prompt_part(self, prompt: Prompt) -> bytes:
        known = self._prompts.get(id(prompt))
        if known is None or known[0] is not prompt:
            known = self._prompts[id(prompt)] = (prompt, f"{prompt.text}\x1e{prompt.messages!r}".encode())
        return known[1]

    def _prefix(self, request: GenerationRequest) -> Any:
        key = (request.question_id, id(request.prompt))
        known = self._prefixes.get(key)
        if known is None or known[0] is not request.prompt:
            hasher = hashlib.sha256(f"{request.question_id}\x1e".encode())
            hasher.update(self._prompt_part(request.prompt))
            known = self._prefixes[key] = (request.prompt, hasher)
        return known[1].copy()

    def record_id(self, requests: tuple[GenerationRequest, ...], sorted_body: bytes) -> str:
        # the key: per path "question id \x1e prompt text \x1e messages \x1e temperature \x1e index \x1e seed",
        # joined by \x1f, then \x1d and the body's sorted JSON
        hasher = self._prefix(requests[0])
        for position, r in enumerate(requests):
            if position:
                hasher.update(f"\x1f{r.question_id}\x1e".encode())
                hasher.update(self._prompt_part(r.prompt))
            hasher.update(f"\x1e{r.temperature!r}\x1e{r.path_index}\x1e{r.params.seed}".encode())
        hasher.update(b"\x1d" + sorted_body)
        return _short_id_of(hasher.digest())


BodyBuilder = Callable[[Prompt, SamplingParams, int], dict[str, Any]]  # (prompt, params, n paths) -> body
LineFormat = Callable[[str, str], str]  # (record id, the body's JSON: json.dumps(body, ensure_ascii=False)) -> line


def _identical(a: Any, b: Any) -> bool:
    """Equal and serialised alike: 1, 1.0 and True are equal, and so are 0.0 and -0.0 and dicts in another
    key order, but json.dumps writes each differently."""
    return a == b and type(a) is type(b) and _same_form(a, b)


def _same_form(a: Any, b: Any) -> bool:
    """For equal values of one type: the same types, key order and signs of zero throughout."""
    if type(a) is dict:
        if list(a) != list(b):
            return False
        pairs = zip(a.values(), b.values(), strict=True)
    elif type(a) is list or type(a) is tuple:
        pairs = zip(a, b, strict=True)
    else:
        return type(a) is not float or a != 0.0 or repr(a) == repr(b)
    for x, y in pairs:
        kind = type(x)
        if kind is not type(y):
            return False
        if kind is dict or kind is list or kind is tuple:
            if not _same_form(x, y):
                return False
        elif kind is float and x == 0.0 and repr(x) != repr(y):
            return False
    return True


def pack(requests: list[GenerationRequest], per_record: int, build: BodyBuilder, line: LineFormat) -> list[Record]:
    """Records for the requests, taken in order; a (question, temperature) group's paths share records of
    up to `per_record` paths (greedy paths go alone: they would all be the same). A group's records
    mostly have identical bodies (the seed is rarely in them): those share one body object, serialised
    once (`body_json` and `body_digests` rely on that)."""
    with collector_paused():
        return _pack(requests, per_record, build, line)


def _pack(requests: list[GenerationRequest], per_record: int, build: BodyBuilder, line: LineFormat) -> list[Record]:
    records = []
    for _, group in groupby(requests, key=lambda r: (r.question_id, r.temperature)):
        group = list(group)
        ids = _RecordIds()  # one group's prompts, forgotten after it
        size = 1 if group[0].params.greedy else per_record
        last: tuple[dict[str, Any], str, bytes] | None = None  # body, its JSON, its sorted JSON
        for start in range(0, len(group), size):
            chunk = tuple(group[start: start + size])
            body = build(chunk[0].prompt, chunk[0].params, len(chunk))
            if last is None or not _identical(body, last[0]):
                last = (body, json.dumps(body, ensure_ascii=False), _sorted_json(body).encode())
            body, body_json, sorted_body = last
            rid = ids.record_id(chunk, sorted_body)
            records.append(Record(rid, chunk, body, line(rid, body_json)))
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


def input_file(lines: list[str]) -> bytes:
    """A job's JSONL input file: each line ended by a newline (joined with one copy fewer than
    `"\\n".join(lines) + "\\n"`, which at 100 MB a job is worth it)."""
    return "\n".join([*lines, ""]).encode() if lines else b"\n"


def record_generations(record: Record, outputs: list[ParsedOutput], seconds_each: float) -> Iterator[Generation]:
    """One Generation per path of a record; a prompt without a count is estimated from the record's body."""
    return generations_from(record.requests, outputs, seconds_each,
                            lambda: len(json.dumps(record.body)) // CHARS_PER_TOKEN)


def body_digest(body: dict[str, Any]) -> str:
    """A record body's fingerprint: a job's key hashes its records' bodies, so other bodies mean another job."""
    return hashlib.sha256(_sorted_json(body).encode()).hexdigest()


class PerBody:
    """`compute(body)` once per body object (the records of a group share theirs), remembered by the
    object's identity; the body is kept with its result, so its id is never reused meanwhile."""

    def __init__(self, compute: Callable[[dict[str, Any]], Any]):
        self._compute = compute
        self._known: dict[int, tuple[dict[str, Any], Any]] = {}

    def __call__(self, body: dict[str, Any]) -> Any:
        found = self._known.get(id(body))
        if found is None:
            found = self._known[id(body)] = (body, self._compute(body))
        return found[1]


def body_digests(records: list[Record]) -> list[str]:
    """Each record's body_digest, computed once per body object."""
    digest = PerBody(body_digest)
    return [digest(record.body) for record in records]


def sent_json() -> PerBody:
    """json.dumps(body, ensure_ascii=False) as bytes (what an input line carries), once per body object."""
    return PerBody(lambda body: json.dumps(body, ensure_ascii=False).encode())
