"""Dollar cost of tokens: a price table (per model, per 1k input / output tokens, on-demand and batch)
and the arithmetic. Pure apart from reading a table file.

The packaged table holds only prices we can cite; pass your own with a JSON file of the same shape
(`{"model id": {"on_demand": [in_per_1k, out_per_1k], "batch": [in, out]}}`). Batch defaults to half
of on-demand, as Bedrock and OpenAI price it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# Token counts from text, where no tokenizer is at hand. An estimate (a price check, a count the provider
# did not report): English text averages about 4 characters per token with BPE tokenizers.
CHARS_PER_TOKEN = 4
# A token-budget reservation made before a call is sent must not undercount, or concurrent calls overrun
# --max-tokens-total: it counts the prompt at a denser 3 characters per token.
RESERVED_CHARS_PER_TOKEN = 3

# Cohere Command on Bedrock, on-demand, as used in the AWS blog post on self-consistency with batch
# inference: $0.0015 per 1k input tokens, $0.0020 per 1k output tokens.
# GPT-4o mini on the OpenAI API (openai.com/api/pricing): $0.15 per 1M input tokens, $0.60 per 1M output;
# the Batch API at half of that.
# Claude 3 Haiku and Claude 3.5 Haiku on Bedrock (aws.amazon.com/bedrock/pricing, Anthropic, on-demand):
# $0.00025 / $0.00125 and $0.0008 / $0.004 per 1k input / output tokens; batch at half.
# A cross-region inference profile (`us.anthropic...`, or its ARN) is priced as its base model.
# Claude on Anthropic's API (platform.claude.com/docs/en/about-claude/pricing and each model's overview page,
# read 2026-12-07): per million input / output tokens, Haiku 4.5 $1 / $5, Haiku 5.5 $0.10 / $0.50 (prompts up
# to 100,000 tokens; 5x above, not modelled), Sonnet 5.5 $2 / $10, Opus 5.5 $4 / $20, Opus 4.5 to 4.8 and
# Opus 5 $5 / $25, Sonnet 4.5 and 4.6 $3 / $15; the Message Batches API at half (batch-processing page).
# Cache writes cost 1.25x (5-minute TTL) or 2x (1-hour) the input price, reads 0.1x (CACHE_* below).
# Claude Haiku 4.5 on Bedrock: $1 / $5 on the global endpoint (regional ones 10% more), batch at half, as
# AWS's pricing page is quoted (we could not read it directly; give --prices to use your region's).
PACKAGED_PRICES: dict[str, dict[str, tuple[float, float]]] = {
    "claude-haiku-4-5": {"on_demand": (0.001, 0.005)},
    "claude-haiku-5-5": {"on_demand": (0.0001, 0.0005)},
    "claude-sonnet-4-5": {"on_demand": (0.003, 0.015)},
    "claude-sonnet-4-6": {"on_demand": (0.003, 0.015)},
    "claude-sonnet-5-5": {"on_demand": (0.002, 0.010)},
    "claude-opus-4-5": {"on_demand": (0.005, 0.025)},
    "claude-opus-4-6": {"on_demand": (0.005, 0.025)},
    "claude-opus-4-7": {"on_demand": (0.005, 0.025)},
    "claude-opus-4-8": {"on_demand": (0.005, 0.025)},
    "claude-opus-5": {"on_demand": (0.005, 0.025)},
    "claude-opus-5-5": {"on_demand": (0.004, 0.020)},
    "anthropic.claude-haiku-4-5-20251001-v1:0": {"on_demand": (0.001, 0.005)},
    "cohere.command-text-v14": {"on_demand": (0.0015, 0.0020)},
    "anthropic.claude-3-haiku-20240307-v1:0": {"on_demand": (0.00025, 0.00125)},
    "anthropic.claude-3-5-haiku-20241022-v1:0": {"on_demand": (0.0008, 0.004)},
    "gpt-4o-mini": {"on_demand": (0.00015, 0.0006)},
}


@dataclass(frozen=True)
class Price:
    input_per_1k: float
    output_per_1k: float

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return input_tokens / 1000 * self.input_per_1k + output_tokens / 1000 * self.output_per_1k


class PriceTable:
    def __init__(self, table: dict[str, dict[str, tuple[float, float]]] | None = None):
        self._table = {**PACKAGED_PRICES, **(table or {})}

    @classmethod
    def from_file(cls, path: Path | None) -> PriceTable:
        if path is None:
            return cls()
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"price table {path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"price table {path}: malformed JSON: {exc}") from None
        return cls(_checked_table(path, raw))

    def price(self, model: str, batch: bool = False, base_model: str | None = None) -> Price:
        """`base_model`: the foundation model an application inference profile ARN stands for (--base-model),
        priced as it when the table has no entry for the ARN itself."""
        entry = (self._table.get(model) or (base_model and self._table.get(base_model))
                 or self._table.get(_base_model(base_model or model))
                 or self._table.get(_DATED.sub("", model)))  # claude-haiku-4-5-20251001 as claude-haiku-4-5
        if entry is None:
            raise KeyError(f"no price for {model!r}" + (f" (base model {base_model!r})" if base_model else "")
                           + ": give a price file")
        if batch and "batch" in entry:
            return Price(*entry["batch"])
        input_price, output_price = entry["on_demand"]
        return Price(input_price / 2, output_price / 2) if batch else Price(input_price, output_price)


def _checked_table(path: Path, raw: object) -> dict[str, dict[str, tuple[float, float]]]:
    shape = '{"model": {"on_demand": [in, out], "batch": [in, out]}} (USD per 1k tokens)'
    if not isinstance(raw, dict):
        raise ValueError(f"price table {path}: expected {shape}")
    table = {}
    for model, modes in raw.items():
        if not isinstance(modes, dict) or "on_demand" not in modes or not set(modes) <= {"on_demand", "batch"}:
            raise ValueError(f"price table {path}: {model!r} needs on_demand (and optionally batch): {shape}")
        for mode, pair in modes.items():
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x < 1e6 for x in pair)):
                raise ValueError(f"price table {path}: {model!r} {mode} must be [in, out], two prices >= 0")
        table[model] = {mode: (float(pair[0]), float(pair[1])) for mode, pair in modes.items()}
    return table


# Prompt caching, as Anthropic prices it (on its API and on Bedrock): a multiple of the input price.
CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ = 1.25, 2.0, 0.1
CACHE_KEYS = ("cacheWrite5mInputTokenCount", "cacheWrite1hInputTokenCount", "cacheReadInputTokenCount")


def cached_input(manifest: dict[str, int]) -> int:
    """The prompt tokens a job's manifest counts as written to or read from a prompt cache."""
    return sum(int(manifest.get(key) or 0) for key in CACHE_KEYS)


def job_cost(price: Price, manifest: dict[str, int]) -> float:
    """A batch job's cost from the token counts of its manifest (Bedrock's keys, which the OpenAI and
    Anthropic batch backends write too; the Anthropic one adds its cache writes and reads)."""
    write_5m, write_1h, read = (int(manifest.get(key) or 0) for key in CACHE_KEYS)
    weighted = CACHE_WRITE_5M * write_5m + CACHE_WRITE_1H * write_1h + CACHE_READ * read
    return price.cost(manifest.get("inputTokenCount", 0) + weighted, manifest.get("outputTokenCount", 0))


def uncached_cost(price: Price, manifest: dict[str, int]) -> float:
    """What a job's tokens would have cost with no prompt caching (every prompt token at the input price)."""
    return price.cost(manifest.get("inputTokenCount", 0) + cached_input(manifest), manifest.get("outputTokenCount", 0))


_DATED = re.compile(r"-\d{8}$")  # an Anthropic model id's snapshot date


def _base_model(model: str) -> str | None:
    """The foundation model a Bedrock inference profile id or ARN stands for (priced as it), if it says."""
    from .backends.bedrock_bodies import UnknownModel, base_model_id

    try:
        return base_model_id(model)
    except UnknownModel:
        return None
