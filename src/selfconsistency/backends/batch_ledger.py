"""A batch run's spend ledger: what the run was billed (every job's manifest and every on-demand call, in
the providers' own counts, kept in the run's store), checked before every job and every on-demand call
against --max-cost and --max-tokens-total."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..costs import CACHE_READ, CHARS_PER_TOKEN, Price, PriceTable, cached_input, job_cost
from .base import BackendConfig, BackendError, BudgetExceeded, dollars
from .batch_plan import Record

if TYPE_CHECKING:
    from .batch_jobs import JobStore

log = logging.getLogger(__name__)


class SpendLedger:
    def __init__(self, store: JobStore, backend: str, model: str, config: BackendConfig,
                 cacheable: Callable[[list[Record]], int] | None = None):
        self.store = store
        self.backend = backend
        self.model = model
        self.config = config
        self.cacheable = cacheable  # records -> their prompt tokens a prompt cache could serve

    def _price(self, batch: bool) -> Price | None:
        try:
            return PriceTable.from_file(self.config.budget.prices_file).price(
                self.model, batch=batch, base_model=getattr(self.config.options, "base_model", None))
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
        """Refuse `records` if, with what the ledger says the run spent, they could pass --max-cost or
        --max-tokens-total; otherwise print their estimate (unless `quiet`). Nothing is sent before this.

        Prompt tokens are estimated at CHARS_PER_TOKEN characters each; output at max_tokens for every generation.
        The cap is checked at the price without cache hits (a batch's hits are best effort); the estimate
        also says what it would be were every cacheable prefix read from the cache.
        """
        prompt = sum(len(json.dumps(r.body)) // CHARS_PER_TOKEN for r in records)
        output = sum(len(r.requests) * r.requests[0].params.max_tokens for r in records)
        tokens, spent = self.spent()
        what = "jobs" if batch else "on-demand calls"
        stop = "nothing was submitted" if batch else "no more calls were made; the paths they made are stored"
        limit = self.config.budget.max_tokens_total
        if limit is not None and tokens + prompt + output > limit:
            raise BudgetExceeded(f"the next {what} could use {prompt + output:,} tokens on top of {tokens:,} spent, "
                                 f"past --max-tokens-total {limit:,}; {stop}")
        price = self._price(batch)
        if price is None or spent is None:
            if not quiet:
                log.warning(f"no price known for {self.model}: no cost estimate (give a price file)")
            return
        estimate = price.cost(prompt, output)
        if not quiet:  # calls are checked one by one: the cap holds to within the largest call's worst case
            largest = "" if batch else f"; one call at most ${max(_worst(r, price) for r in records):,.4f}"
            cached = min(self.cacheable(records), prompt) if self.cacheable else 0
            hits = f", {dollars(price.cost(prompt - cached + CACHE_READ * cached, output))} with every cacheable " \
                f"prefix ({cached:,} tokens) read from the prompt cache" if cached else ""
            log.info(f"{'batch' if batch else 'on-demand'} estimate: {len(records)} records, ~{prompt:,} "
                     f"prompt tokens, at most {output:,} output tokens: at most {dollars(estimate)} without cache "
                     f"hits{hits} ({dollars(spent)} spent so far{largest})" if cached else
                     f"{'batch' if batch else 'on-demand'} estimate: {len(records)} records, ~{prompt:,} "
                     f"prompt tokens, at most {output:,} output tokens: at most {dollars(estimate)} "
                     f"({dollars(spent)} spent so far{largest})")
        if self.config.budget.max_cost is not None and spent + estimate > self.config.budget.max_cost:
            raise BudgetExceeded(f"the estimate {dollars(estimate)} of the next {what} on top of {dollars(spent)} "
                                 f"spent is above --max-cost {dollars(self.config.budget.max_cost)}; {stop}")


def _worst(record: Record, price: Price) -> float:
    return price.cost(len(json.dumps(record.body)) // CHARS_PER_TOKEN,
                      len(record.requests) * record.requests[0].params.max_tokens)
