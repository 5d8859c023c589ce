"""A batch run's spend ledger: what the run was billed (every job's manifest and every on-demand call, in
the providers' own counts, kept in the run's store), checked before every job and every on-demand call
against --max-cost and --max-tokens-total; and the estimate of what records will cost, shown before they
are sent and by `run --dry-run`: the expected cost (at a mean output length, measured on the run's stored
paths or stated with --mean-output-tokens) beside the worst case (every path at --max-tokens), which is what
the caps are checked against."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..costs import CACHE_READ, CHARS_PER_TOKEN, Price, PriceTable, cached_input, job_cost
from .base import BackendConfig, BackendError, BudgetExceeded, dollars
from .batch_plan import PerBody, Record

if TYPE_CHECKING:
    from .batch_service import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mean:
    """Tokens one request's prompt, or one path's output, takes on average, and where that figure comes from."""

    tokens: float
    source: str  # "--mean-output-tokens", "measured on the run's 1,234 stored paths"


@dataclass(frozen=True)
class Estimate:
    """What some records would use. Prompt: estimated from their bodies (CHARS_PER_TOKEN characters a token,
    billed once per record), or a stated or measured mean a record; output: at most every path at its
    max_tokens, expected at a mean a path. The worst case counts the larger prompt figure and every path at
    max_tokens: what the caps are checked against."""

    records: int
    paths: int
    prompt_chars_tokens: int  # the bodies' characters / CHARS_PER_TOKEN
    worst_output_tokens: int
    prompt_mean: Mean | None = None
    output_mean: Mean | None = None

    @property
    def expected_prompt_tokens(self) -> int:
        return self.prompt_chars_tokens if self.prompt_mean is None else round(self.records * self.prompt_mean.tokens)

    @property
    def worst_prompt_tokens(self) -> int:
        return max(self.prompt_chars_tokens, self.expected_prompt_tokens)

    @property
    def expected_output_tokens(self) -> int | None:
        if self.output_mean is None:
            return None
        return min(round(self.paths * self.output_mean.tokens), self.worst_output_tokens)

    @property
    def worst_tokens(self) -> int:
        return self.worst_prompt_tokens + self.worst_output_tokens

    def worst(self, price: Price) -> float:
        return price.cost(self.worst_prompt_tokens, self.worst_output_tokens)

    def expected(self, price: Price) -> float | None:
        output = self.expected_output_tokens
        return None if output is None else price.cost(self.expected_prompt_tokens, output)

    def prompt_said(self) -> str:
        if self.prompt_mean is None:
            return f"~{self.prompt_chars_tokens:,} prompt tokens at {CHARS_PER_TOKEN} characters a token"
        return (f"~{self.expected_prompt_tokens:,} prompt tokens at {self.prompt_mean.tokens:,.1f} a request, "
                f"{self.prompt_mean.source}")

    def output_said(self) -> str:
        expected = self.expected_output_tokens
        if expected is None:
            return "output length unknown: give --mean-output-tokens"
        return f"~{expected:,} output tokens at {self.output_mean.tokens:,.1f} a path, {self.output_mean.source}"

    def describe(self, price: Price | None) -> str:
        """One line: the records, the expected cost and tokens, and the worst case."""
        head = f"{self.records:,} records ({self.paths:,} paths)"
        worst = f"{self.worst_tokens:,} tokens, every path at --max-tokens"
        if price is None:
            return f"{head}: {self.prompt_said()}; {self.output_said()}; at most {worst}; no price known"
        cost = self.expected(price)
        expected = f"expected ~{dollars(cost)}" if cost is not None else "expected cost unknown"
        return (f"{head}: {expected} ({self.prompt_said()}; {self.output_said()}); at most "
                f"{dollars(self.worst(price))} ({worst})")


def estimate(records: list[Record], prompt_mean: Mean | None = None, output_mean: Mean | None = None) -> Estimate:
    body_tokens = PerBody(lambda body: len(json.dumps(body)) // CHARS_PER_TOKEN)
    return Estimate(records=len(records), paths=sum(len(r.requests) for r in records),
                    prompt_chars_tokens=sum(body_tokens(r.body) for r in records),
                    worst_output_tokens=sum(len(r.requests) * r.requests[0].params.max_tokens for r in records),
                    prompt_mean=prompt_mean, output_mean=output_mean)


def mean_of(stated: int | None, flag: str, measured: tuple[float, int] | None, what: str) -> Mean | None:
    """A stated mean (the option `flag`), else the run's measured one (over `measured[1]` `what`), else None."""
    if stated is not None:
        return Mean(float(stated), f"stated with {flag}")
    if measured is not None and measured[1]:
        return Mean(measured[0], f"measured on the run's {measured[1]:,} stored {what}")
    return None


