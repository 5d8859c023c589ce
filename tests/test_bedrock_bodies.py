"""Bedrock body adapters (request and response, per family) and the cost arithmetic: table tests."""

import pytest

from selfconsistency.backends.bedrock_bodies import ADAPTERS, UnknownModel, adapter_for, base_model_id
from selfconsistency.costs import PriceTable
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.sampling import SamplingParams
from selfconsistency.tasks.base import Exemplar

PROMPT = build_prompt("How many?", (Exemplar("What is 2+3?", "2 + 3 = 5. The answer is 5."),),
                      PromptFormat.completion)
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, max_tokens=128, stop=("\nQ:",), seed=1)
MESSAGES = [{"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
            {"role": "user", "content": "How many?"}]
BLOCKS = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in MESSAGES]


@pytest.mark.parametrize("family,n,expected", [
    ("cohere-command", 5, {"prompt": PROMPT.text, "temperature": 0.7, "p": 0.9, "k": 40, "max_tokens": 128,
                           "num_generations": 5, "stop_sequences": ["\nQ:"]}),
    ("ai21-j2", 3, {"prompt": PROMPT.text, "temperature": 0.7, "topP": 0.9, "maxTokens": 128, "numResults": 3,
                    "stopSequences": ["\nQ:"]}),
    ("anthropic-claude", 1, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 128, "messages": MESSAGES,
                             "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\nQ:"]}),
    ("meta-llama3", 1, {"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?"
                                  "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2 + 3 = 5. The answer "
                                  "is 5.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow many?<|eot_id|>"
                                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
                        "temperature": 0.7, "top_p": 0.9, "max_gen_len": 128}),
    ("mistral", 1, {"prompt": PROMPT.text, "max_tokens": 128, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                    "stop": ["\nQ:"]}),
    ("amazon-nova", 1, {"schemaVersion": "messages-v1", "messages": BLOCKS, "inferenceConfig": {
        "maxTokens": 128, "temperature": 0.7, "topP": 0.9, "stopSequences": ["\nQ:"], "topK": 40}}),
    ("amazon-titan-text", 1, {"inputText": PROMPT.text, "textGenerationConfig": {
        "maxTokenCount": 128, "temperature": 0.7, "topP": 0.9, "stopSequences": ["\nQ:"]}}),
    ("converse", 1, {"messages": BLOCKS, "inferenceConfig": {"maxTokens": 128, "temperature": 0.7, "topP": 0.9,
                                                              "stopSequences": ["\nQ:"]},
                     "additionalModelRequestFields": {"top_k": 40}}),
])
def test_request_bodies(family, n, expected):
    assert ADAPTERS[family].request(PROMPT, PARAMS, n) == expected


@pytest.mark.parametrize("family,body,expected", [
    ("cohere-command", {"generations": [{"text": " 5 + 1 = 6. The answer is 6.", "finish_reason": "COMPLETE"},
                                        {"text": " 7", "finish_reason": "MAX_TOKENS"}]},
     [(" 5 + 1 = 6. The answer is 6.", "stop", None, None), (" 7", "length", None, None)]),
    ("ai21-j2", {"prompt": {"tokens": [{}, {}, {}]},
                 "completions": [{"data": {"text": " The answer is 4.", "tokens": [{}, {}]},
                                  "finishReason": {"reason": "endoftext"}}]},
     [(" The answer is 4.", "stop", 3, 2)]),
    ("anthropic-claude", {"content": [{"type": "text", "text": "2 + 2 = 4. The answer is 4.\nQ: next"}],
                          "stop_reason": "end_turn", "usage": {"input_tokens": 50, "output_tokens": 12}},
     [("2 + 2 = 4. The answer is 4.", "stop", 50, 12)]),
    ("meta-llama3", {"generation": "The answer is 9.", "prompt_token_count": 40, "generation_token_count": 6,
                     "stop_reason": "length"},
     [("The answer is 9.", "length", 40, 6)]),
    ("mistral", {"outputs": [{"text": " The answer is 1.", "stop_reason": "stop"}]},
     [(" The answer is 1.", "stop", None, None)]),
    ("amazon-nova", {"output": {"message": {"role": "assistant", "content": [{"text": "The answer is 2."}]}},
                     "stopReason": "max_tokens", "usage": {"inputTokens": 30, "outputTokens": 128}},
     [("The answer is 2.", "length", 30, 128)]),
    ("amazon-titan-text", {"inputTextTokenCount": 33, "results": [
        {"tokenCount": 7, "outputText": " The answer is 3.", "completionReason": "FINISH"}]},
     [(" The answer is 3.", "stop", 33, 7)]),
    ("converse", {"output": {"message": {"content": [{"text": "The answer is 8."}]}}, "stopReason": "end_turn",
                  "usage": {"inputTokens": 20, "outputTokens": 5}},
     [("The answer is 8.", "stop", 20, 5)]),
])
def test_response_bodies(family, body, expected):
    parsed = ADAPTERS[family].response(body, PARAMS)
    assert [(p.text, p.finish_reason, p.input_tokens, p.output_tokens) for p in parsed] == expected


@pytest.mark.parametrize("model_id,family", [
    ("cohere.command-text-v14", "cohere-command"), ("ai21.j2-ultra-v1", "ai21-j2"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic-claude"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic-claude"),
    ("meta.llama3-8b-instruct-v1:0", "meta-llama3"), ("mistral.mistral-7b-instruct-v0:2", "mistral"),
    ("amazon.nova-lite-v1:0", "amazon-nova"), ("amazon.titan-text-express-v1", "amazon-titan-text"),
])
def test_family_from_model_id(model_id, family):
    assert adapter_for(model_id).family == family
    assert adapter_for(model_id, converse=True).family == "converse"


