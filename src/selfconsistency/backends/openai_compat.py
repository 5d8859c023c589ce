"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp's server, OpenAI itself) through the `openai` client.

Paths of one (question, temperature) go out together as `n` choices of one request where the server
allows it (the prompt is then processed once); a server that returns fewer choices gets the rest as
separate requests. Each request carries the seed of its first path; servers that honour seeds make the
run reproducible. Requests run concurrently in threads (`concurrency`), started no faster than
`requests_per_second`; the client retries 429 and 5xx answers with backoff, honouring Retry-After.
The API key comes from OPENAI_API_KEY and is never written anywhere.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import groupby
from typing import Annotated, Any, Literal

from pydantic import Field

from ..audit import redact_message, redact_urls
from ..costs import RESERVED_CHARS_PER_TOKEN
from ..options import Cli, Identity
from ..prompts import Prompt, completion_text
from ..sampling import SamplingParams
from .base import (
    REMOTE,
    BackendConfig,
    BackendError,
    BackendSpec,
    ConcurrencyOptions,
    EndpointOptions,
    Generation,
    GenerationRequest,
    ParsedOutput,
    TokenBudget,
    generations_from,
    path_key,
    run_concurrently,
    show_body,
    with_thinking,
)

OPENAI = "OpenAI-compatible servers (--backend openai, openai-batch)"


class OpenAIServerOptions(EndpointOptions):
    """Where an OpenAI-compatible API is (`--base-url`; OPENAI_API_KEY goes there), and which endpoint
    (shared with the Batch API)."""

    api: Annotated[Literal["chat", "completions"], Cli(
        "'chat' (chat completions) or 'completions'.", OPENAI, cli_type=str), Identity()] = "chat"
    timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0)  # on 429/5xx, honouring Retry-After
    paths_per_request: int = Field(default=8, ge=1, le=128)  # `n` choices per request


class OpenAIOptions(OpenAIServerOptions, ConcurrencyOptions):
    requests_per_second: Annotated[float | None, Field(gt=0, le=1_000_000), Cli(
        "Remote backends: start at most this many requests per second.", REMOTE)] = None


class _RateLimiter:
    """Spaces request starts at least 1/rate seconds apart, across threads."""

    def __init__(self, per_second: float | None):
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(max(0.0, start - now))


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: BackendConfig):
        import openai

        self.options = config.options_as(OpenAIOptions)
        self.model = config.model
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if self.options.base_url is None:
                raise BackendError("set OPENAI_API_KEY, or --base-url for a server that needs no key")
            api_key = "unused"  # local servers ignore it; the client insists on one
        self._client = openai.OpenAI(api_key=api_key, base_url=self.options.base_url, timeout=self.options.timeout_s,
                                     max_retries=self.options.max_retries)
        self._openai = openai
        self._limiter = _RateLimiter(self.options.requests_per_second)
        self.budget = TokenBudget.for_config(config)

    def rendered_prompt(self, prompt: Prompt) -> str | list[dict[str, str]]:
        """What the server is sent, for --log-prompts: chat messages (the server applies its template) or
        the completion text."""
        return prompt.chat_messages if self.options.api == "chat" else prompt.text

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        chunks = []
        for _, group in groupby(requests, key=lambda r: (r.question_id, r.temperature)):
            group = list(group)
            size = 1 if group[0].params.greedy else self.options.paths_per_request
            chunks += [group[i: i + size] for i in range(0, len(group), size)]
        def delivered(result: tuple[list[Generation], list[GenerationRequest]]):
            generations, missing = result
            # A server that ignored `n` returned fewer choices: ask for the rest one by one.
            return generations, [partial(self._call, [request]) for request in missing]

        yield from run_concurrently([partial(self._call, chunk) for chunk in chunks], self.options.concurrency,
                                    delivered)

    def _call(self, chunk: list[GenerationRequest]) -> tuple[list[Generation], list[GenerationRequest]]:
        first = chunk[0]
        body = request_body(self.model, first.prompt, first.params, len(chunk), self.options.api,
                            server_fields=self.options.base_url is not None)
        # Worst case before sending: the prompt counted densely, every choice at max_tokens.
        prompt_chars = sum(len(m["content"]) for m in body["messages"]) if "messages" in body else len(body["prompt"])
        booked = self.budget.reserve(prompt_chars // RESERVED_CHARS_PER_TOKEN, len(chunk) * first.params.max_tokens,
                                     [path_key(r) for r in chunk])
        self._limiter.wait()
        started = time.perf_counter()
        endpoint = self._client.chat.completions if self.options.api == "chat" else self._client.completions
        standard = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
        extra = {k: v for k, v in body.items() if k in SERVER_FIELDS}
        try:
            response = endpoint.create(**standard, extra_body=extra or None)
        except self._openai.APIError as exc:
            self.budget.settle(booked, 0, 0)
            raise BackendError(f"{redact_urls(self.options.base_url or 'OpenAI API')}: {type(exc).__name__}: "
                               f"{redact_message(str(getattr(exc, 'message', exc)), self.options.base_url)}"
                               ) from None
        elapsed = time.perf_counter() - started
        outputs = parse_response(response.model_dump(), self.options.api)[: len(chunk)]
        usage = response.usage
        self.budget.settle(booked, *((usage.prompt_tokens, usage.completion_tokens) if usage
                                     else (booked.prompt, booked.output)))
        generations = list(generations_from(chunk, outputs, elapsed / max(len(outputs), 1)))
        return generations, chunk[len(outputs):]

    def close(self) -> None:
        self._client.close()


