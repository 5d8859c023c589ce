"""The contract every backend keeps, run against each one over its real transport (loopback servers and
emulators; the embedded model for `local`).

- one Generation per request, carrying that request; finish reasons "stop" or "length";
- no requests: nothing generated, nothing submitted; close() twice is safe;
- a run stores every path once with the answer extracted from its text; running it again generates
  nothing stored, and asking for more paths generates only those;
- no credential reaches any file of the run directory (audit log with prompts, report included);
- paid backends: a token cap or a cost cap too small for the first request sends and stores nothing.

Adding a backend: a `<name>_case` fixture returning a `Case`, and its name in CASES.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from conftest import ANTHROPIC_KEY, AWS_SECRET, GSM8K_TEST, OPENAI_KEY, SMALL_MODEL, OpenAIStub, stored_rows
from selfconsistency.backends import create_backend
from selfconsistency.backends.base import BudgetExceeded, flatten
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.extract import NumberExtractor
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.tasks import DataError

CASES = ["scripted", "openai", "openai-batch", "bedrock", "bedrock-batch", "anthropic", "anthropic-batch",
         pytest.param("local", marks=pytest.mark.model)]
FINISH_REASONS = {"stop", "length"}


@dataclass
class Case:
    settings: dict  # RunSettings fields of a small run on this backend
    secret: str | None = None  # a credential the backend is given (from the environment)
    paid: bool = True  # holds to --max-tokens-total and --max-cost
    provider_calls: Callable[[], int] | None = None  # requests or jobs the provider has received so far

    def config(self, **overrides) -> RunSettings:
        return RunSettings(**{"data": str(GSM8K_TEST), "limit": 2, "paths": 3, "temperatures": (0.7,),
                            **self.settings, **overrides})

    def calls(self) -> int | None:
        return self.provider_calls() if self.provider_calls else None


@pytest.fixture
def scripted_case(scripted_backend):
    return Case({"backend": "scripted", "model": "scripted-model"}, paid=False,
                provider_calls=lambda: sum(len(b.generated) for b in scripted_backend))


@pytest.fixture
def openai_case(stub_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    return Case({"backend": "openai", "model": "stub", "base_url": stub_server, "concurrency": 2},
                secret=OPENAI_KEY, provider_calls=lambda: len(OpenAIStub.calls))


@pytest.fixture
def openai_batch_case(batch_api):
    emulator, url = batch_api
    return Case({"backend": "openai-batch", "model": "gpt-4o-mini", "base_url": url, "prompt_format": "chat",
                 "poll_seconds": 0.02}, secret=OPENAI_KEY, provider_calls=lambda: len(emulator.batches))


@pytest.fixture
def bedrock_case(aws):
    return Case({"backend": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0", "concurrency": 2},
                secret=AWS_SECRET)


@pytest.fixture
def bedrock_batch_case(aws):
    # a job needs 100 records: 20 questions x (greedy + 2 x (6 paths packed in 2 Cohere records))
    return Case({"backend": "bedrock-batch", "model": "cohere.command-text-v14", "limit": 20, "paths": 6,
                 "temperatures": (0.5, 0.7), "bucket": "contract", "create_bucket": True,
                 "role_arn": "arn:aws:iam::123456789012:role/selfconsistency-batch", "poll_seconds": 0.02},
                secret=AWS_SECRET, provider_calls=lambda: len(aws.jobs))


@pytest.fixture
def anthropic_case(anthropic_api):
    emulator, url = anthropic_api
    return Case({"backend": "anthropic", "model": "claude-haiku-4-5", "base_url": url, "concurrency": 2},
                secret=ANTHROPIC_KEY, provider_calls=lambda: len(emulator.billed))


@pytest.fixture
def anthropic_batch_case(anthropic_api):
    emulator, url = anthropic_api
    return Case({"backend": "anthropic-batch", "model": "claude-haiku-4-5", "base_url": url, "poll_seconds": 0.02},
                secret=ANTHROPIC_KEY, provider_calls=lambda: len(emulator.batches) + emulator.message_calls)


@pytest.fixture
def local_case(loaded_model):
    return Case({"backend": "local", "model": SMALL_MODEL, "limit": 1, "paths": 2, "max_tokens": 24}, paid=False)


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_case")


def _key(request) -> tuple:
    return request.question_id, request.temperature, request.path_index


def _planned(config: RunSettings) -> list:
    task = config.get_task()
    return plan_requests(config, task, config.load(task))


def _backend(config: RunSettings, store: SampleStore):
    """The backend as a run makes it: batch backends keep their jobs in the run's store."""
    return create_backend(config.backend, config.backend_config(job_state=store))


