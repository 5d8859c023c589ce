"""The one protocol every backend implements, and the values that cross it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator

from ..audit import redact_urls
from ..costs import CHARS_PER_TOKEN, Price
from ..options import BUDGET, BackendOptions, Cli, Identity
from ..prompts import Prompt
from ..sampling import SamplingParams

REMOTE = "Remote backends"

OptionsT = TypeVar("OptionsT", bound=BackendOptions)


class BackendError(Exception):
    """A backend that cannot start or cannot go on; the message says why."""


class BudgetExceeded(BackendError):
    """The next request would take the run past its token budget; nothing more was sent."""


class BudgetSettings(BaseModel):
    """What a run may spend on a paid backend; enforced by the backends, counting what was already spent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens_total: Annotated[int | None, Field(ge=1, le=10**15), Cli(
        "Paid backends: refuse any request that could take the run (stored paths included) past this many "
        "prompt + completion tokens.", BUDGET)] = None
    max_cost: Annotated[float | None, Field(gt=0, le=10**9, allow_inf_nan=False), Cli(
        "Paid backends: a spending cap in USD, counting what the run already spent; with --allocate, the "
        "amount to spend (in waves). Batch backends refuse jobs whose estimate (batch prices) could pass it; "
        "backends called request by request check each request's worst case before sending it. Needs the "
        "model in the price table (--prices).",
        BUDGET)] = None
    prices_file: Annotated[str | None, Cli(
        "JSON price table overriding the packaged one: {model: {on_demand: \\[in, out] per 1k tokens, "
        "batch: \\[in, out]}} (without batch: batch at the on-demand price).", BUDGET, flags=("--prices",),
        cli_type=Path, parse=str)] = None
    mean_output_tokens: Annotated[int | None, Field(ge=1, le=10**6), Cli(
        "Estimates: the output tokens a path takes on average, for the expected cost shown beside the worst "
        "case (every path at --max-tokens, what --max-cost is checked against). \\[default: the mean of the "
        "run's stored paths]", BUDGET, metavar="N")] = None
    mean_prompt_tokens: Annotated[int | None, Field(ge=1, le=10**7), Cli(
        "Estimates: the prompt tokens a request takes on average (a tokenizer's or a bill's count), instead of "
        "the stored paths' mean or 4 characters a token; the worst case never counts fewer than that estimate.",
        BUDGET, metavar="N")] = None

    @field_validator("prices_file")
    @classmethod
    def _prices_readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not (info.context or {}).get("stored"):
            from ..costs import PriceTable

            PriceTable.from_file(Path(value))  # a missing or malformed table fails here, not mid-run
        return value


class Ledger(Protocol):
    """A run's durable spend ledger (the run's store gives one, `store.SpendLedger`): a request's worst case
    is booked before it is sent, its usage written when it returns; the run closes the booking in the
    transaction that stores the request's paths, and counts a booking a kill left open as spent."""

    def book(self, keys: Sequence[tuple[str, float, int]], prompt_tokens: int, output_tokens: int) -> int: ...

    def answered(self, booking: int, prompt_tokens: int, output_tokens: int) -> None: ...

    def cancel(self, booking: int) -> None: ...


class Booking(NamedTuple):
    """A request's worst case as booked (`TokenBudget.reserve`), and its id in the run's ledger."""

    prompt: int
    output: int
    id: int | None = None


