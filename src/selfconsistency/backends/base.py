"""The one protocol every backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..prompts import Prompt
from ..sampling import SamplingParams


class BackendError(Exception):
    """A backend that cannot start or cannot go on; the message says why."""


@dataclass(frozen=True)
class GenerationRequest:
    question_id: str
    temperature: float
    path_index: int
    prompt: Prompt
    params: SamplingParams  # params.seed is this path's own seed


@dataclass(frozen=True)
class Generation:
    request: GenerationRequest
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str  # "stop" (stop sequence or end of turn) or "length"
    logprob_sum: float | None = None  # sum of the sampled tokens' log-probabilities, when known


class BackendConfig(BaseModel):
    """Where and how paths are generated: transport settings, kept apart from sampling settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    threads: int | None = Field(default=None, ge=1)  # local: CPU threads
    batch_size: int = Field(default=8, ge=1, le=128)  # local: sequences decoded together
    base_url: str | None = None  # openai: the server's /v1 URL (default: the OpenAI API)
    api: Literal["chat", "completions"] = "chat"  # openai: which endpoint
    concurrency: int = Field(default=4, ge=1, le=256)  # remote: requests in flight
    requests_per_second: float | None = Field(default=None, gt=0)  # remote: start rate limit
    timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0)  # remote: on 429/5xx, honouring Retry-After
    paths_per_request: int = Field(default=8, ge=1, le=128)  # remote: `n` choices per request


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        """Yield one Generation per request, each as soon as it exists (order may differ)."""
        ...

    def close(self) -> None: ...
