"""Amazon Bedrock on-demand: the Converse API for chat models, InvokeModel with the family's own body
for completion-style ones (Cohere Command and AI21 Jurassic-2 carry several paths per call, as in batch).

Calls run concurrently in threads; botocore retries throttling in adaptive mode. The token budget
(--max-tokens-total, --max-cost) is checked before each call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from ..costs import PriceTable
from .base import BackendConfig, BackendError, Generation, GenerationRequest, TokenBudget
from .bedrock_batch import _generations
from .bedrock_bodies import ADAPTERS, adapter_for
from .bedrock_plan import Record, pack


class BedrockOnDemandBackend:
    name = "bedrock"

    def __init__(self, config: BackendConfig):
        import boto3
        from botocore.config import Config

        self.config = config
        self.model = config.model
        native = adapter_for(config.model)
        # Chat families go through Converse (one API for all of them); completion families keep their body.
        self.converse = config.converse or native.chat
        self.adapter = ADAPTERS["converse"] if self.converse else native
        self.runtime = boto3.client("bedrock-runtime", region_name=config.region, config=Config(
            retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=config.concurrency))
        limit = config.max_tokens_total
        if config.max_cost is not None:
            try:
                price = PriceTable.from_file(config.prices_file).price(config.model)
            except KeyError as exc:
                raise BackendError(f"--max-cost needs a price: {exc.args[0]}") from None
            cost_tokens = int(config.max_cost / (max(price.input_per_1k, price.output_per_1k) / 1000))
            limit = min(cost_tokens, limit or cost_tokens)
        self.budget = TokenBudget(limit, config.tokens_spent)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        records = pack(list(requests), self.adapter)
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            running: set[Future] = {pool.submit(self._call, record) for record in records}
            error: BackendError | None = None
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        yield from future.result()
                    except BackendError as exc:  # stop asking; keep what was already paid for
                        error = error or exc
                        for waiting in running:
                            waiting.cancel()
                running = {f for f in running if not f.cancelled()}
            if error is not None:
                raise error

    def _call(self, record: Record) -> list[Generation]:
        import botocore.exceptions

        params = record.requests[0].params
        booked = len(json.dumps(record.model_input)) // 3 + len(record.requests) * params.max_tokens
        self.budget.reserve(booked)
        started = time.perf_counter()
        try:
            if self.converse:
                body = self.runtime.converse(modelId=self.model, **record.model_input)
            else:
                response = self.runtime.invoke_model(modelId=self.model, body=json.dumps(record.model_input),
                                                     contentType="application/json", accept="application/json")
                body = json.loads(response["body"].read())
        except botocore.exceptions.BotoCoreError as exc:
            self.budget.settle(booked, 0)
            raise BackendError(f"bedrock-runtime: {exc}") from None
        except botocore.exceptions.ClientError as exc:
            self.budget.settle(booked, 0)
            raise BackendError(f"bedrock-runtime: {exc.response['Error'].get('Code')}: "
                               f"{exc.response['Error'].get('Message')}") from None
        outputs = self.adapter.response(body, params)
        generations = list(_generations(record, outputs, (time.perf_counter() - started) / len(record.requests)))
        self.budget.settle(booked, sum(g.prompt_tokens + g.completion_tokens for g in generations))
        return generations

    def close(self) -> None:
        self.runtime.close()
