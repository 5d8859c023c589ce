"""The one protocol every backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        """Yield one Generation per request, each as soon as it exists (order may differ)."""
        ...

    def close(self) -> None: ...