def test_generations_per_record_bounded():
    with pytest.raises(ValueError, match="1 to 5"):
        ADAPTERS["cohere-command"].request(PROMPT, PARAMS, 6)
    with pytest.raises(ValueError, match="1 to 1"):
        ADAPTERS["anthropic-claude"].request(PROMPT, PARAMS, 2)
    with pytest.raises(ValueError, match="Converse"):
        adapter_for("acme.unknown-model")


def test_whitespace_stops_dropped_where_the_api_refuses_them():
    params = SamplingParams(temperature=0.7, stop=("\n",))
    assert ADAPTERS["anthropic-claude"].request(PROMPT, params)["stop_sequences"] == []
    body = {"content": [{"type": "text", "text": "The answer is 4.\nMore"}], "stop_reason": "end_turn"}
    assert ADAPTERS["anthropic-claude"].response(body, params)[0].text == "The answer is 4."  # cut here instead


def test_the_packaged_prices_cite_their_source_and_bill_batch_as_the_provider_does():
    """Every packaged price names where and when it was read and has its batch price: half for the models
    with Bedrock's (or OpenAI's) batch discount, the on-demand price for Cohere Command, whose batch jobs the
    AWS blog paid in full (its $9.50 and $14.50: test_dry_run.py reproduces them through `run --dry-run`)."""
    import json
    from importlib.resources import files

    table = json.loads(files("selfconsistency").joinpath("data", "prices.json").read_text())["models"]
    assert table and all({"on_demand", "batch", "source", "as_of", "checked"} <= set(entry) for entry in table.values())
    cohere = PriceTable().price("cohere.command-text-v14", batch=True)
    assert (cohere.input_per_1k, cohere.output_per_1k) == (0.0015, 0.002) == tuple(table["cohere.command-text-v14"]
                                                                                   ["on_demand"])
    for model in ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0", "gpt-4o-mini"):
        batch, on_demand = PriceTable().price(model, batch=True), PriceTable().price(model)
        assert batch.input_per_1k == pytest.approx(on_demand.input_per_1k / 2)
        assert batch.output_per_1k == pytest.approx(on_demand.output_per_1k / 2)
    with pytest.raises(KeyError, match="price file"):
        PriceTable().price("anthropic.claude-x")


def test_a_price_file_without_a_batch_price_bills_batch_at_the_on_demand_price(tmp_path):
    """Never understated: a model without the batch discount is billed in full."""
    import json

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"acme.model-v1": {"on_demand": [0.002, 0.004]}}))
    assert PriceTable.from_file(prices).price("acme.model-v1", batch=True).input_per_1k == 0.002


@pytest.mark.parametrize("model_id,base", [
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("eu.meta.llama3-2-3b-instruct-v1:0", "meta.llama3-2-3b-instruct-v1:0"),
    ("apac.amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0"),
    ("global.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
     "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("arn:aws:bedrock:us-east-1::foundation-model/cohere.command-text-v14", "cohere.command-text-v14"),
    ("mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
])
def test_inference_profiles_name_their_base_model(model_id, base):
    assert base_model_id(model_id) == base
    assert adapter_for(model_id) is adapter_for(base)


def test_application_inference_profile_needs_its_base_model():
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    with pytest.raises(UnknownModel, match="--base-model"):
        adapter_for(arn)
    assert adapter_for(arn, base_model="us.meta.llama3-1-8b-instruct-v1:0").family == "meta-llama3"
    assert adapter_for(arn, converse=True).family == "converse"  # Converse needs no family


def test_profiles_priced_as_their_base_model():
    base = PriceTable().price("anthropic.claude-3-5-haiku-20241022-v1:0", batch=True)
    assert base.input_per_1k == pytest.approx(0.0004)
    for profile in ("us.anthropic.claude-3-5-haiku-20241022-v1:0",
                    "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/"
                    "eu.anthropic.claude-3-5-haiku-20241022-v1:0"):
        assert PriceTable().price(profile, batch=True) == base
    application = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    with pytest.raises(KeyError, match="price file"):
        PriceTable().price(application)
    # --base-model names what an application profile stands for: it prices it as well as its body format
    assert PriceTable().price(application, batch=True, base_model="anthropic.claude-3-5-haiku-20241022-v1:0") == base
    assert PriceTable().price(application, batch=True, base_model="us.anthropic.claude-3-5-haiku-20241022-v1:0") \
        == base


@pytest.mark.parametrize("family,system", [
    ("anthropic-claude", "Be brief."), ("amazon-nova", [{"text": "Be brief."}]), ("converse", [{"text": "Be brief."}]),
])
def test_a_system_message_goes_in_the_system_field_not_a_turn(family, system):
    """A server's chat request may bring a system message: these APIs take it beside the turns."""
    prompt = build_prompt("How many?", (), PromptFormat.chat, context=(("system", "Be brief."),))
    body = ADAPTERS[family].request(prompt, PARAMS)
    assert body["system"] == system and all(m["role"] != "system" for m in body["messages"])
    assert "system" not in ADAPTERS[family].request(PROMPT, PARAMS)


@pytest.mark.parametrize("family", ["cohere-command", "ai21-j2", "mistral", "amazon-titan-text"])
def test_a_text_family_refuses_chat_turns_it_cannot_send(family):
    """Text-only bodies have no place for a system message or earlier turns: refused, never dropped."""
    prompt = build_prompt("How many?", (), PromptFormat.chat, context=(("system", "Be brief."),))
    with pytest.raises(ValueError, match="no place for a system message"):
        ADAPTERS[family].request(prompt, PARAMS)
    assert ADAPTERS[family].request(build_prompt("How many?", (), PromptFormat.chat), PARAMS)
