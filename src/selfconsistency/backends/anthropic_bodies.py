"""Anthropic's Messages API, as both Anthropic backends send it: the request body, the response's text and
usage, and what each Claude model takes (sampling parameters, the shortest prompt prefix it caches). Pure.

What Anthropic's documentation says, and where (read 2026-12; the issue's claims checked against it):

- Message Batches (platform.claude.com/docs/en/build-with-claude/batch-processing, and the API reference
  /v1/messages/batches): create takes `requests: [{custom_id, params}]`, `params` being a Messages request;
  a batch holds at most 100,000 requests or 256 MB, whichever comes first; `processing_status` is
  `in_progress`, `canceling` or `ended`; `request_counts` counts processing / succeeded / errored /
  canceled / expired (the last four are zero until the batch ends); results are a JSONL file at
  `results_url`, one line per request, in any order (match on `custom_id`), each `result.type` one of
  succeeded (a Message), errored (an error object), canceled, expired (not processed within 24 hours).
  All usage is billed at 50% of the standard price. A batch may take longer than 5 minutes, so the docs
  advise the 1-hour cache TTL for prompts a batch shares. There is no idempotency key and no metadata on
  a batch: a create retried after a crash cannot be recognised by a token (see anthropic_batch.py).
- custom_id: the SDK's type says only "unique within the batch"; the API reference gives the pattern
  `^[a-zA-Z0-9_-]{1,64}$` (our record ids are 11 base-36 characters: batch_plan.py).
- Errors (platform.claude.com/docs/en/api/errors): a JSON `{"type": "error", "error": {"type", "message"}}`
  with types invalid_request_error (400), authentication_error (401), permission_error (403),
  not_found_error (404), request_too_large (413), rate_limit_error (429, with a `retry-after` header),
  api_error (500), overloaded_error (529). The SDK retries 408/409/429/5xx, honouring retry-after.
  Request size limits: 32 MB for the Messages API, 256 MB for a batch.
- Prompt caching (platform.claude.com/docs/en/build-with-claude/prompt-caching, .../about-claude/pricing):
  `cache_control: {"type": "ephemeral", "ttl": "5m" | "1h"}` on a content block caches the prompt up to
  and including it (system, then messages); usage reports `input_tokens` (after the last breakpoint),
  `cache_creation_input_tokens` (with `cache_creation.ephemeral_5m/1h_input_tokens`),
  `cache_read_input_tokens` and `output_tokens`. A 5-minute write costs 1.25x the base input price, a
  1-hour write 2x, a read 0.1x; these multipliers stack with the batch discount. A prefix shorter than the
  model's minimum is not cached (the request succeeds, both cache counts are 0). The minimums as the docs
  list them: 4,096 tokens for Claude Haiku 4.5, Opus 4.5 and Opus 4.6; 2,048 for Claude Haiku 3.5 and 3;
  1,024 for Claude Sonnet 4.6, 4.5, 4, 3.7 and Opus 4.1, 4. We found no figure we could cite for later
  models: there `--cache-prompt auto` does not turn caching on (`on` does).
- Versions and sampling (platform.claude.com/docs/en/api/versioning, .../api/migration-2026-10-21):
  API version 2026-10-21 removes `temperature`, `top_p` and `top_k` (a request sending any returns a 400),
  and SDK majors from Python 2.0.0 send it by default; 2023-06-01 still takes them. Per model: Claude
  Haiku 4.5 (and the other 4.1-4.6 models) take temperature or top_p, not both (a 400 if both,
  .../models/haiku-4-5/migration-guide); Claude Opus 4.7 and later, and the Claude 5 models (Haiku 5.5:
  .../models/haiku-5-5/migration-guide, "Remove temperature, top_p and top_k"), reject them at any value:
  they sample at their default. So we send `anthropic-version: 2023-06-01` where the model takes a
  temperature; a model that takes none samples at its default (1.0), the run's temperature must say so
  (a 0.7 or a greedy path is refused in one line, never sent and never dropped silently).
- Where the issue differs from the docs: (1) the current Haiku is Claude Haiku 5.5, which takes no
  temperature; Haiku 4.5 (legacy) does. (2) The issue expects caching the 8-shot GSM8K prefix to cut the
  input bill several-fold; that prefix is ~520 tokens, under every Haiku's documented minimum (4,096 for
  Haiku 4.5), so on Haiku nothing is cached (docs/benchmarks.md measures it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..costs import CHARS_PER_TOKEN
from ..prompts import Prompt
from ..sampling import SamplingParams
from .base import ParsedOutput, with_thinking
from .bedrock_bodies import _finish, _truncate_at_stop

SAMPLING_VERSION = "2023-06-01"  # the API version that still takes temperature, top_p and top_k
LATEST_VERSION = "2026-10-21"  # removes them (what the SDK sends by default)
DEFAULT_TEMPERATURE = 1.0  # the Messages API's default
MAX_REQUEST_BYTES = 32_000_000  # the Messages API's request size limit
SAMPLING = ("temperature", "top_p", "top_k")
RETRYABLE_ERRORS = ("overloaded_error", "api_error", "rate_limit_error", "timeout_error")

Sampling = Literal["all", "temperature_or_top_p", "none"]


@dataclass(frozen=True)
class ModelRules:
    sampling: Sampling  # which of temperature / top_p / top_k the model takes
    min_cacheable: int | None  # the shortest prefix it caches, in tokens (None: no documented figure)
    known: bool = True  # the id names a Claude family and version (else the Models API decides)


_NEW_ID = re.compile(r"^claude-(opus|sonnet|haiku|fable|mythos)-(\d+)(?:-(\d))?(?:-\d{8}|-latest)?$")
_OLD_ID = re.compile(r"^claude-(\d)(?:-(\d))?-(opus|sonnet|haiku)(?:-\d{8}|-latest)?$")


def model_rules(model: str) -> ModelRules:
    """What `model` takes, from its id (dated or not). An id of no family we know (a typo, or a model newer
    than this table) is sent the temperature as asked, never dropped: the API takes it or refuses it."""
    new, old = _NEW_ID.match(model), _OLD_ID.match(model)
    if old:
        family, version = old.group(3), int(old.group(1)) + int(old.group(2) or 0) / 10
    elif new:
        family, version = new.group(1), int(new.group(2)) + int(new.group(3) or 0) / 10
    else:
        return ModelRules("temperature_or_top_p", None, known=False)  # sent as asked: the API accepts or refuses
    if family in ("fable", "mythos") or version >= 4.7:
        return ModelRules("none", None)
    if version < 4.1:
        return ModelRules("all", 2048 if family == "haiku" else 1024)
    minimum = 4096 if family == "haiku" or (family == "opus" and version >= 4.5) else 1024
    return ModelRules("temperature_or_top_p", minimum)


def sampling_problem(model: str, temperature: float, top_p: float) -> str | None:
    """Why `model` cannot sample at `temperature` as asked (None: it can): what the user must change, in one line."""
    return settings_problem(model, (temperature,), top_p)


def settings_problem(model: str, temperatures: Iterable[float], top_p: float) -> str | None:
    """Why `model` cannot sample a run's `temperatures` (the greedy path's 0 among them) with `top_p` (None:
    it can): every change the user must make, in one line, so that the next run is not refused for another."""
    rules = model_rules(model)
    if not rules.known:  # a typo, or a model newer than this table: the Models API says which (at start)
        return None
    temperatures = list(dict.fromkeys(temperatures))
    if rules.sampling == "none":
        sampled = [t for t in temperatures if t not in (0, DEFAULT_TEMPERATURE)]
        asked, fixes = [], []
        if sampled:
            asked.append(f"temperature{'s' if len(sampled) > 1 else ''} {', '.join(f'{t:g}' for t in sampled)}")
            fixes.append(f"--temperatures {DEFAULT_TEMPERATURE:g}")
        if 0 in temperatures:
            asked.append("greedy decoding (T=0)")
            fixes.append("--no-greedy")
        if top_p < 1.0:
            asked.append(f"top-p {top_p:g}")
            fixes.append("--top-p 1.0")
        if not fixes:
            return None
        return (f"{model} takes no temperature, top_p or top_k (Anthropic's docs: sampling parameters removed); "
                f"it samples at its default, temperature {DEFAULT_TEMPERATURE:g}, so {' and '.join(asked)} cannot "
                f"be sent: give {' '.join(fixes)}")
    if rules.sampling == "temperature_or_top_p" and top_p < 1.0 and any(t != DEFAULT_TEMPERATURE for t in temperatures):
        return (f"{model} takes temperature or top_p, not both (Anthropic's docs: a 400 if both): give --top-p 1.0 "
                f"or --temperatures {DEFAULT_TEMPERATURE:g}")
    return None


def api_version(model: str) -> str:
    """The anthropic-version header: 2023-06-01 where the model takes a temperature (2026-10-21 takes none)."""
    return LATEST_VERSION if model_rules(model).sampling == "none" else SAMPLING_VERSION


def _text_block(text: str, ttl: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if ttl:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return block


def cache_prefix_chars(prompt: Prompt) -> int:
    """Characters of what a request's cache breakpoint covers: the system message and the exemplar turns
    (everything before the question's own turns, which differ between questions)."""
    turns = list(prompt.messages)
    last = _breakpoint(turns)
    return 0 if last is None else sum(len(content) for _, content in turns[: last + 1])


def _breakpoint(turns: list[tuple[str, str]]) -> int | None:
    """The turn the cache breakpoint goes on: the last exemplar answer before the question, else the system
    message; None when the prompt shares nothing."""
    question_start = len(turns) - 1
    answers = [i for i, (role, _) in enumerate(turns[:question_start]) if role == "assistant"]
    if answers:
        return answers[-1]
    systems = [i for i, (role, _) in enumerate(turns) if role == "system"]
    return systems[-1] if systems else None


def cacheable(model: str, prompt: Prompt, setting: str) -> bool:
    """Whether a request carries a cache breakpoint: `on`, `off`, or `auto` (the prefix, at CHARS_PER_TOKEN
    characters a token, reaches the model's documented minimum)."""
    if setting == "off" or cache_prefix_chars(prompt) == 0:
        return False
    if setting == "on":
        return True
    minimum = model_rules(model).min_cacheable
    return minimum is not None and cache_prefix_chars(prompt) // CHARS_PER_TOKEN >= minimum


def request_body(model: str, prompt: Prompt, params: SamplingParams, cache_ttl: str | None) -> dict[str, Any]:
    """A Messages API request for one path: the chat turns (system apart), the sampling parameters the
    model takes, stop sequences, and a cache breakpoint (`cache_ttl` "5m" or "1h") on the shared prefix."""
    turns = list(prompt.messages)
    mark = _breakpoint(turns) if cache_ttl else None
    system = [_text_block(content, cache_ttl if i == mark else None)
              for i, (role, content) in enumerate(turns) if role == "system"]
    messages = [{"role": role, "content": [_text_block(content, cache_ttl)] if i == mark else content}
                for i, (role, content) in enumerate(turns) if role != "system"]
    body: dict[str, Any] = {"model": model, "max_tokens": params.max_tokens}
    if system:
        body["system"] = system if mark is not None and turns[mark][0] == "system" else \
            "\n\n".join(block["text"] for block in system)
    body["messages"] = messages
    rules = model_rules(model)
    if rules.sampling != "none":
        body["temperature"] = params.temperature
        if params.top_p < 1.0 and rules.sampling == "all":
            body["top_p"] = params.top_p
        if params.top_k and not params.greedy:
            body["top_k"] = params.top_k
    stops = [s for s in params.stop if s.strip()]  # the API refuses whitespace-only stop sequences
    if stops:
        body["stop_sequences"] = stops
    return body


@dataclass(frozen=True)
class Usage:
    """A response's billed tokens, as its usage fields give them."""

    input: int = 0  # after the last cache breakpoint (or all of it, uncached)
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0

    @property
    def prompt(self) -> int:
        """Every prompt token the model read, cached or not."""
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read


def usage_of(usage: dict[str, Any] | None) -> Usage:
    usage = usage or {}
    written = int(usage.get("cache_creation_input_tokens") or 0)
    split = usage.get("cache_creation") or {}
    hour = int(split.get("ephemeral_1h_input_tokens") or 0)
    return Usage(int(usage.get("input_tokens") or 0), written - hour, hour,
                 int(usage.get("cache_read_input_tokens") or 0), int(usage.get("output_tokens") or 0))


def parse_message(message: dict[str, Any], params: SamplingParams) -> ParsedOutput:
    """One path from a Message: its text blocks (a thinking block kept before them), cut at the first stop
    sequence (whitespace-only ones were not sent), and its tokens (the prompt's, cached or not)."""
    content = message["content"]
    if not isinstance(content, list):
        raise TypeError("content is not a list of blocks")
    text = "".join(block["text"] for block in content if block.get("type") == "text")
    thinking = "".join(block.get("thinking", "") for block in content if block.get("type") == "thinking")
    if not isinstance(text, str):
        raise TypeError("an answer that is not text")
    usage = usage_of(message.get("usage"))
    return ParsedOutput(_truncate_at_stop(with_thinking(thinking, text), params.stop),
                        _finish(message.get("stop_reason"), ("max_tokens",)), usage.prompt, usage.output)


def manifest_of(usages: list[Usage], total: int, errors: int) -> dict[str, int]:
    """A job's counts in the keys of Bedrock's manifest (what the spend ledger reads), with the cache's."""
    return {"totalRecordCount": total, "processedRecordCount": len(usages) + errors,
            "successRecordCount": len(usages), "errorRecordCount": errors,
            "inputTokenCount": sum(u.input for u in usages), "outputTokenCount": sum(u.output for u in usages),
            "cacheWrite5mInputTokenCount": sum(u.cache_write_5m for u in usages),
            "cacheWrite1hInputTokenCount": sum(u.cache_write_1h for u in usages),
            "cacheReadInputTokenCount": sum(u.cache_read for u in usages)}
