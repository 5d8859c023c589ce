"""Anthropic's request bodies, model rules, cache prices and result lines (pure: no server)."""

import json

import pytest

from selfconsistency.backends.anthropic_batch import read_results
from selfconsistency.backends.anthropic_bodies import (
    api_version,
    cacheable,
    model_rules,
    request_body,
    sampling_problem,
)
from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.batch_plan import Record
from selfconsistency.costs import PriceTable, job_cost, uncached_cost
from selfconsistency.prompts import Prompt, PromptFormat
from selfconsistency.sampling import SamplingParams

EXEMPLARS = (("user", "Q1"), ("assistant", "A1. The answer is 1."), ("user", "Q2"), ("assistant", "A2."))


def prompt(*turns, question="How many?") -> Prompt:
    return Prompt(shared="", question=question, messages=(*turns, ("user", question)), format=PromptFormat.chat)


@pytest.mark.parametrize("model, sampling, minimum", [
    ("claude-haiku-4-5", "temperature_or_top_p", 4096), ("claude-haiku-4-5-20251001", "temperature_or_top_p", 4096),
    ("claude-3-5-haiku-20241022", "all", 2048), ("claude-3-haiku-20240307", "all", 2048),
    ("claude-sonnet-4-20250514", "all", 1024), ("claude-opus-4-1-20250805", "temperature_or_top_p", 1024),
    ("claude-sonnet-4-5", "temperature_or_top_p", 1024), ("claude-opus-4-6", "temperature_or_top_p", 4096),
    ("claude-opus-4-7", "none", None), ("claude-haiku-5-5", "none", None), ("claude-fable-5-1", "none", None),
    ("claude-hiaku-4-5", "temperature_or_top_p", None),  # unknown here: sent as asked, the API decides
])
def test_model_rules_as_documented(model, sampling, minimum):
    assert (model_rules(model).sampling, model_rules(model).min_cacheable) == (sampling, minimum)
    assert api_version(model) == ("2026-10-21" if sampling == "none" else "2023-06-01")


def test_a_temperature_the_model_cannot_take_is_refused_with_what_to_give():
    assert "--temperatures 1" in sampling_problem("claude-haiku-5-5", 0.7, 1.0)
    assert "--no-greedy" in sampling_problem("claude-haiku-5-5", 0.0, 1.0)
    assert "--top-p 1.0" in sampling_problem("claude-haiku-5-5", 1.0, 0.9)
    assert sampling_problem("claude-haiku-5-5", 1.0, 1.0) is None  # the model's default: sampled as it is
    assert "not both" in sampling_problem("claude-haiku-4-5", 0.7, 0.9)
    assert sampling_problem("claude-haiku-4-5", 0.7, 1.0) is None and sampling_problem("claude-haiku-4-5", 0, 1) is None


@pytest.mark.parametrize("overrides, fixes", [
    ({"temperatures": (0.7,)}, "give --temperatures 1 --no-greedy"),  # both, in one refusal
    ({"temperatures": (0.5, 0.7), "greedy": False}, "give --temperatures 1"),
    ({"temperatures": (1.0,)}, "give --no-greedy"),
    ({"temperatures": (0.7,), "top_p": 0.9}, "give --temperatures 1 --no-greedy --top-p 1.0"),
])
def test_a_model_without_sampling_parameters_is_told_every_fix_at_once(overrides, fixes):
    from selfconsistency.backends.anthropic import check_settings
    from selfconsistency.backends.base import BackendError
    from selfconsistency.settings import RunSettings

    config = RunSettings(backend="anthropic-batch", model="claude-haiku-5-5", **overrides)
    with pytest.raises(BackendError) as refused:
        check_settings(config)
    assert str(refused.value).endswith(fixes), str(refused.value)
    assert "\n" not in str(refused.value)
    check_settings(RunSettings(backend="anthropic-batch", model="claude-haiku-5-5", temperatures=(1.0,),
                               greedy=False))  # what the refusal says to give is taken


