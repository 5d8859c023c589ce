"""The on-demand Bedrock backend: Converse for chat models, InvokeModel (packed) for Cohere, through boto3
against the emulator."""

import pytest

from conftest import GSM8K_TEST, stored_rows
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.settings import RunSettings
from selfconsistency.testing.bedrock_emulator import Faults

pytestmark = pytest.mark.slow  # whole runs against the emulator over HTTP


@pytest.mark.parametrize("model", ["anthropic.claude-3-haiku-20240307-v1:0", "cohere.command-text-v14"])
def test_small_run_on_demand(aws, tmp_path, model):
    aws.faults = Faults(throttle_every=4)  # botocore's adaptive retries absorb them
    run_dir = tmp_path / "run"
    run_experiment(RunSettings(data=str(GSM8K_TEST), limit=3, paths=4, backend="bedrock", model=model,
                             concurrency=3), run_dir)
    rows = stored_rows(run_dir)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == 3 * 5 and all(answer is not None for *_, answer, _ in rows)  # retries absorbed throttling
    assert aws.jobs == {}  # no batch jobs: runtime calls only


def test_token_budget_on_demand(aws, tmp_path):
    from selfconsistency.backends.base import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        run_experiment(RunSettings(data=str(GSM8K_TEST), limit=3, paths=4, backend="bedrock",
                                 model="cohere.command-text-v14", max_tokens_total=500), tmp_path / "run")
    assert stored_rows(tmp_path / "run") == []


def test_a_consumer_that_stops_sends_no_more_calls(aws):
    """Closing generate() (a serve client that went away) leaves only the calls in flight: queued ones are
    never sent, and closing does not wait for them."""
    import time

    from selfconsistency.backends.base import BackendConfig
    from selfconsistency.backends.bedrock_ondemand import BedrockOnDemandBackend, BedrockOnDemandOptions

    aws.faults = Faults(runtime_delay_s=0.2)
    config = RunSettings(data=str(GSM8K_TEST), limit=6, paths=1, backend="bedrock",
                       model="anthropic.claude-3-haiku-20240307-v1:0")
    task = config.get_task()
    backend = BedrockOnDemandBackend(BackendConfig(model=config.model, options=BedrockOnDemandOptions(concurrency=1)))
    generations = backend.generate(plan_requests(config, task, config.load(task)))  # 12 calls, 0.2 s each
    next(generations)
    started = time.monotonic()
    generations.close()
    closing = time.monotonic() - started
    time.sleep(0.8)
    assert closing < 0.2 and len(aws.runtime_calls) <= 2  # the one answered and the one in flight
    backend.close()