def run_means(budget: Any, store: Any) -> tuple[Mean | None, Mean | None]:
    """(prompt, output) means for an estimate: the stated ones, else the run's stored paths' (`store` may be None)."""
    return (mean_of(budget.mean_prompt_tokens, "--mean-prompt-tokens",
                    store.prompt_tokens_per_request() if store is not None else None, "requests"),
            mean_of(budget.mean_output_tokens, "--mean-output-tokens",
                    store.output_tokens_per_path() if store is not None else None, "paths"))


class SpendLedger:
    def __init__(self, store: JobStore, backend: str, model: str, config: BackendConfig,
                 priced_as: str | None = None, cacheable: Callable[[list[Record]], int] | None = None):
        self.store = store
        self.backend = backend
        self.model = model
        self.config = config
        # the foundation model the calls are billed as (an application inference profile's, as Bedrock names it)
        self.priced_as = priced_as or getattr(config.options, "base_model", None)
        self.cacheable = cacheable  # records -> their prompt tokens a prompt cache could serve

    def _price(self, batch: bool) -> Price | None:
        try:
            return PriceTable.from_file(self.config.budget.prices_file).price(
                self.model, batch=batch, base_model=self.priced_as)
        except KeyError as exc:
            if self.config.budget.max_cost is not None:
                raise BackendError(f"--max-cost needs a price: {exc.args[0]}") from None
            return None

    def spent(self) -> tuple[int, float | None]:
        """(tokens, dollars) this run was billed: every job's manifest and every on-demand call. Tokens are
        at least what the stored paths used (runs older than the ledger); dollars None without a price."""
        manifests = [j["manifest"] for j in self.store.jobs(self.backend) if j["manifest"]]
        calls = self.store.spend(self.backend)
        tokens = sum(m.get("inputTokenCount", 0) + cached_input(m) + m.get("outputTokenCount", 0)
                     for m in manifests) + \
            sum(c["input_tokens"] + c["output_tokens"] for c in calls)
        batch_price, on_demand_price = self._price(batch=True), self._price(batch=False)
        dollars = None
        if batch_price is not None and on_demand_price is not None:
            dollars = sum(job_cost(batch_price, m) for m in manifests) + \
                sum(on_demand_price.cost(c["input_tokens"], c["output_tokens"]) for c in calls)
        return max(tokens, self.config.tokens_spent), dollars

    def check(self, records: list[Record], batch: bool = True, quiet: bool = False) -> None:
        """Refuse `records` if, with what the ledger says the run spent, their worst case could pass
        --max-cost or --max-tokens-total; otherwise log their estimate, expected and worst case (unless
        `quiet`). Nothing is sent before this. The cap is checked at the price without cache hits (a batch's
        hits are best effort); the estimate also says what it would be were every cacheable prefix read from
        the cache."""
        found = estimate(records, *run_means(self.config.budget, self.store))
        worst_tokens = found.worst_tokens
        tokens, spent = self.spent()
        what = "jobs" if batch else "on-demand calls"
        stop = "nothing was submitted" if batch else "no more calls were made; the paths they made are stored"
        limit = self.config.budget.max_tokens_total
        if limit is not None and tokens + worst_tokens > limit:
            raise BudgetExceeded(f"the next {what} could use {worst_tokens:,} tokens on top of {tokens:,} spent, "
                                 f"past --max-tokens-total {limit:,}; {stop}")
        price = self._price(batch)
        if price is None or spent is None:
            if not quiet:
                log.warning(f"no price known for {self.priced_as or self.model}: no cost estimate (give a price "
                            "file)")
            return
        worst = found.worst(price)
        if not quiet:  # calls are checked one by one: the cap holds to within the largest call's worst case
            largest = "" if batch else f"; one call at most ${max(_worst(r, price) for r in records):,.4f}"
            cached = min(self.cacheable(records), found.worst_prompt_tokens) if self.cacheable else 0
            with_hits = price.cost(found.worst_prompt_tokens - cached + CACHE_READ * cached, found.worst_output_tokens)
            hits = f"; at most {dollars(with_hits)} with every cacheable prefix ({cached:,} tokens) read from the " \
                "prompt cache" if cached else ""
            log.info(f"{'batch' if batch else 'on-demand'} estimate: {found.describe(price)}{hits} "
                     f"({dollars(spent)} spent so far{largest})")
        if self.config.budget.max_cost is not None and spent + worst > self.config.budget.max_cost:
            raise BudgetExceeded(f"the worst case {dollars(worst)} of the next {what} (every path at --max-tokens) "
                                 f"on top of {dollars(spent)} spent is above --max-cost "
                                 f"{dollars(self.config.budget.max_cost)}; {stop}")


def _worst(record: Record, price: Price) -> float:
    return estimate([record]).worst(price)
