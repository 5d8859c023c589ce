"""A budgeted run never asks a backend for more than its budget, on the backends that answer call by call:
OpenAI-compatible servers (a stub on loopback), Anthropic's Messages API and Amazon Bedrock on demand
(their emulators) and the embedded model. The batch providers are in tests/test_batch_contract.py."""

import pytest

from conftest import GSM8K_TEST, OpenAIStub, stored_rows
from selfconsistency.experiment import run_experiment
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from selfconsistency.tasks import DataError

QUESTIONS, PER_TEMPERATURE = 5, 13  # 13 over 5 questions: not a multiple of anything a wave is made of


def budgeted(**settings) -> RunSettings:
    return RunSettings(data=str(GSM8K_TEST), limit=QUESTIONS, paths=6, temperatures=(0.5, 0.7),
                       budget_paths=PER_TEMPERATURE, wave_paths=3, **settings)


def check_spent(run_dir, settings: RunSettings, sent: int) -> None:
    """The backend was asked for greedy + the budget at each temperature, each stored once and counted
    under the budget's stops."""
    expected = QUESTIONS + PER_TEMPERATURE * 2
    assert sent == expected
    assert len(stored_rows(run_dir)) == expected
    with SampleStore.open_readonly(run_dir) as store:
        stops = store.stops(settings.stops_name())
    for temperature in (0.5, 0.7):
        used = [u for (_, t), (u, _, _) in stops.items() if t == temperature]
        assert len(used) == QUESTIONS and sum(used) == PER_TEMPERATURE and max(used) <= 6


def test_openai_compatible_server(stub_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = budgeted(backend="openai", model="stub", base_url=stub_server)
    run_experiment(settings, tmp_path / "run")
    check_spent(tmp_path / "run", settings, sum(call["body"].get("n", 1) for call in OpenAIStub.calls))


def test_anthropic_messages(anthropic_api, tmp_path):
    emulator, _ = anthropic_api
    settings = budgeted(backend="anthropic", model="claude-haiku-4-5", prompt_format="chat")
    run_experiment(settings, tmp_path / "run")
    check_spent(tmp_path / "run", settings, emulator.message_calls)  # one path a call: Claude has no n


def test_an_amount_is_spent_request_by_request_in_dollars(anthropic_api, tmp_path):
    """--allocate with --max-cost on a backend called request by request: each request's worst case is
    checked in dollars at the model's own two rates (prompt tokens at the input rate), so the run spends
    nearly all of the amount and never more; the stored paths' tokens at those rates are the bill."""
    from selfconsistency.costs import PriceTable

    price = PriceTable().price("claude-haiku-4-5")
    settings = RunSettings(data=str(GSM8K_TEST), limit=8, paths=12, temperatures=(0.7,), backend="anthropic",
                           model="claude-haiku-4-5", prompt_format="chat", max_tokens=64, allocate="blend-asc",
                           max_cost=0.03)
    run_experiment(settings, tmp_path / "run")
    with SampleStore.open_readonly(tmp_path / "run") as store:
        billed = sum(price.cost(p.prompt_tokens, p.completion_tokens) for p in store.paths(text=False))
        sampled = sum(1 for p in store.paths(text=False) if p.temperature == 0.7)
    assert billed <= 0.03
    assert billed >= 0.9 * 0.03 or sampled == 8 * 12, (billed, sampled)


@pytest.mark.slow  # boto3 against the emulators over HTTP
def test_a_budget_too_small_for_a_first_batch_job_is_refused_before_the_run_directory(aws, tmp_path):
    settings = RunSettings(data=str(GSM8K_TEST), limit=20, paths=6, temperatures=(0.5, 0.7), budget_paths=30,
                           backend="bedrock-batch", model="anthropic.claude-3-haiku-20240307-v1:0", bucket="b",
                           role_arn="arn:aws:iam::123456789012:role/selfconsistency-batch")
    with pytest.raises(DataError, match="a batch job needs 100 records: the first wave gives every question 2"):
        run_experiment(settings, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_amount_too_small_for_the_first_batch_wave_is_refused_before_the_run_directory(anthropic_api, tmp_path):
    """--max-cost as the amount on a batch backend: an amount below the first wave's least cost (every record's
    prompt at the batch price, and the smallest job's worst case) is one error before the run directory is
    made and before any batch is created; an amount above it runs."""
    emulator, _ = anthropic_api
    settings = RunSettings(data=str(GSM8K_TEST), limit=20, paths=4, temperatures=(0.7,), backend="anthropic-batch",
                           model="claude-haiku-4-5", prompt_format="chat", allocate="blend-asc", max_cost=0.01,
                           poll_seconds=0.01)
    with pytest.raises(DataError, match=r"^--max-cost \$0.01 cannot pay the first wave: its 40 batch records"):
        run_experiment(settings, tmp_path / "small")
    assert not (tmp_path / "small").exists() and not emulator.batches
    run_experiment(settings.model_copy(update={"max_cost": 0.2}), tmp_path / "enough")
    assert len(stored_rows(tmp_path / "enough")) >= 40 and emulator.batches


@pytest.mark.slow  # boto3 against the emulator over HTTP, as tests/test_bedrock_ondemand.py
def test_bedrock_on_demand(aws, tmp_path):
    settings = budgeted(backend="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0", concurrency=2)
    run_experiment(settings, tmp_path / "run")
    check_spent(tmp_path / "run", settings, len(aws.runtime_calls))


@pytest.mark.model
def test_embedded_model(loaded_model, tmp_path):
    settings = budgeted(model="qwen2.5-coder-0.5b", max_tokens=12, threads=1)  # counting paths, not answers
    run_experiment(settings, tmp_path / "run")
    with SampleStore.open_readonly(tmp_path / "run") as store:
        generated = len(store.stored_keys())
    check_spent(tmp_path / "run", settings, generated)


def test_a_larger_amount_later_buys_the_difference_in_dollars(anthropic_api, tmp_path):
    """The same run directory with twice the --max-cost amount spends nearly all of the new amount: what is
    left of it buys paths on top of every path bought so far (not on top of the first wave alone)."""
    from selfconsistency.costs import PriceTable

    emulator, _ = anthropic_api
    price = PriceTable().price("claude-haiku-4-5")

    def billed():
        return sum(price.cost(b["input"], b["output"]) for b in emulator.billed)

    settings = dict(data=str(GSM8K_TEST), limit=8, paths=20, temperatures=(0.7,), backend="anthropic",
                    model="claude-haiku-4-5", prompt_format="chat", max_tokens=64, allocate="asc")
    run_experiment(RunSettings(**settings, max_cost=0.02), tmp_path / "run")
    assert 0.9 * 0.02 <= billed() <= 0.02
    run_experiment(RunSettings(**settings, max_cost=0.04), tmp_path / "run")
    assert 0.9 * 0.04 <= billed() <= 0.04, billed()
