"""Claude through Anthropic's own Messages API, one request per path (the API has no `n`), through the
official `anthropic` SDK. Request bodies and what each model takes are `anthropic_bodies.py`'s.

The key comes from ANTHROPIC_API_KEY and the server from --base-url or the SDK's own ANTHROPIC_BASE_URL; the
key is never written anywhere. The SDK retries 429, 5xx and 529 (overloaded) with backoff, honouring
retry-after. Before anything is sent the model is looked up (the Models API): a missing or wrong key, an
unknown or retired model end the run in one line. `--cache-prompt` puts a 5-minute cache breakpoint on the
shared exemplar prefix (the batch backend uses the 1-hour TTL); the token budget counts cached tokens too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import Field

from ..audit import redact_message, redact_urls
from ..costs import CHARS_PER_TOKEN, RESERVED_CHARS_PER_TOKEN
from ..options import Cli
from .anthropic_bodies import (
    DEFAULT_TEMPERATURE,
    MAX_REQUEST_BYTES,
    SAMPLING,
    api_version,
    cacheable,
    model_rules,
    parse_message,
    request_body,
    settings_problem,
    usage_of,
)
from .base import (
    BackendConfig,
    BackendError,
    BackendSpec,
    ConcurrencyOptions,
    EndpointOptions,
    Generation,
    GenerationRequest,
    TokenBudget,
    generations_from,
    path_key,
    run_concurrently,
    show_body,
)

log = logging.getLogger(__name__)

ANTHROPIC = "Anthropic's API (--backend anthropic, anthropic-batch)"


class AnthropicServerOptions(EndpointOptions):
    """What both Anthropic backends share: the server (`--base-url`) and prompt caching."""

    cache_prompt: Annotated[Literal["auto", "on", "off"], Cli(
        "Prompt caching: a cache breakpoint on the prefix every question shares (the system prompt or the "
        "exemplar turns). auto: where that prefix reaches the model's documented minimum (it is not cached "
        "below it).", ANTHROPIC, cli_type=str, metavar="auto|on|off")] = "auto"
    timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0)  # 429 / 5xx / 529, honouring retry-after


class AnthropicOptions(AnthropicServerOptions, ConcurrencyOptions):
    pass


def make_client(options: AnthropicServerOptions, model: str):
    """The SDK's client, sending the API version under which `model` takes the sampling parameters."""
    import anthropic

    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise BackendError("set ANTHROPIC_API_KEY to use Anthropic's API (the key is never stored)")
    return anthropic.Anthropic(api_key=key, base_url=options.base_url, timeout=options.timeout_s,
                               max_retries=options.max_retries,
                               default_headers={"anthropic-version": api_version(model)})


def where(client) -> str:
    return redact_urls(str(client.base_url)).rstrip("/")


@contextmanager
def api_errors(client, what: str):
    """The SDK's errors as one-line BackendErrors: the server, what was being done, the error's type and message."""
    import anthropic

    try:
        yield
    except anthropic.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        kind = error.get("type") or type(exc).__name__
        message = redact_message(str(error.get("message") or exc.message), str(client.base_url))
        if isinstance(exc, anthropic.AuthenticationError):
            message += " (check ANTHROPIC_API_KEY)"
        raise BackendError(f"{where(client)}: {what}: {kind}: {message}") from None
    except anthropic.APIConnectionError as exc:
        raise BackendError(f"{where(client)}: {what}: cannot reach the server ({type(exc).__name__}); check "
                           "--base-url / ANTHROPIC_BASE_URL and run again") from None


def check_model(client, model: str) -> int | None:
    """The Models API knows `model` and it is not retired (a missing or wrong key fails here first); returns
    its context window in tokens, when the API says."""
    import anthropic

    try:
        with api_errors(client, f"looking up model {model}"):
            info = client.models.retrieve(model)
    except BackendError as exc:
        if "not_found_error" in str(exc) or "NotFoundError" in str(exc):
            raise BackendError(f"unknown model {model!r}: {where(client)} does not know it (model ids as "
                               "Anthropic's Models API lists them, e.g. claude-haiku-4-5)") from None
        raise
    except anthropic.AnthropicError as exc:
        raise BackendError(f"{where(client)}: looking up model {model}: {exc}") from None
    if getattr(info, "lifecycle", "active") == "retired":
        raise BackendError(f"model {model} is retired: requests naming it fail; choose a current model")
    return getattr(info, "max_input_tokens", None)