# Sampling fields outside the OpenAI API that self-hosted servers take (vLLM, llama.cpp's server; Ollama
# ignores them). Sent explicitly because llama-cpp-python's server otherwise applies its own defaults
# (repeat_penalty 1.1, min_p 0.05), which change even greedy paths; OpenAI refuses unknown fields.
SERVER_FIELDS = ("top_k", "min_p", "repeat_penalty")


def request_body(model: str, prompt: Prompt, params: SamplingParams, n: int, api: str,
                 server_fields: bool) -> dict[str, Any]:
    """The JSON body of /v1/chat/completions (api "chat") or /v1/completions for `n` paths of one prompt,
    asking for log-probabilities; with `server_fields`, the SERVER_FIELDS that make a self-hosted server
    sample exactly as asked (top-k, and no min-p cut or repetition penalty, as the embedded backend)."""
    body: dict[str, Any] = {"model": model, "n": n, "temperature": params.temperature, "top_p": params.top_p,
                            "max_tokens": params.max_tokens, "seed": params.seed}
    if params.stop:
        body["stop"] = list(params.stop)[:4]  # OpenAI takes at most 4
    if api == "chat":
        body.update(messages=prompt.chat_messages, logprobs=True)
    else:
        body.update(prompt=completion_text(prompt), logprobs=1)
    if server_fields:
        body.update(min_p=0.0, repeat_penalty=1.0)
        if params.top_k:  # 0 (no cut) is left out: vLLM takes -1 for that, llama.cpp anything <= 0
            body["top_k"] = params.top_k
    return body


def parse_response(response: dict[str, Any], api: str) -> list[ParsedOutput]:
    """The choices of a (chat) completion response, in index order. The prompt's tokens go to the first
    choice (billed once); each choice's own tokens are its log-probability count, or an even share."""
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = response.get("usage") or {}
    outputs = []
    for position, choice in enumerate(choices):
        logprobs = choice.get("logprobs") or {}
        if api == "chat":
            message = choice.get("message") or {}
            # vLLM, DeepSeek and llama.cpp's server give a reasoning model's thinking apart from its answer
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            text = with_thinking(reasoning if isinstance(reasoning, str) else None, message.get("content") or "")
            token_logprobs = [t["logprob"] for t in logprobs.get("content") or []]
        else:
            text = choice.get("text") or ""
            token_logprobs = [lp for lp in logprobs.get("token_logprobs") or [] if lp is not None]
        share = (usage.get("completion_tokens") or 0) // max(len(choices), 1)
        reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        outputs.append(ParsedOutput(
            text=text, finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            input_tokens=usage.get("prompt_tokens", 0) if position == 0 else 0,
            output_tokens=len(token_logprobs) or share,
            logprob_sum=float(sum(token_logprobs)) if token_logprobs else None,
            reasoning_tokens=None if reasoning_tokens is None else int(reasoning_tokens) // max(len(choices), 1)))
    return outputs


def _start(config: BackendConfig) -> OpenAIBackend:
    return OpenAIBackend(config)


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    options = config.options_as(OpenAIOptions)
    # self-hosted servers (a --base-url) get the extra sampling fields
    return show_body(request_body(config.model, request.prompt, request.params, 1, options.api,
                                  options.base_url is not None))


BACKEND = BackendSpec(_start, OpenAIOptions, summary="an OpenAI-compatible server, see --base-url",
                      preview=_preview)