class TokenBudget:
    """A run's allowance for paid backends called request by request, checked before each request
    (thread-safe): --max-tokens-total in tokens, --max-cost in dollars at the model's two rates.

    `reserve(prompt, output, keys)` books a request's worst case (its prompt estimate, n x max_tokens) or
    refuses it; `settle(booking, prompt, output)` replaces the booking with what the request really used.
    With the run's `ledger`, each booking is on disk before the request is sent and its usage when it
    returns, so that a killed run's requests in flight count as spent when it resumes.
    """

    def __init__(self, limit: int | None, spent: int = 0, cap: str = "", price: Price | None = None,
                 max_cost: float | None = None, spent_cost: float = 0.0, ledger: Ledger | None = None):
        import threading

        self.limit = limit
        self.cap = cap or (f"--max-tokens-total {limit:,}" if limit is not None else "")  # named in the error
        self.spent = spent
        self.price, self.max_cost, self.spent_cost = price, max_cost, spent_cost
        self.ledger = ledger
        self._reserved = 0
        self._reserved_cost = 0.0
        self._lock = threading.Lock()

    def _cost(self, prompt: int, output: int) -> float:
        return self.price.cost(prompt, output) if self.price is not None else 0.0

    def reserve(self, prompt: int, output: int = 0, keys: Sequence[tuple[str, float, int]] = ()) -> Booking:
        """Book a request of `prompt` + `output` tokens at most, for the paths `keys`; the booking, for
        `settle`. Once this returns the booking is in the run's ledger: the request may be sent."""
        tokens, cost = prompt + output, self._cost(prompt, output)
        with self._lock:
            if self.limit is not None and self.spent + self._reserved + tokens > self.limit:
                raise BudgetExceeded(
                    f"token budget reached: {self.spent:,} used and {self._reserved:,} in flight of "
                    f"{self.cap}; the next request could need {tokens:,} more. "
                    "Stored paths are kept; raise the budget and run again to continue")
            if self.max_cost is not None and self.spent_cost + self._reserved_cost + cost > self.max_cost + 1e-12:
                raise BudgetExceeded(
                    f"spending budget reached: {dollars(self.spent_cost)} spent and {dollars(self._reserved_cost)} "
                    f"in flight of --max-cost {dollars(self.max_cost)}; the next request could cost "
                    f"{dollars(cost)} more. Stored paths are kept; raise the amount and run again to continue")
            self._reserved += tokens
            self._reserved_cost += cost
        if self.ledger is None:
            return Booking(prompt, output)
        try:
            return Booking(prompt, output, self.ledger.book(keys, prompt, output))
        except BaseException:
            self._release(prompt, output)
            raise

    def _release(self, prompt: int, output: int) -> None:
        with self._lock:
            self._reserved -= prompt + output
            self._reserved_cost -= self._cost(prompt, output)

    def settle(self, booking: Booking, prompt: int, output: int) -> None:
        """The request returned having used `prompt` + `output` tokens (0, 0: it failed, unbilled)."""
        with self._lock:
            self._reserved -= booking.prompt + booking.output
            self._reserved_cost -= self._cost(booking.prompt, booking.output)
            self.spent += prompt + output
            self.spent_cost += self._cost(prompt, output)
        if self.ledger is not None and booking.id is not None:
            if prompt or output:
                self.ledger.answered(booking.id, prompt, output)
            else:
                self.ledger.cancel(booking.id)

    @classmethod
    def for_config(cls, config: BackendConfig, priced_as: str | None = None) -> TokenBudget:
        """--max-tokens-total, and --max-cost in dollars at the model's own two rates, counting what the
        run already spent. `priced_as`: the foundation model the calls are billed as, when the backend
        learnt it (an inference profile's)."""
        budget = config.budget
        limit = budget.max_tokens_total
        price = None
        if budget.max_cost is not None:
            from ..costs import PriceTable

            try:
                price = PriceTable.from_file(budget.prices_file).price(
                    config.model, base_model=priced_as or getattr(config.options, "base_model", None))
            except KeyError as exc:
                raise BackendError(f"--max-cost needs a price: {exc.args[0]}") from None
        prompt, output = config.tokens_spent_split
        spent_cost = price.cost(prompt, output) if price is not None else 0.0
        return cls(limit, config.tokens_spent, price=price, max_cost=budget.max_cost, spent_cost=spent_cost,
                   ledger=config.ledger)


def dollars(amount: float) -> str:
    """`$1,234.50`, or enough digits for a sum under a dollar (`$0.0001`, never `$0.00`)."""
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.3g}"