def test_one_generation_per_request_carrying_it(case, tmp_path):
    config = case.config()
    requests = _planned(config)
    with SampleStore(tmp_path) as store:
        backend = _backend(config, store)
        try:
            generations = list(flatten(backend.generate(requests)))
        finally:
            backend.close()
        backend.close()  # twice: safe
    assert sorted(_key(g.request) for g in generations) == sorted(_key(r) for r in requests)
    by_key = {_key(r): r for r in requests}
    assert all(g.request == by_key[_key(g.request)] for g in generations)  # its own prompt and seed
    assert {g.finish_reason for g in generations} <= FINISH_REASONS
    assert all(g.text and g.completion_tokens > 0 and g.prompt_tokens >= 0 for g in generations)


def test_no_requests_generate_nothing(case, tmp_path):
    config = case.config()
    before = case.calls()
    with SampleStore(tmp_path) as store:
        backend = _backend(config, store)
        assert list(backend.generate([])) == []
        backend.close()
        backend.close()
    assert case.calls() == before


def test_every_path_stored_once_and_a_rerun_generates_only_what_is_missing(case, tmp_path):
    config = case.config()
    generated = []
    run_experiment(config, tmp_path, on_path=generated.append)
    rows = stored_rows(tmp_path)
    planned = sorted(_key(r) for r in _planned(config))
    assert sorted(r[:3] for r in rows) == planned and sorted(_key(g.request) for g in generated) == planned
    extract = NumberExtractor()
    assert all(answer == extract(text) for _, _, _, text, answer, _ in rows)
    calls = case.calls()
    again = []
    run_experiment(config, tmp_path, on_path=again.append)
    assert again == [] and stored_rows(tmp_path) == rows and case.calls() == calls
    more = config.model_copy(update={"paths": config.sampling.paths + 1})  # one more path per question and temperature
    run_experiment(more, tmp_path, on_path=again.append)
    assert sorted(_key(g.request) for g in again) == sorted(set(_key(r) for r in _planned(more)) - set(planned))
    assert set(stored_rows(tmp_path)) >= set(rows)  # what was stored is kept as it was


def test_no_secret_in_the_run_directory(case, tmp_path):
    if case.secret is None:
        pytest.skip("this backend is given no credential")
    run_experiment(case.config(log_prompts=True), tmp_path)  # the audit log holds prompts and completions
    write_report(tmp_path)
    assert len(stored_rows(tmp_path)) > 0
    files = [path for path in tmp_path.rglob("*") if path.is_file()]  # after reading: a WAL file may go
    assert any(path.name == "audit.jsonl" for path in files)
    for path in files:
        assert case.secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("cap", ["tokens", "cost"])
def test_a_cap_below_the_first_request_sends_and_stores_nothing(case, tmp_path, cap):
    if not case.paid:
        pytest.skip("a free backend has no budget")
    model = case.settings["model"]
    prices = tmp_path / "prices.json"  # $1 per 1,000 tokens: $0.01 pays for 10 tokens
    prices.write_text(json.dumps({model: {"on_demand": [1.0, 1.0], "batch": [1.0, 1.0]}}))
    limits = {"max_tokens_total": 50} if cap == "tokens" else {"max_cost": 0.01, "prices_file": str(prices)}
    run_dir = tmp_path / "run"
    # a dollar cap no request can fit is refused before the run directory is made (preflight); the token
    # cap, by the backend before its first request
    with pytest.raises(DataError if cap == "cost" else BudgetExceeded, match="cannot pay|budget reached|could use"):
        run_experiment(case.config(**limits), run_dir)
    assert (not run_dir.exists()) if cap == "cost" else stored_rows(run_dir) == []
    assert case.calls() in (0, None)
