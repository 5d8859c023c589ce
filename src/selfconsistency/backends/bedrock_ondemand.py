"""Amazon Bedrock on-demand: the Converse API for chat models, InvokeModel with the family's own body
for completion-style ones (Cohere Command and AI21 Jurassic-2 carry several paths per call, as in batch).

Calls run concurrently in threads; botocore retries throttling in adaptive mode. The token budget
(--max-tokens-total, --max-cost) is checked before each call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Annotated

from ..costs import RESERVED_CHARS_PER_TOKEN
from ..options import BackendOptions, Cli, Identity
from .base import (
    BackendConfig,
    BackendError,
    BackendSpec,
    ConcurrencyOptions,
    Generation,
    GenerationRequest,
    TokenBudget,
    run_concurrently,
    show_body,
)
from .batch_plan import Record, pack, record_generations
from .bedrock_aws import aws_retries, explain_aws_error
from .bedrock_bodies import ADAPTERS, BodyAdapter, UnknownModel, adapter_for, bedrock_line

BEDROCK = "Amazon Bedrock (--backend bedrock, bedrock-batch)"


class BedrockOptions(BackendOptions):
    """What both Bedrock backends need: where, and which request format."""

    region: Annotated[str | None, Cli("Bedrock: AWS region.", BEDROCK, default_shown="boto3's own")] = None
    # Another request body; recorded only when on, so stores made before the option match.
    converse: Annotated[bool, Cli("Bedrock: requests in the Converse format.", BEDROCK),
                        Identity(only_if_set=True)] = False
    base_model: Annotated[str | None, Cli(
        "Bedrock: the foundation model behind an application inference profile ARN given as --model (its "
        "request format and price); cross-region profile ids and ARNs name it themselves.", BEDROCK)] = None


class BedrockOnDemandOptions(BedrockOptions, ConcurrencyOptions):
    pass


def on_demand_adapter(model: str, options: BedrockOnDemandOptions) -> BodyAdapter:
    """Chat families go through Converse (one API for all of them); completion families keep their body."""
    try:
        native = ADAPTERS["converse"] if options.converse else adapter_for(model, base_model=options.base_model)
    except UnknownModel as exc:
        raise BackendError(str(exc)) from None
    return ADAPTERS["converse"] if native.chat else native


class BedrockOnDemandBackend:
    name = "bedrock"

    def __init__(self, config: BackendConfig):
        import boto3

        self.options = options = config.options_as(BedrockOnDemandOptions)
        self.model = config.model
        self.adapter = on_demand_adapter(config.model, options)
        self.converse = self.adapter is ADAPTERS["converse"]
        self.runtime = boto3.client("bedrock-runtime", region_name=options.region,
                                    config=aws_retries(max_pool_connections=options.concurrency))
        self.budget = TokenBudget.for_config(config)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        records = pack(list(requests), self.adapter.max_generations, self.adapter.request, bedrock_line)
        yield from run_concurrently([partial(self._call, record) for record in records], self.options.concurrency,
                                    lambda generations: (generations, []))

    def _call(self, record: Record) -> list[Generation]:
        import botocore.exceptions

        params = record.requests[0].params
        booked = len(json.dumps(record.body)) // RESERVED_CHARS_PER_TOKEN + len(record.requests) * params.max_tokens
        self.budget.reserve(booked)
        started = time.perf_counter()
        try:
            if self.converse:
                body = self.runtime.converse(modelId=self.model, **record.body)
            else:
                response = self.runtime.invoke_model(modelId=self.model, body=json.dumps(record.body),
                                                     contentType="application/json", accept="application/json")
                body = json.loads(response["body"].read())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self.budget.settle(booked, 0)
            raise BackendError(explain_aws_error(exc, f"calling {self.model} on demand")) from None
        outputs = self.adapter.response(body, params)
        generations = list(record_generations(record, outputs, (time.perf_counter() - started) / len(record.requests)))
        self.budget.settle(booked, sum(g.prompt_tokens + g.completion_tokens for g in generations))
        return generations

    def close(self) -> None:
        self.runtime.close()


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    adapter = on_demand_adapter(config.model, config.options_as(BedrockOnDemandOptions))
    return show_body(adapter.request(request.prompt, request.params, 1))


BACKEND = BackendSpec(BedrockOnDemandBackend, BedrockOnDemandOptions, summary="Amazon Bedrock on demand",
                      preview=_preview)