def run_concurrently(calls: Iterable[Callable[[], Any]], workers: int,
                     on_result: Callable[[Any], tuple[Iterable[Generation], Iterable[Callable[[], Any]]]]
                     ) -> Iterator[Generation]:
    """Run calls in `workers` threads, yielding each result's generations as it lands; `on_result` may
    add follow-up calls. On a BackendError nothing more is started, the calls already in flight (paid
    for) still deliver, and the error is raised at the end. On Ctrl-C the same, then KeyboardInterrupt.
    A consumer that stops (closes the generator) or any other error: calls not yet started never are,
    and nothing waits for those in flight."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=workers)
    running: set = set()
    try:
        running = {pool.submit(call) for call in calls}
        error: BackendError | None = None
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                try:
                    generations, more = on_result(future.result())
                except BackendError as exc:
                    error = error or exc
                    for waiting in running:
                        waiting.cancel()
                    continue
                yield from generations
                if error is None:
                    running |= {pool.submit(call) for call in more}
            running = {f for f in running if not f.cancelled()}
        if error is not None:
            raise error
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        yield from _in_flight(running, on_result)  # paid for: delivered to be stored (a second Ctrl-C drops them)
        raise
    finally:
        # Without this, leaving the pool waits for every queued call: each is still sent, and paid for.
        pool.shutdown(wait=False, cancel_futures=True)


def _in_flight(futures: set, on_result: Callable[[Any], tuple[Iterable[Generation], Any]]) -> Iterator[Generation]:
    """The generations of the calls that had started, as they land; their follow-ups and errors are dropped."""
    from concurrent.futures import as_completed

    for future in as_completed(f for f in futures if not f.cancelled()):
        try:
            generations, _ = on_result(future.result())
        except Exception:  # noqa: BLE001 - the interrupt, not this call's failure, is what is reported
            continue
        yield from generations


def path_key(request: GenerationRequest) -> tuple[str, float, int]:
    """The key a request's path is stored under: (question id, temperature, path index)."""
    return request.question_id, request.temperature, request.path_index


def flatten(items: Iterable[Generation | tuple[Generation, ...]]) -> Iterator[Generation]:
    """Backend.generate's output one Generation at a time (for callers that do not store)."""
    for item in items:
        yield from item if isinstance(item, tuple) else (item,)


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
    finish_reason: str  # "stop" (stop sequence or end of turn), "length", or "answer" (--stop-at-answer)
    logprob_sum: float | None = None  # sum of the sampled tokens' log-probabilities, when known
    reasoning_tokens: int | None = None  # of completion_tokens, the thinking ones, as the provider counts them
    token_ends: tuple[int, ...] | None = None  # where each token ends in `text` (the embedded model knows)


@dataclass(frozen=True)
class ParsedOutput:
    """One generation as a provider's response body gives it, before it is matched to its path."""

    text: str
    finish_reason: str  # "stop" or "length"
    input_tokens: int | None = None  # per record (the prompt is billed once per record)
    output_tokens: int | None = None
    logprob_sum: float | None = None
    reasoning_tokens: int | None = None  # of output_tokens, the thinking ones (OpenAI's reasoning_tokens)


def with_thinking(reasoning: str | None, text: str) -> str:
    """A response's separate reasoning text (a provider's reasoning field or thinking block) kept in the
    path, as a thinking block before the answer text: stored, never searched for the answer."""
    return f"<think>{reasoning}</think>{text}" if reasoning else text


