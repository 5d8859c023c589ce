"""Reading a Bedrock batch job's records.jsonl.out (read_output): the fast path (every line well formed,
echoes compared as bytes first) and the line-by-line path (a malformed line in the file) must give the
same answers, and an echo of another request must be caught by both."""

import dataclasses
import json

import pytest

from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.batch_plan import pack
from selfconsistency.backends.bedrock_batch import read_output
from selfconsistency.backends.bedrock_bodies import ADAPTERS, bedrock_line
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.sampling import SamplingParams

LLAMA3 = ADAPTERS["meta-llama3"]
# U+2028, U+2029 and U+0085 are line breaks to str.splitlines but may stand unescaped in a JSON text
PROMPT = build_prompt("Line\u2028separator, paragraph\u2029separator, next\x85line: how many, café?", (),
                      PromptFormat.chat)


def records(count=6):
    paths = [GenerationRequest("q", 0.7, i, PROMPT, SamplingParams(temperature=0.7, seed=i)) for i in range(count)]
    return pack(paths, 1, LLAMA3.request, bedrock_line)


def output_line(record, model_input=None, **dumps):
    return json.dumps({"recordId": record.record_id, "modelInput": record.body if model_input is None else model_input,
                       "modelOutput": {"generation": f"The answer is {record.requests[0].path_index}.",
                                       "prompt_token_count": 30, "generation_token_count": 6, "stop_reason": "stop"}},
                      **dumps)


MALFORMED = ["{not json", "[1, 2]", '{"recordId": 7, "modelInput": {}}']


@pytest.mark.parametrize("malformed", [None, *MALFORMED])
def test_echoes_written_raw_or_escaped_are_read(malformed):
    ours = records()
    lines = [output_line(r, ensure_ascii=False) for r in ours[:3]]  # the bytes we sent, unescaped
    lines += [output_line(r, ensure_ascii=True, separators=(",", ":")) for r in ours[3:]]  # the same JSON values
    if malformed:
        lines.insert(2, malformed)
    results = read_output(("\n".join(lines) + "\n").encode(), {r.record_id for r in ours},
                          {r.record_id: r for r in ours}, LLAMA3)
    assert not results.mismatched and not results.errors
    assert results.unreadable == (1 if malformed else 0)
    assert {rid: [o.text for o in outputs] for rid, outputs in results.outputs.items()} == \
        {r.record_id: [f"The answer is {r.requests[0].path_index}."] for r in ours}


@pytest.mark.parametrize("malformed", [None, MALFORMED[0]])
def test_an_echo_of_another_request_is_refused(malformed):
    ours = records()
    other = {**ours[0].body, "max_gen_len": 7}
    lines = [output_line(ours[0], other, ensure_ascii=False), output_line(ours[1], other),
             output_line(ours[2], {**ours[2].body, "temperature": 0.70001}, ensure_ascii=False)]
    lines += [output_line(r, ensure_ascii=False) for r in ours[3:]] + ([malformed] if malformed else [])
    tampered = {r.record_id: r for r in ours}
    # the same id and the same echo bytes, but another body asked today: the echo is not what this record sends
    tampered[ours[3].record_id] = dataclasses.replace(ours[3], body={**ours[3].body, "top_p": 0.5})
    results = read_output("\n".join(lines).encode(), set(tampered), tampered, LLAMA3)
    assert sorted(results.mismatched) == sorted(r.record_id for r in ours[:4])
    assert set(results.outputs) == {r.record_id for r in ours[4:]}
