"""Amazon Bedrock model bodies: one small adapter per model family, request and response. Pure.

An adapter turns (prompt, sampling params, n paths) into the InvokeModel body of its family (the
`modelInput` of a batch record) and reads that family's response back into texts and token counts.
Completion-style families get the few-shot completion prompt; chat families get the exemplars as turns;
Llama 3 gets its own chat template; Cohere Command R and R+ their chat body (message, chat_history,
preamble). Families that return several generations per request (Cohere Command, AI21 Jurassic-2) take
up to `max_generations` paths in one record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..prompts import Prompt, completion_text
from ..sampling import SamplingParams
from .base import ParsedOutput, with_thinking


def json_string(text: str) -> str:
    """json.dumps(text, ensure_ascii=False); a record id (letters and digits) needs no escaping."""
    return f'"{text}"' if text.isascii() and text.isalnum() else json.dumps(text, ensure_ascii=False)


def bedrock_line(record_id: str, body: dict[str, Any] | str) -> str:
    """A batch record, as Bedrock's batch input and the on-demand backend's record packing write it:
    json.dumps({"recordId": ..., "modelInput": body}, ensure_ascii=False), byte for byte. `body` may come
    as its JSON already (pack serialises a body once for all the records that share it)."""
    body_json = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f'{{"recordId": {json_string(record_id)}, "modelInput": {body_json}}}'


def _finish(reason: str | None, length_words: tuple[str, ...]) -> str:
    return "length" if (reason or "").lower() in length_words else "stop"


def _truncate_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """For families without a stop parameter: cut the text where the first stop sequence begins."""
    cut = len(text)
    for sequence in stop:
        found = text.find(sequence)
        if 0 <= found < cut:
            cut = found
    return text[:cut]


def _llama3_chat(prompt: Prompt) -> str:
    turns = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
                    for role, content in prompt.messages)
    return f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


def _content_blocks(prompt: Prompt) -> list[dict[str, Any]]:
    return [{"role": role, "content": [{"text": content}]} for role, content in prompt.messages if role != "system"]


def _system(prompt: Prompt) -> str | None:
    """A chat prompt's system message (a server's chat request may bring one): the Messages, Nova and
    Converse bodies take it in their own `system` field, not as a turn."""
    return next((content for role, content in prompt.messages if role == "system"), None)


@dataclass(frozen=True)
class BodyAdapter:
    family: str
    chat: bool  # gets the exemplars as chat turns
    max_generations: int  # paths one record can carry
    build: Callable[[Prompt, SamplingParams, int], dict[str, Any]]
    parse: Callable[[dict[str, Any], SamplingParams], list[ParsedOutput]]

    def request(self, prompt: Prompt, params: SamplingParams, n: int = 1) -> dict[str, Any]:
        if not 1 <= n <= self.max_generations:
            raise ValueError(f"{self.family} takes 1 to {self.max_generations} generations per record, not {n}")
        return self.build(prompt, params, n)

    def response(self, body: dict[str, Any], params: SamplingParams) -> list[ParsedOutput]:
        return self.parse(body, params)


def _cohere_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    return {"prompt": completion_text(prompt), "temperature": p.temperature, "p": p.top_p, "k": p.top_k,
            "max_tokens": p.max_tokens, "num_generations": n, "stop_sequences": list(p.stop)}


def _cohere_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    return [ParsedOutput(g["text"], _finish(g.get("finish_reason"), ("max_tokens",)))
            for g in body["generations"]]


_COMMAND_R_ROLES = {"user": "USER", "assistant": "CHATBOT"}


def _command_r_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    """Cohere Command R / R+ (Bedrock's documented InvokeModel body): the question as `message`, the
    exemplars before it as `chat_history`, a system message as `preamble`; one generation per request."""
    *history, (_, question) = [(role, content) for role, content in prompt.messages if role != "system"]
    body: dict[str, Any] = {"message": question, "max_tokens": p.max_tokens, "temperature": p.temperature}
    if history:
        body["chat_history"] = [{"role": _COMMAND_R_ROLES[role], "message": content} for role, content in history]
    if _system(prompt) is not None:
        body["preamble"] = _system(prompt)
    if p.top_p < 1.0:
        body["p"] = p.top_p
    if p.top_k:
        body["k"] = p.top_k
    stops = [s for s in p.stop if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    return body


def _command_r_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    billed = (body.get("meta") or {}).get("billed_units") or {}
    tokens = (billed.get("input_tokens"), billed.get("output_tokens"))
    return [ParsedOutput(_truncate_at_stop(body["text"], p.stop), _finish(body.get("finish_reason"), ("max_tokens",)),
                         int(tokens[0]) if tokens[0] is not None else None,
                         int(tokens[1]) if tokens[1] is not None else None)]


def _j2_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    return {"prompt": completion_text(prompt), "temperature": p.temperature, "topP": p.top_p, "maxTokens": p.max_tokens,
            "numResults": n, "stopSequences": list(p.stop)}


def _j2_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    prompt_tokens = len(body.get("prompt", {}).get("tokens", [])) or None
    return [ParsedOutput(c["data"]["text"], _finish(c.get("finishReason", {}).get("reason"), ("length",)),
                         prompt_tokens, len(c["data"].get("tokens", [])) or None)
            for c in body["completions"]]


def _claude_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": p.max_tokens,
                            "messages": [m for m in prompt.chat_messages if m["role"] != "system"],
                            "temperature": p.temperature, "stop_sequences": [s for s in p.stop if s.strip()]}
    if _system(prompt) is not None:
        body["system"] = _system(prompt)
    if p.top_k:
        body["top_k"] = p.top_k
    if p.top_p < 1.0:
        body["top_p"] = p.top_p
    return body


def _claude_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    text = "".join(block.get("text", "") for block in body["content"] if block.get("type") == "text")
    thinking = "".join(block.get("thinking", "") for block in body["content"] if block.get("type") == "thinking")
    text = with_thinking(thinking, text)
    usage = body.get("usage", {})
    return [ParsedOutput(_truncate_at_stop(text, p.stop), _finish(body.get("stop_reason"), ("max_tokens",)),
                         usage.get("input_tokens"), usage.get("output_tokens"))]


def _llama3_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    return {"prompt": _llama3_chat(prompt), "temperature": p.temperature, "top_p": p.top_p,
            "max_gen_len": p.max_tokens}


def _llama3_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    return [ParsedOutput(_truncate_at_stop(body["generation"], p.stop), _finish(body.get("stop_reason"), ("length",)),
                         body.get("prompt_token_count"), body.get("generation_token_count"))]


def _mistral_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": completion_text(prompt), "max_tokens": p.max_tokens, "temperature": p.temperature,
                            "top_p": p.top_p, "stop": list(p.stop)}
    if p.top_k:
        body["top_k"] = p.top_k
    return body


def _mistral_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    return [ParsedOutput(o["text"], _finish(o.get("stop_reason"), ("length",))) for o in body["outputs"]]


def _inference_config(p: SamplingParams, with_top_k: bool) -> dict[str, Any]:
    config: dict[str, Any] = {"maxTokens": p.max_tokens, "temperature": p.temperature, "topP": p.top_p,
                              "stopSequences": [s for s in p.stop if s.strip()]}
    if with_top_k and p.top_k:
        config["topK"] = p.top_k
    return config


def _nova_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    body = {"schemaVersion": "messages-v1", "messages": _content_blocks(prompt),
            "inferenceConfig": _inference_config(p, with_top_k=True)}
    if _system(prompt) is not None:
        body["system"] = [{"text": _system(prompt)}]
    return body


def _converse_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": _content_blocks(prompt), "inferenceConfig": _inference_config(p, False)}
    if _system(prompt) is not None:
        body["system"] = [{"text": _system(prompt)}]
    if p.top_k:
        body["additionalModelRequestFields"] = {"top_k": p.top_k}
    return body


def _message_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    """Nova's InvokeModel response and the Converse response share this shape."""
    content = body["output"]["message"]["content"]
    text = "".join(block.get("text", "") for block in content)
    thinking = "".join(((block.get("reasoningContent") or {}).get("reasoningText") or {}).get("text", "")
                       for block in content)
    text = with_thinking(thinking, text)
    usage = body.get("usage", {})
    return [ParsedOutput(_truncate_at_stop(text, p.stop), _finish(body.get("stopReason"), ("max_tokens",)),
                         usage.get("inputTokens"), usage.get("outputTokens"))]


def _titan_request(prompt: Prompt, p: SamplingParams, n: int) -> dict[str, Any]:
    return {"inputText": completion_text(prompt), "textGenerationConfig": {
        "maxTokenCount": p.max_tokens, "temperature": p.temperature, "topP": p.top_p,
        "stopSequences": list(p.stop)}}


def _titan_response(body: dict[str, Any], p: SamplingParams) -> list[ParsedOutput]:
    return [ParsedOutput(_truncate_at_stop(r["outputText"], p.stop), _finish(r.get("completionReason"), ("length",)),
                         body.get("inputTextTokenCount"), r.get("tokenCount"))
            for r in body["results"]]


ADAPTERS: dict[str, BodyAdapter] = {a.family: a for a in (
    BodyAdapter("cohere-command", chat=False, max_generations=5, build=_cohere_request, parse=_cohere_response),
    BodyAdapter("cohere-command-r", chat=True, max_generations=1, build=_command_r_request,
                parse=_command_r_response),
    BodyAdapter("ai21-j2", chat=False, max_generations=16, build=_j2_request, parse=_j2_response),
    BodyAdapter("anthropic-claude", chat=True, max_generations=1, build=_claude_request, parse=_claude_response),
    BodyAdapter("meta-llama3", chat=True, max_generations=1, build=_llama3_request, parse=_llama3_response),
    BodyAdapter("mistral", chat=False, max_generations=1, build=_mistral_request, parse=_mistral_response),
    BodyAdapter("amazon-nova", chat=True, max_generations=1, build=_nova_request, parse=_message_response),
    BodyAdapter("amazon-titan-text", chat=False, max_generations=1, build=_titan_request, parse=_titan_response),
    BodyAdapter("converse", chat=True, max_generations=1, build=_converse_request, parse=_message_response),
)}

_PREFIXES = (("cohere.command-r", "cohere-command-r"), ("cohere.command", "cohere-command"), ("ai21.j2", "ai21-j2"),
             ("anthropic.claude", "anthropic-claude"),
             ("meta.llama3", "meta-llama3"), ("mistral.", "mistral"), ("amazon.nova", "amazon-nova"),
             ("amazon.titan-text", "amazon-titan-text"))
# Geographies of cross-region (system-defined) inference profile ids: `us.anthropic.claude-...`
PROFILE_GEOGRAPHIES = ("us", "us-gov", "eu", "apac", "jp", "au", "ca", "global")


class UnknownModel(ValueError):
    """A model id whose base model, or that model's request format, is not known; the message says what to do."""


def base_model_id(model_id: str, base_model: str | None = None) -> str:
    """The foundation model behind a Bedrock model id, inference profile id or ARN (the body format and the
    price are the base model's). An application inference profile's ARN does not name its model: give it
    as `base_model`."""
    if base_model:
        return base_model_id(base_model)
    bare = model_id
    if model_id.startswith("arn:"):
        kind, _, bare = model_id.split(":", 5)[-1].partition("/")
        if kind not in ("inference-profile", "foundation-model"):
            raise UnknownModel(f"the base model of {model_id!r} cannot be read from its ARN: give it with "
                               "--base-model (e.g. --base-model anthropic.claude-3-5-haiku-20241022-v1:0)")
    geography, _, rest = bare.partition(".")
    return rest if geography in PROFILE_GEOGRAPHIES and "." in rest else bare


def adapter_for(model_id: str, converse: bool = False, base_model: str | None = None) -> BodyAdapter:
    """The adapter of a Bedrock model id, inference profile id or ARN (the body format is the base model's)."""
    if converse:
        return ADAPTERS["converse"]
    bare = base_model_id(model_id, base_model).split(":", 1)[0]
    for prefix, family in _PREFIXES:
        if bare.startswith(prefix):
            return ADAPTERS[family]
    raise UnknownModel(f"no request format known for Bedrock model {model_id!r}: use --converse (the Converse "
                       "format works for every chat model)")


def with_billed_counts(outputs: list[ParsedOutput], input_tokens: int | None, output_tokens: int | None
                       ) -> list[ParsedOutput]:
    """A response's outputs with the token counts InvokeModel bills in its headers
    (X-Amzn-Bedrock-Input-Token-Count, -Output-Token-Count) where the body gave none: the prompt's on the
    first output (it is billed once per request), the output tokens shared among the generations by their
    length (largest remainders, so they add up to the billed count)."""
    if not outputs:
        return outputs
    first = outputs[0]
    if input_tokens is not None and first.input_tokens is None:
        outputs = [replace(first, input_tokens=input_tokens), *outputs[1:]]
    if output_tokens is None or any(o.output_tokens is not None for o in outputs):
        return outputs
    weights = [max(len(o.text), 1) for o in outputs]
    shares = [output_tokens * w / sum(weights) for w in weights]
    counts = [int(share) for share in shares]
    for index in sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])[: output_tokens - sum(counts)]:
        counts[index] += 1
    return [replace(o, output_tokens=count) for o, count in zip(outputs, counts, strict=True)]