def generations_from(requests: Sequence[GenerationRequest], outputs: Sequence[ParsedOutput], seconds_each: float,
                     prompt_estimate: Callable[[], int] = lambda: 0) -> Iterator[Generation]:
    """One Generation per request from a response's outputs, in order (requests beyond the outputs get
    none). The prompt is billed once: its tokens go to the first path, from `prompt_estimate` when the
    response gave no count; a path without its own count gets an estimate from its characters."""
    for position, (request, output) in enumerate(zip(requests, outputs, strict=False)):
        prompt_tokens = (output.input_tokens or prompt_estimate()) if position == 0 else 0
        completion = output.output_tokens
        if completion is None:
            completion = max(1, len(output.text) // CHARS_PER_TOKEN)
        yield Generation(request=request, text=output.text, prompt_tokens=prompt_tokens,
                         completion_tokens=completion, latency_s=seconds_each, finish_reason=output.finish_reason,
                         logprob_sum=output.logprob_sum, reasoning_tokens=output.reasoning_tokens)


class EndpointOptions(BackendOptions):
    """Backends that talk to a provider's HTTP API, which another server may stand in for (`--base-url`)."""

    endpoint_fields = ("base_url",)  # the API key goes there

    base_url: Annotated[str | None, Cli(
        "The API root of the server: for openai / openai-batch an OpenAI-compatible one, e.g. "
        "http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama); for anthropic / anthropic-batch "
        "an Anthropic-compatible one.", REMOTE,
        default_shown="the provider's own API (or OPENAI_BASE_URL / ANTHROPIC_BASE_URL)"),
        Identity(stored=redact_urls)] = None


class ConcurrencyOptions(BackendOptions):
    """Backends that send requests from several threads."""

    concurrency: Annotated[int, Field(ge=1, le=256), Cli("Remote backends: requests in flight.", REMOTE)] = 4


class BackendConfig(BaseModel):
    """What a backend is started with: the model, its own options, the run's budget and, for batch
    backends, the run's job state."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    model: str
    options: SerializeAsAny[BackendOptions] = BackendOptions()  # the backend's own options model
    budget: BudgetSettings = BudgetSettings()
    tokens_spent: int = Field(default=0, ge=0)  # what the run's stored paths already used
    tokens_spent_split: tuple[int, int] = (0, 0)  # the same as (prompt, completion) tokens, to price them
    settings_hash: str = "run"  # names the run's batch jobs
    job_state: Any = None  # batch backends: the run's `batch_jobs.JobStore` (the run's sample store)
    submit: bool = True  # batch backends: False collects the jobs the run made and submits nothing new
    # backends called request by request: the run's durable spend ledger (`Ledger`), where TokenBudget books
    # each request before it is sent (None: in memory only)
    ledger: Any = None

    def options_as(self, kind: type[OptionsT]) -> OptionsT:
        """The options as the backend's own model (its defaults when none were given)."""
        return self.options if isinstance(self.options, kind) else kind(**self.options.model_dump())


def _never(options: BackendOptions) -> bool:
    return False


@dataclass(frozen=True)
class BackendSpec:
    """What a backend module declares about itself (its `BACKEND`): how to start it, its options model,
    for batch backends the provider's job service (job commands outside a run use it), and the
    capabilities the rest of the tool asks about instead of naming backends."""

    factory: Callable[[BackendConfig], Backend]
    options: type[BackendOptions] = BackendOptions
    job_service: Callable[[BackendConfig], Any] | None = None
    summary: str = ""  # for --backend's help
    # `run --show-prompt`: one request as the backend would send it (a prompt text or a JSON body)
    preview: Callable[[BackendConfig, GenerationRequest], str] | None = None
    # Before a run touches its directory: does the model name resolve? (ModelError if not.)
    check_model: Callable[[str], None] | None = None
    # Also before the run directory: do the run's settings suit the model (its temperatures)? BackendError if not.
    check_settings: Callable[[Any], None] | None = None
    # The backend that sends one request at a time at the same provider (a batch backend's on-demand
    # twin): small requests that need no job, such as Universal Self-Consistency's selection.
    on_demand: str | None = None
    # One decoder that a single thread may drive: concurrent API calls share its batches.
    shared_decoder: bool = False
    # Whether these options end each path at its complete answer statement (--stop-at-answer).
    stops_at_answer: Callable[[BackendOptions], bool] = _never
    # `run --dry-run`: the requests as the backend would send them (records, with their bodies), without a
    # client or a call; None: one request a path, its prompt as the body.
    plan_records: Callable[[BackendConfig, list[GenerationRequest]], list[Any]] | None = None
    # What the report must say about how the paths were sampled, beyond the settings (a model that takes no
    # temperature samples at its own default): from the run's settings, None when there is nothing to say.
    sampling_note: Callable[[Any], str | None] | None = None

    @property
    def batch(self) -> bool:
        """A batch backend: its paths are billed at the provider's batch price."""
        return self.job_service is not None


def show_body(body: dict) -> str:
    """A request body as `run --show-prompt` prints it."""
    return json.dumps(body, indent=2, ensure_ascii=False)


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation | tuple[Generation, ...]]:
        """Yield one Generation per request, each as soon as it exists (order may differ). A backend whose
        one call answers several paths (a multi-path batch record) yields them as a tuple: the caller
        stores a tuple in one transaction, so a kill never leaves part of a paid record stored."""
        ...

    def close(self) -> None: ...


class PathFeed(Protocol):
    """More paths for a backend that is already decoding a batch (api._BatchingDecoder gives one to a
    backend whose `generate` takes `feed=`): the paths of callers that arrived after the batch started."""

    def more(self, fits: Callable[[Sequence[GenerationRequest]], bool]) -> list[GenerationRequest]:
        """Paths to add now, without waiting: those of each waiting caller, in arrival order, for which
        `fits(its paths)` said yes; once it says no, nothing more for this batch (nobody overtakes)."""
        ...

    def wants(self, request: GenerationRequest) -> bool:
        """False once the caller of this path has gone: not started yet, it is dropped; started, stopped."""
        ...