def test_the_body_caches_the_shared_prefix_and_sends_only_what_the_model_takes():
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, max_tokens=64, stop=("\n\n", "Q:"))
    body = request_body("claude-3-5-haiku-20241022", prompt(("system", "Be brief."), *EXEMPLARS), params, "1h")
    assert body["system"] == "Be brief."  # the breakpoint is on the last exemplar answer, not the system
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert body["messages"][3]["content"] == [{"type": "text", "text": "A2.", "cache_control": {"type": "ephemeral",
                                                                                             "ttl": "1h"}}]
    assert sum("cache_control" in json.dumps(m) for m in body["messages"]) == 1
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 40)
    assert body["stop_sequences"] == ["Q:"]  # the API refuses whitespace-only ones
    one_of = request_body("claude-haiku-4-5", prompt(*EXEMPLARS), params, None)
    assert "top_p" not in one_of and one_of["temperature"] == 0.7 and "cache_control" not in json.dumps(one_of)
    none = request_body("claude-haiku-5-5", prompt(*EXEMPLARS), params, "5m")
    assert not {"temperature", "top_p", "top_k"} & none.keys()
    system_only = request_body("claude-haiku-4-5", prompt(("system", "S" * 50)), params, "5m")
    assert system_only["system"] == [{"type": "text", "text": "S" * 50, "cache_control": {"type": "ephemeral",
                                                                                         "ttl": "5m"}}]


def test_caching_is_on_by_default_only_where_the_prefix_reaches_the_models_minimum():
    short = prompt(*EXEMPLARS)
    long = prompt(("user", "Q" * 9_000), ("assistant", "A" * 9_000))  # ~4,500 tokens at 4 characters a token
    assert not cacheable("claude-haiku-4-5", short, "auto") and cacheable("claude-haiku-4-5", short, "on")
    assert cacheable("claude-haiku-4-5", long, "auto") and not cacheable("claude-haiku-4-5", long, "off")
    assert not cacheable("claude-haiku-5-5", long, "auto")  # no documented minimum: not assumed met
    assert not cacheable("claude-haiku-4-5", prompt(), "on")  # nothing shared: nothing to cache


def test_cache_tokens_are_priced_at_the_documented_multiples_and_batch_at_half():
    table = PriceTable()
    batch, on_demand = table.price("claude-haiku-4-5-20251001", batch=True), table.price("claude-haiku-4-5")
    assert (on_demand.input_per_1k, on_demand.output_per_1k) == (0.001, 0.005)
    assert (batch.input_per_1k, batch.output_per_1k) == (0.0005, 0.0025)
    manifest = {"inputTokenCount": 1000, "outputTokenCount": 100, "cacheWrite5mInputTokenCount": 1000,
                "cacheWrite1hInputTokenCount": 1000, "cacheReadInputTokenCount": 10_000}
    dollars = (1000 + 1.25 * 1000 + 2 * 1000 + 0.1 * 10_000) * 0.5 / 1e6 + 100 * 2.5 / 1e6
    assert job_cost(batch, manifest) == pytest.approx(dollars)
    assert uncached_cost(batch, manifest) == pytest.approx(13_000 * 0.5 / 1e6 + 100 * 2.5 / 1e6)


def _record(rid: str) -> Record:
    params = SamplingParams(temperature=0.7)
    request = GenerationRequest(f"q-{rid}", 0.7, 0, prompt(), params)
    return Record(rid, (request,), {}, "")


def _message(text="2 + 2 = 4. The answer is 4.", **usage):
    return {"type": "message", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 8, **usage}}


def test_result_lines_by_type_and_a_line_cut_mid_way_is_never_stored():
    records = {rid: _record(rid) for rid in ("A", "B", "C", "D", "E", "F")}
    lines = [{"custom_id": "A", "result": {"type": "succeeded", "message": _message(cache_read_input_tokens=90)}},
             {"custom_id": "B", "result": {"type": "errored", "error": {"type": "error", "error": {
                 "type": "overloaded_error", "message": "Overloaded"}}}},
             {"custom_id": "C", "result": {"type": "errored", "error": {"type": "error", "error": {
                 "type": "invalid_request_error", "message": "bad"}}}},
             {"custom_id": "D", "result": {"type": "canceled"}},
             {"custom_id": "E", "result": {"type": "expired"}},
             {"custom_id": "Z", "result": {"type": "succeeded", "message": _message()}},  # never sent
             {"_unreadable": True, "_ids": ["F"]}]  # '{"custom_id": "F", "result": {"type": "succ' cut short
    results = read_results(lines, records, records)
    assert list(results.outputs) == ["A"] and results.outputs["A"][0].input_tokens == 100  # cached ones counted
    assert {rid: (code, retry) for rid, (code, _, retry) in results.errors.items()} == {
        "B": ("overloaded_error", True), "C": ("invalid_request_error", False), "D": ("stopped", False),
        "E": ("expired", True), "F": ("malformed", True)}
    assert results.unreadable == 1  # the foreign id
    assert results.manifest["successRecordCount"] == 1 and results.manifest["cacheReadInputTokenCount"] == 90
    assert results.manifest["errorRecordCount"] == 6
