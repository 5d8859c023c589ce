"""Packing paths into Bedrock batch records and splitting records into jobs."""

import json

import pytest

from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.batch_plan import (
    PlanError,
    Quotas,
    _short_id,
    _short_id_of,
    pack,
    record_id,
    split_jobs,
)
from selfconsistency.backends.bedrock_batch import BEDROCK_TOO_SMALL, bedrock_line
from selfconsistency.backends.bedrock_bodies import ADAPTERS
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.sampling import SamplingParams

PROMPT = build_prompt("How many?", (), PromptFormat.completion)


def requests(questions=2, paths=12):
    out = []
    for q in range(questions):
        out.append(GenerationRequest(f"test-{q:05d}", 0.0, 0, PROMPT, SamplingParams(temperature=0.0)))
        for i in range(paths):
            out.append(GenerationRequest(f"test-{q:05d}", 0.7, i, PROMPT, SamplingParams(temperature=0.7, seed=i)))
    return out


def bedrock_pack(requests, family):
    adapter = ADAPTERS[family]
    return pack(requests, adapter.max_generations, adapter.request, bedrock_line)


def test_packed_generations_for_cohere():
    records = bedrock_pack(requests(), "cohere-command")
    # per question: greedy alone, then 12 paths as 5 + 5 + 2
    assert [len(r.requests) for r in records] == [1, 5, 5, 2] * 2
    assert [r.body["num_generations"] for r in records[:4]] == [1, 5, 5, 2]
    assert records[1].body["temperature"] == 0.7 and records[0].body["temperature"] == 0.0
    covered = [(r.question_id, r.temperature, r.path_index) for rec in records for r in rec.requests]
    assert covered == [(r.question_id, r.temperature, r.path_index) for r in requests()]


def test_one_record_per_path_for_claude():
    records = bedrock_pack(requests(), "anthropic-claude")
    assert len(records) == 26 and all(len(r.requests) == 1 for r in records)
    assert len({r.record_id for r in records}) == 26


def test_record_ids_are_eleven_alphanumerics_and_stable():
    records = bedrock_pack(requests(), "anthropic-claude")
    assert all(len(r.record_id) == 11 and r.record_id.isalnum() for r in records)
    assert record_id(records[3].requests, records[3].body) == records[3].record_id
    line = json.loads(records[0].line)
    assert set(line) == {"recordId", "modelInput"}


def test_short_ids_are_the_eleven_low_base36_digits_of_the_hash():
    """The table lookup gives the digits the divmod loop of earlier versions gave (ids in stores)."""
    import hashlib
    import random
    import string

    def divmod_loop(number):
        digits = []
        for _ in range(11):
            number, digit = divmod(number, 36)
            digits.append((string.digits + string.ascii_uppercase)[digit])
        return "".join(reversed(digits))

    rng = random.Random(7)
    numbers = [0, 1, 35, 36, 36**11 - 1, 36**11, 2**64 - 1] + [rng.getrandbits(64) for _ in range(2000)]
    for number in numbers:
        assert _short_id_of(number.to_bytes(8, "big") + bytes(24)) == divmod_loop(number)
    assert _short_id("key") == divmod_loop(int.from_bytes(hashlib.sha256(b"key").digest()[:8], "big"))


def test_small_plans_refused_with_advice():
    records = bedrock_pack(requests(questions=2, paths=12), "cohere-command")
    with pytest.raises(PlanError, match="--backend bedrock"):
        split_jobs(records, too_small=BEDROCK_TOO_SMALL)


def test_jobs_respect_record_and_byte_quotas():
    records = bedrock_pack(requests(questions=50, paths=3), "anthropic-claude")  # 200 records
    assert [len(j) for j in split_jobs(records)] == [200]
    quotas = Quotas(min_records_per_job=10, max_records_per_job=60)
    jobs = split_jobs(records, quotas)
    assert [len(j) for j in jobs] == [50, 50, 50, 50]  # even, not 60 + 60 + 60 + 20
    assert [r for job in jobs for r in job] == records
    line_bytes = len(records[0].line.encode()) + 1
    by_bytes = split_jobs(records, Quotas(min_records_per_job=10, max_file_bytes=line_bytes * 70))
    assert all(sum(len(r.line.encode()) + 1 for r in job) <= line_bytes * 70 for job in by_bytes)
    with pytest.raises(PlanError, match="cannot split"):
        split_jobs(records, Quotas(min_records_per_job=150, max_records_per_job=160))


def test_an_input_file_is_its_lines_each_ended_by_a_newline():
    from selfconsistency.backends.batch_plan import input_file

    for lines in ([], ["a"], ['{"x": "é"}', '{"y": "\u2028"}']):
        assert input_file(lines) == ("\n".join(lines) + "\n").encode()


def test_bodies_equal_in_value_but_written_differently_keep_their_own_lines():
    """A group's identical bodies are serialised once; equal ones that json writes differently are not."""
    forms = [{"n": 1, "p": [0.0]}, {"n": 1.0, "p": [0.0]}, {"n": True, "p": [0.0]}, {"n": 1, "p": [-0.0]},
             {"p": [0.0], "n": 1}, {"n": 1, "p": (0.0,)}, {"n": 1, "p": [0.0]}]

    def build(prompt, params, n):
        return dict(forms[params.seed])

    paths = [GenerationRequest("q", 0.7, i, PROMPT, SamplingParams(temperature=0.7, seed=i)) for i in range(len(forms))]
    records = pack(paths, 1, build, bedrock_line)
    pairs = list(zip(records, forms, strict=True))
    assert [r.line for r, _ in pairs] == [bedrock_line(r.record_id, form) for r, form in pairs]
    assert [r.record_id for r, _ in pairs] == [record_id(r.requests, form) for r, form in pairs]
