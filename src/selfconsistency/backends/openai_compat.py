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

from .base import BackendConfig, BackendError, Generation, GenerationRequest, TokenBudget, run_concurrently


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

        self.config = config
        self.model = config.model
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if config.base_url is None:
                raise BackendError("set OPENAI_API_KEY, or --base-url for a server that needs no key")
            api_key = "unused"  # local servers ignore it; the client insists on one
        self._client = openai.OpenAI(api_key=api_key, base_url=config.base_url, timeout=config.timeout_s,
                                     max_retries=config.max_retries)
        self._openai = openai
        self._limiter = _RateLimiter(config.requests_per_second)
        self.budget = TokenBudget.for_config(config)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        chunks = []
        for _, group in groupby(requests, key=lambda r: (r.question_id, r.temperature)):
            group = list(group)
            size = 1 if group[0].params.greedy else self.config.paths_per_request
            chunks += [group[i: i + size] for i in range(0, len(group), size)]
        def delivered(result: tuple[list[Generation], list[GenerationRequest]]):
            generations, missing = result
            # A server that ignored `n` returned fewer choices: ask for the rest one by one.
            return generations, [partial(self._call, [request]) for request in missing]

        yield from run_concurrently([partial(self._call, chunk) for chunk in chunks], self.config.concurrency,
                                    delivered)

    def _call(self, chunk: list[GenerationRequest]) -> tuple[list[Generation], list[GenerationRequest]]:
        first = chunk[0]
        params = first.params
        body = {"model": self.model, "n": len(chunk), "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_tokens, "seed": params.seed,
                "stop": list(params.stop)[:4] or None,
                "extra_body": {"top_k": params.top_k} if params.top_k else None}
        # Worst case before sending: ~3 characters per prompt token, every choice at max_tokens.
        prompt_chars = sum(len(m["content"]) for m in first.prompt.chat_messages) \
            if self.config.api == "chat" else len(first.prompt.text)
        booked = prompt_chars // 3 + len(chunk) * params.max_tokens
        self.budget.reserve(booked)
        self._limiter.wait()
        started = time.perf_counter()
        try:
            if self.config.api == "chat":
                response = self._client.chat.completions.create(messages=first.prompt.chat_messages,
                                                                logprobs=True, **body)
            else:
                response = self._client.completions.create(prompt=first.prompt.text, logprobs=1, **body)
        except self._openai.APIError as exc:
            self.budget.settle(booked, 0)
            raise BackendError(f"{self.config.base_url or 'OpenAI API'}: {type(exc).__name__}: "
                               f"{getattr(exc, 'message', exc)}") from None
        elapsed = time.perf_counter() - started
        choices = sorted(response.choices, key=lambda c: c.index)[: len(chunk)]
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        total_completion = usage.completion_tokens if usage else 0
        self.budget.settle(booked, prompt_tokens + total_completion if usage else booked)
        generations = []
        for request, choice in zip(chunk, choices, strict=False):
            text, token_logprobs = self._text_and_logprobs(choice)
            tokens = len(token_logprobs) if token_logprobs else total_completion // max(len(choices), 1)
            generations.append(Generation(
                request=request, text=text, prompt_tokens=prompt_tokens, completion_tokens=tokens,
                latency_s=elapsed / len(choices), finish_reason="length" if choice.finish_reason == "length"
                else "stop", logprob_sum=float(sum(token_logprobs)) if token_logprobs else None))
        return generations, chunk[len(choices):]

    def _text_and_logprobs(self, choice) -> tuple[str, list[float]]:
        if self.config.api == "chat":
            content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
            return choice.message.content or "", [t.logprob for t in content]
        logprobs = choice.logprobs.token_logprobs if choice.logprobs else None
        return choice.text or "", [lp for lp in (logprobs or []) if lp is not None]

    def close(self) -> None:
        self._client.close()
