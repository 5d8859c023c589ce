"""The on-demand Bedrock backend: Converse for chat models, InvokeModel (packed) for Cohere, through boto3
against the emulator."""

import pytest

from conftest import GSM8K_TEST, stored_rows
from selfconsistency.experiment import RunConfig, run_experiment
from selfconsistency.testing.bedrock_emulator import Faults

pytestmark = pytest.mark.slow  # whole runs against the emulator over HTTP


@pytest.mark.parametrize("model", ["anthropic.claude-3-haiku-20240307-v1:0", "cohere.command-text-v14"])
def test_small_run_on_demand(aws, tmp_path, model):
    aws.faults = Faults(throttle_every=4)  # botocore's adaptive retries absorb them
    run_dir = tmp_path / "run"
    run_experiment(RunConfig(data=str(GSM8K_TEST), limit=3, paths=4, backend="bedrock", model=model,
                             concurrency=3), run_dir)
    rows = stored_rows(run_dir)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == 3 * 5 and all(answer is not None for *_, answer, _ in rows)  # retries absorbed throttling
    assert aws.jobs == {}  # no batch jobs: runtime calls only


def test_token_budget_on_demand(aws, tmp_path):
    from selfconsistency.backends.base import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        run_experiment(RunConfig(data=str(GSM8K_TEST), limit=3, paths=4, backend="bedrock",
                                 model="cohere.command-text-v14", max_tokens_total=500), tmp_path / "run")
    assert stored_rows(tmp_path / "run") == []
