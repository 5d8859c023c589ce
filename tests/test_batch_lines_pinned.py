"""Record ids, input lines and body digests are pinned byte for byte: a record's id and a job's key hash
them, so a faster serialiser that changed one byte would make a resumed run resubmit what it paid for
(or fail to match its answers). The pins were taken from the code before the batch I/O speed-up."""

import hashlib

import pytest

from selfconsistency.backends.base import BackendConfig, GenerationRequest
from selfconsistency.backends.batch_plan import body_digest, body_digests, pack
from selfconsistency.backends.bedrock_bodies import ADAPTERS, bedrock_line
from selfconsistency.backends.openai_batch import OpenAIBatchJobs, OpenAIBatchOptions
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.sampling import SamplingParams
from selfconsistency.tasks.base import Exemplar

# Characters a serialiser may write differently: quotes, backslashes, control characters, non-ASCII
# (kept as UTF-8, ensure_ascii=False), a character outside the BMP, and floats that print in several ways.
EXEMPLARS = (Exemplar('Tom has "3" apples\\pears;\teats 1.', "He has 3 - 1 = 2 left — 2 € café 🍎.\nThe answer is 2."),
             Exemplar("Ünïcode\u2028line\x7f?", "1e-7 or 0.1 + 0.2 = 0.30000000000000004. The answer is 0.3."))


def requests(fmt):
    prompt = build_prompt("Héllo \"world\"\\n — 3 × 4?", EXEMPLARS, fmt)
    out = [GenerationRequest("q-é", 0.0, 0, prompt, SamplingParams(temperature=0.0, stop=("\n\n", "Q:")))]
    out += [GenerationRequest("q-é", 0.7, i, prompt,
                              SamplingParams(temperature=0.7, top_p=0.95, top_k=0, max_tokens=300, stop=("\n\n",),
                                             seed=i)) for i in range(7)]
    out += [GenerationRequest("q2", 1.0, 0, prompt, SamplingParams(temperature=1.0, top_k=40, seed=123456789))]
    return out


def fingerprint(records):
    """One hash over every record's id, input line and body digest, in order."""
    assert body_digests(records) == [body_digest(r.body) for r in records]  # what a job key hashes
    joined = "\n".join(f"{r.record_id}\x1f{r.line}\x1f{body_digest(r.body)}" for r in records)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


BEDROCK_PINS = {
    "cohere-command": ("RYA0PDL5AIZ", "fd8a51cfe493fb56"),
    "ai21-j2": ("MEKNGYXSRXT", "06df8f37f1b9421c"),
    "anthropic-claude": ("IFZP90RSEYS", "6f53cb14aa5a7aab"),
    "meta-llama3": ("X575DJFMDFK", "09c0634dbccdb478"),
    "mistral": ("1KS5W6TYOP4", "0e4b72d93c6464b2"),
    "amazon-nova": ("S7FKSGUALHV", "62ea39eef8709250"),
    "amazon-titan-text": ("C5CW5BL8E64", "ce4b2fb02228589e"),
    "converse": ("HVQG8R40IH6", "0731d79294b955b9"),
}


@pytest.mark.parametrize("family", sorted(BEDROCK_PINS))
def test_bedrock_record_ids_and_lines_are_pinned(family):
    adapter = ADAPTERS[family]
    fmt = PromptFormat.chat if adapter.chat else PromptFormat.completion
    records = pack(requests(fmt), adapter.max_generations, adapter.request, bedrock_line)
    assert (records[1].record_id, fingerprint(records)) == BEDROCK_PINS[family]


LLAMA3_LINE = ('{"recordId": "KVOXWQXLM4Z", "modelInput": {"prompt": "<|begin_of_text|>'
               '<|start_header_id|>user<|end_header_id|>'
               '\\n\\nTom has \\"3\\" apples\\\\pears;\\teats 1.<|eot_id|><|start_header_id|>assistant<|end_header_id|>'
               '\\n\\nHe has 3 - 1 = 2 left — 2 € café 🍎.\\nThe answer is 2.<|eot_id|><|start_header_id|>user'
               '<|end_header_id|>\\n\\nÜnïcode\u2028line\x7f?<|eot_id|><|start_header_id|>assistant<|end_header_id|>'
               '\\n\\n1e-7 or 0.1 + 0.2 = 0.30000000000000004. The answer is 0.3.<|eot_id|><|start_header_id|>user'
               '<|end_header_id|>\\n\\nHéllo \\"world\\"\\\\n — 3 × 4?<|eot_id|><|start_header_id|>assistant'
               '<|end_header_id|>\\n\\n", "temperature": 0.7, "top_p": 0.95, "max_gen_len": 300}}')


def test_a_llama3_line_is_pinned_in_full():
    adapter = ADAPTERS["meta-llama3"]
    record = pack(requests(PromptFormat.chat), 1, adapter.request, bedrock_line)[2]
    assert record.line == LLAMA3_LINE


OPENAI_PINS = {"chat": ("A7BMTIE1UA6", "079692470c22e046"), "completions": ("3D5OP5JGLES", "04796d104a72a4eb")}


@pytest.mark.parametrize("api", sorted(OPENAI_PINS))
def test_openai_batch_ids_and_lines_are_pinned(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    service = OpenAIBatchJobs(BackendConfig(model="gpt-4o-mini", options=OpenAIBatchOptions(
        base_url="http://127.0.0.1:9/v1", api=api, paths_per_request=4)))
    try:
        records = service.pack(requests(PromptFormat.chat if api == "chat" else PromptFormat.completion))
    finally:
        service.close()
    assert (records[1].record_id, fingerprint(records)) == OPENAI_PINS[api]
