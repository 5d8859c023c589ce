"""Dollar cost of tokens: a price table (per model, per 1k input / output tokens, on-demand and batch)
and the arithmetic. Pure apart from reading a table file.

The packaged table is `data/prices.json`: only prices we can cite, each model with its source and the date
it was read. Pass your own with a JSON file of the same shape as its models
(`{"model id": {"on_demand": [in_per_1k, out_per_1k], "batch": [in, out]}}`); an entry without a batch price
is billed in batch at its on-demand price (Bedrock's rule for the models without the batch discount: never
understated). A cross-region inference profile (`us.anthropic...`, or its ARN) is priced as its base model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from .safe_files import UnreadableFile, read_regular_file

# Token counts from text, where no tokenizer is at hand. An estimate (a price check, a count the provider
# did not report): English text averages about 4 characters per token with BPE tokenizers.
CHARS_PER_TOKEN = 4
# A token-budget reservation made before a call is sent must not undercount, or concurrent calls overrun
# --max-tokens-total: it counts the prompt at a denser 3 characters per token.
RESERVED_CHARS_PER_TOKEN = 3
PRICES_FILE = "prices.json"  # in the package's data
MAX_PRICES_BYTES = 10_000_000  # a --prices table is a page of models; a larger file is a mistake


@cache
def packaged_prices() -> dict[str, dict[str, tuple[float, float]]]:
    """The packaged table's prices by model (its sources stay in the file)."""
    raw = json.loads(files("selfconsistency").joinpath("data", PRICES_FILE).read_text(encoding="utf-8"))
    return {model: {mode: (float(entry[mode][0]), float(entry[mode][1])) for mode in ("on_demand", "batch")
                    if mode in entry} for model, entry in raw["models"].items()}


@dataclass(frozen=True)
class Price:
    input_per_1k: float
    output_per_1k: float

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return input_tokens / 1000 * self.input_per_1k + output_tokens / 1000 * self.output_per_1k


class PriceTable:
    def __init__(self, table: dict[str, dict[str, tuple[float, float]]] | None = None):
        self._table = {**packaged_prices(), **(table or {})}

    @classmethod
    def from_file(cls, path: Path | None) -> PriceTable:
        if path is None:
            return cls()
        try:  # a regular file, bounded: never /dev/zero (memory without end) or a FIFO (a hang)
            data = read_regular_file(Path(path), MAX_PRICES_BYTES, "a price table")
        except UnreadableFile as exc:
            raise ValueError(f"price table {exc}") from None
        try:
            raw = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
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
        return Price(*entry["batch"]) if batch and "batch" in entry else Price(*entry["on_demand"])


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
