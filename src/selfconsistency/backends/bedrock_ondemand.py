"""Amazon Bedrock on-demand: the Converse API for chat models, InvokeModel with the family's own body
for completion-style ones (Cohere Command and AI21 Jurassic-2 carry several paths per call, as in batch).

Calls run concurrently in threads; botocore retries throttling in adaptive mode. The token budget
(--max-tokens-total, --max-cost) is checked before each call. Token counts are the provider's: the
response body's, else InvokeModel's billing headers. A call refused for its own record's fault (a 400) is
stored as a refused record, as a batch job's are, and not sent again; the rest of the run goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Annotated, Any

from ..costs import RESERVED_CHARS_PER_TOKEN
from ..options import BackendOptions, Cli, Identity
from .base import (
    BackendConfig,
    BackendError,
    BackendSpec,
    ConcurrencyOptions,
    Generation,
    GenerationRequest,
    ParsedOutput,
    TokenBudget,
    path_key,
    run_concurrently,
    show_body,
)
from .batch_plan import Record, pack, record_generations
from .batch_service import ON_DEMAND_JOB, RecordRefused, RecordsRefused, error_summary
from .bedrock_aws import PricedAs, aws_client, explain_aws_error, resolve_base_model
from .bedrock_bodies import ADAPTERS, BodyAdapter, UnknownModel, adapter_for, bedrock_line, with_billed_counts

log = logging.getLogger(__name__)

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


def on_demand_adapter(model: str, options: BedrockOptions, base_model: str | None = None) -> BodyAdapter:
    """Chat families go through Converse (one API for all of them); completion families keep their body.
    `base_model`: the foundation model an application inference profile runs (as Bedrock names it)."""
    try:
        native = ADAPTERS["converse"] if options.converse else adapter_for(
            model, base_model=base_model or options.base_model)
    except UnknownModel as exc:
        raise BackendError(str(exc)) from None
    return ADAPTERS["converse"] if native.chat else native


def resolved_model(model: str, options: BedrockOptions) -> PricedAs:
    """What the model id runs, asked of Bedrock for an application inference profile (bedrock_aws)."""
    from .bedrock_aws import APPLICATION_PROFILE

    if APPLICATION_PROFILE not in model:
        return resolve_base_model(None, model, options.base_model)
    return resolve_base_model(aws_client("bedrock", options.region), model, options.base_model)


def invoke(runtime: Any, model: str, adapter: BodyAdapter, record: Record) -> list[ParsedOutput]:
    """One on-demand call for a record: Converse for the Converse format, else InvokeModel with the family's
    body (its token counts from the billing headers where the body has none). RecordRefused for a call
    refused for its own record's fault (a 400 ValidationException); BackendError for every other failure."""
    import botocore.exceptions as bx

    try:
        if adapter is ADAPTERS["converse"]:
            body = runtime.converse(modelId=model, **record.body)
            return adapter.response(body, record.requests[0].params)
        response = runtime.invoke_model(modelId=model, body=json.dumps(record.body), contentType="application/json",
                                        accept="application/json")
        body = json.loads(response["body"].read())
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationException" and \
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 400:
            raise RecordRefused("400", (error.get("Message") or "").rstrip(".")) from None
        raise BackendError(explain_aws_error(exc, f"calling {model} on demand")) from None
    except bx.BotoCoreError as exc:
        raise BackendError(explain_aws_error(exc, f"calling {model} on demand")) from None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    counts = [headers.get(f"x-amzn-bedrock-{kind}-token-count") for kind in ("input", "output")]
    return with_billed_counts(adapter.response(body, record.requests[0].params),
                              *(int(c) if c and c.isdigit() else None for c in counts))


class BedrockOnDemandBackend:
    name = "bedrock"

    def __init__(self, config: BackendConfig):
        self.options = options = config.options_as(BedrockOnDemandOptions)
        self.model = config.model
        resolved = resolved_model(config.model, options)
        self.priced_as, self.priced_how = resolved.model, resolved.how
        self.adapter = on_demand_adapter(config.model, options, self.priced_as)
        self.runtime = aws_client("bedrock-runtime", options.region, max_pool_connections=options.concurrency)
        self.budget = TokenBudget.for_config(config, self.priced_as)
        self.store = config.job_state  # refused records are kept in the run's store, when there is one

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        records = pack(list(requests), self.adapter.max_generations, self.adapter.request, bedrock_line)
        unwanted = {e["record_id"]: e for e in (self.store.record_errors(self.name) if self.store else [])
                    if not e["retryable"]}
        refused = [unwanted[r.record_id] for r in records if r.record_id in unwanted]
        calls = [partial(self._call, record) for record in records if record.record_id not in unwanted]

        def on_result(result: tuple[list[Generation], tuple[str, RecordRefused] | None]):
            generations, refusal = result
            if refusal is not None:  # stored here, in the thread that owns the store
                record_id, exc = refusal
                refused.append({"code": exc.code, "message": exc.message})
                if self.store is not None:
                    self.store.add_record_errors(self.name, ON_DEMAND_JOB, {record_id: (exc.code, exc.message, False)})
            return generations, []

        yield from run_concurrently(calls, self.options.concurrency, on_result)
        if refused:  # one refused prompt does not block the rest of the run, nor a rerun
            raise RecordsRefused(f"{len(refused)} records were refused and will not be sent again (by error code: "
                                 f"{error_summary([(e['code'], e['message']) for e in refused])}); the others' "
                                 "paths are stored (a record changes, and is sent again, when its data does)")

    def _call(self, record: Record) -> tuple[list[Generation], tuple[str, RecordRefused] | None]:
        params = record.requests[0].params
        booked = self.budget.reserve(len(json.dumps(record.body)) // RESERVED_CHARS_PER_TOKEN,
                                     len(record.requests) * params.max_tokens, [path_key(r) for r in record.requests])
        started = time.perf_counter()
        try:
            outputs = invoke(self.runtime, self.model, self.adapter, record)
        except RecordRefused as exc:
            self.budget.settle(booked, 0, 0)
            return [], (record.record_id, exc)
        except BackendError:
            self.budget.settle(booked, 0, 0)
            raise
        generations = list(record_generations(record, outputs, (time.perf_counter() - started) / len(record.requests)))
        self.budget.settle(booked, sum(g.prompt_tokens for g in generations),
                           sum(g.completion_tokens for g in generations))
        return generations, None

    def close(self) -> None:
        self.runtime.close()


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    adapter = on_demand_adapter(config.model, config.options_as(BedrockOnDemandOptions))
    return show_body(adapter.request(request.prompt, request.params, 1))


def _plan_records(config: BackendConfig, requests: list[GenerationRequest]) -> list[Record]:
    adapter = on_demand_adapter(config.model, config.options_as(BedrockOnDemandOptions))
    return pack(requests, adapter.max_generations, adapter.request, bedrock_line)


BACKEND = BackendSpec(BedrockOnDemandBackend, BedrockOnDemandOptions, summary="Amazon Bedrock on demand",
                      preview=_preview, plan_records=_plan_records)