def create_message(client, body: dict[str, Any]) -> dict[str, Any]:
    """messages.create with `body`: the sampling parameters, which SDK 2.x no longer names (API version
    2026-10-21 removed them), go as extra body fields."""
    sampling = {key: body[key] for key in SAMPLING if key in body}
    message = client.messages.create(**{k: v for k, v in body.items() if k not in SAMPLING},
                                     extra_body=sampling or None)
    return message.model_dump()


def check_settings(settings: Any) -> None:
    """Before the run directory records anything: every temperature of the run (the greedy path's 0 too)
    is one the model takes, or the run is refused in one line (never sent, never silently dropped)."""
    problem = settings_problem(settings.model, sorted(settings.settings(), key=lambda t: t == 0),
                               settings.sampling.top_p)  # every fix at once: the sampled ones first, then greedy
    if problem:
        raise BackendError(problem)
    note = sampling_note(settings)
    if note:
        log.warning(note)


def sampling_note(settings: Any) -> str | None:
    """For a model that takes no sampling parameters: its paths come at its default temperature, unsent."""
    if model_rules(settings.model).sampling == "none" and model_rules(settings.model).known:
        return (f"{settings.model} takes no temperature, top_p or top_k: its paths are sampled at its default, "
                f"temperature {DEFAULT_TEMPERATURE:g} (the run's setting), and none is sent")
    return None


def checked_size(request: GenerationRequest, body: dict[str, Any], context: int | None = None) -> None:
    """A request within the Messages API's size limit and, at CHARS_PER_TOKEN characters a token, the
    model's context window (`context`, from the Models API): else the run is refused before anything is sent."""
    prompt = sum(len(content) for _, content in request.prompt.messages) // CHARS_PER_TOKEN
    if context is not None and prompt + request.params.max_tokens > context:
        raise BackendError(f"question {request.question_id}'s prompt is ~{prompt:,} tokens (at {CHARS_PER_TOKEN} "
                           f"characters a token), past the model's context window of {context:,} with --max-tokens "
                           f"{request.params.max_tokens}: shorten it (--max-question-chars) or leave it out of the "
                           "data; nothing was sent")
    size = len(json.dumps(body, ensure_ascii=False).encode())
    if size > MAX_REQUEST_BYTES:
        raise BackendError(f"question {request.question_id}'s request is {size / 1e6:,.1f} MB, over the Messages "
                           f"API's limit of {MAX_REQUEST_BYTES / 1e6:.0f} MB per request: shorten it or leave it "
                           "out of the data; nothing was sent")


class AnthropicBackend:
    name = "anthropic"

    def __init__(self, config: BackendConfig):
        self.options = config.options_as(AnthropicOptions)
        self.model = config.model
        self.client = make_client(self.options, self.model)
        self.context = check_model(self.client, self.model)
        self.budget = TokenBudget.for_config(config)

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        ttl = "5m" if cacheable(self.model, request.prompt, self.options.cache_prompt) else None
        return request_body(self.model, request.prompt, request.params, ttl)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        bodies = [(request, self.body(request)) for request in requests]
        for request, body in bodies:  # every request checked before the first is sent
            checked_size(request, body, self.context)
        yield from run_concurrently([partial(self._call, request, body) for request, body in bodies],
                                    self.options.concurrency, lambda generations: (generations, []))

    def _call(self, request: GenerationRequest, body: dict[str, Any]) -> list[Generation]:
        booked = self.budget.reserve(len(json.dumps(body)) // RESERVED_CHARS_PER_TOKEN, request.params.max_tokens,
                                     [path_key(request)])
        started = time.perf_counter()
        try:
            with api_errors(self.client, f"calling {self.model}"):
                message = create_message(self.client, body)
        except BackendError:
            self.budget.settle(booked, 0, 0)
            raise
        usage = usage_of(message.get("usage"))
        self.budget.settle(booked, usage.prompt, usage.output)
        output = parse_message(message, request.params)
        return list(generations_from([request], [output], time.perf_counter() - started))

    def close(self) -> None:
        self.client.close()


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    options = config.options_as(AnthropicOptions)
    ttl = "5m" if cacheable(config.model, request.prompt, options.cache_prompt) else None
    return show_body(request_body(config.model, request.prompt, request.params, ttl))


BACKEND = BackendSpec(AnthropicBackend, AnthropicOptions, summary="Claude on Anthropic's Messages API",
                      preview=_preview, check_settings=check_settings, sampling_note=sampling_note)
