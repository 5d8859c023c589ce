"""`run --dry-run`: the run planned, packed and priced as a run would be, with nothing sent and no run
directory made; the expected cost (a mean output length, measured or stated) beside the worst case that
--max-cost is checked against. The seed's $9.50 and $14.50 come out of it from the seed's token counts."""

import re

import pytest

from conftest import GSM8K_TEST, run_cli
from selfconsistency.dry_run import dry_run
from selfconsistency.experiment import run_experiment
from selfconsistency.settings import RunSettings

ROLE = "arn:aws:iam::123456789012:role/selfconsistency-batch"
SEED_QUESTIONS = 7_473  # GSM8K's training split, the seed's scale
# The AWS blog's Cohere Command batch run, as the seed quoted it: 5.5 M input and 0.625 M output tokens
SEED_INPUT, SEED_OUTPUT = 5_500_000, 625_000


def seed_scale_data(tmp_path):
    """7,473 GSM8K-format questions (the shipped test split, cycled): the seed's number of records."""
    lines = GSM8K_TEST.read_text().splitlines()
    path = tmp_path / "seed.jsonl"
    path.write_text("\n".join(lines[i % len(lines)] for i in range(SEED_QUESTIONS)) + "\n")
    return path


def dry_run_args(data, *extra):
    return ["run", "gsm8k", "--data", str(data), "--backend", "bedrock-batch", "--model", "cohere.command-text-v14",
            "--bucket", "seed-bucket", "--role-arn", ROLE, "--no-greedy", "--dry-run",
            "--mean-prompt-tokens", str(round(SEED_INPUT / SEED_QUESTIONS)),
            "--mean-output-tokens", str(round(SEED_OUTPUT / SEED_QUESTIONS)), *extra]


@pytest.mark.slow  # plans 7,473 questions: seconds
@pytest.mark.parametrize("paths, seed_usd", [(1, 9.50), (5, 14.50)])
def test_the_seeds_cost_figures_come_out_of_the_dry_run(tmp_path, paths, seed_usd):
    """From the seed's token counts (a request's prompt and a path's output), at Bedrock's price for Cohere
    Command in batch (the on-demand price: no batch discount for Cohere): one generation a question, and
    five in one record (the prompt billed once for them)."""
    data = seed_scale_data(tmp_path)
    proc = run_cli(*dry_run_args(data, "--paths", str(paths), "--run-dir", str(tmp_path / "run")),
                   env={"AWS_DEFAULT_REGION": None, "AWS_REGION": None, "AWS_ACCESS_KEY_ID": None})  # no AWS needed
    assert proc.returncode == 0, proc.stderr
    expected = float(re.search(r"expected ~\$([\d,.]+)", proc.stdout).group(1).replace(",", ""))
    assert expected == pytest.approx(seed_usd, rel=0.05)
    assert f"in {SEED_QUESTIONS:,} requests" in proc.stdout  # five paths share a record's prompt
    assert "worst case $" in proc.stdout and "what --max-cost is checked against" in proc.stdout
    assert not (tmp_path / "run").exists()  # no run directory


def test_the_dry_run_expects_the_measured_mean_and_checks_the_cap_against_the_worst_case(tmp_path, scripted_backend):
    """A run's stored paths give the mean output length; --max-cost is compared with the worst case."""
    run_dir = tmp_path / "run"
    settings = {"data": str(GSM8K_TEST), "limit": 4, "paths": 3, "backend": "scripted", "model": "m"}
    run_experiment(RunSettings(**settings), run_dir)
    more = dry_run(RunSettings(**{**settings, "paths": 6}), run_dir)
    assert (more.planned, more.stored, more.estimate.paths) == (4 * 7, 4 * 4, 4 * 3)
    assert more.estimate.output_mean.tokens == 8.0 and "16 stored paths" in more.estimate.output_mean.source
    assert more.estimate.expected_output_tokens == 4 * 3 * 8
    on_bedrock = RunSettings(data=str(GSM8K_TEST), limit=20, paths=6, backend="bedrock-batch",
                             model="anthropic.claude-3-haiku-20240307-v1:0", bucket="b-bucket", role_arn=ROLE,
                             mean_output_tokens=50, max_cost=0.2)
    bedrock = dry_run(on_bedrock)
    e = bedrock.estimate
    assert e.worst_output_tokens == 20 * 7 * 256 and e.expected_output_tokens == 20 * 7 * 50
    assert e.expected(bedrock.price) < 0.02 < e.worst(bedrock.price) < 0.2
    lines = "\n".join(bedrock.lines())
    assert "--max-cost $0.2: the worst case is within it" in lines
    assert "2 jobs" not in lines and "1 job" in lines
    # a cap between the expected cost and the worst case: the run would submit nothing, and says so first
    from selfconsistency.tasks import DataError

    with pytest.raises(DataError, match=r"^--max-cost \$0.02 cannot pay the worst case of its jobs, \$0\.0"):
        dry_run(on_bedrock.model_copy(update={"max_cost": 0.02}))


def test_a_dry_run_of_an_application_profile_prices_it_as_base_model_without_asking(tmp_path):
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "10", "--backend", "bedrock-batch", "--model",
            profile, "--bucket", "p-bucket", "--role-arn", ROLE, "--dry-run", "--run-dir", str(tmp_path / "run")]
    refused = run_cli(*args)
    assert refused.returncode == 2 and "--base-model" in refused.stderr
    priced = run_cli(*args, "--base-model", "anthropic.claude-3-5-haiku-20241022-v1:0")
    assert priced.returncode == 0 and "cost at batch prices ($0.0004 / $0.002 per 1k tokens)" in priced.stdout


def test_a_budgeted_dry_run_prices_the_budget_not_every_path():
    """--budget-paths: the estimate is greedy plus the budget at each temperature (spread evenly), not
    questions x --paths; the plan's name is printed."""
    budgeted = RunSettings(data=str(GSM8K_TEST), limit=20, backend="openai-batch", model="gpt-4o-mini",
                           prompt_format="chat", paths=40, temperatures=(0.5, 0.7), budget_paths=70,
                           mean_output_tokens=100)
    found = dry_run(budgeted)
    assert found.planned == 20 + 2 * 70 and found.estimate.paths == 160
    assert any("budget: 70 paths at each temperature" in line and "budget:blend-asc:70" in line
               for line in found.lines())
    everything = dry_run(budgeted.model_copy(update={"budget_paths": None}))
    assert everything.planned == 20 + 2 * 20 * 40
    assert found.estimate.expected(found.price) < everything.estimate.expected(everything.price) / 5


def test_a_dry_run_of_an_amount_says_how_many_paths_it_buys_or_what_would_tell():
    amount = RunSettings(data=str(GSM8K_TEST), limit=20, backend="openai-batch", model="gpt-4o-mini",
                         prompt_format="chat", paths=40, allocate="blend-asc", max_cost=0.01)
    plain = next(line for line in dry_run(amount).lines() if "budget: --max-cost" in line)
    assert "depends on the answers' length (give --mean-output-tokens to estimate it)" in plain
    estimated = dry_run(amount.model_copy(update={"mean_output_tokens": 100}))
    line = next(line for line in estimated.lines() if "budget: --max-cost" in line)
    bought = int(line.rsplit("about ", 1)[1].split()[0].replace(",", ""))
    per_path = estimated.estimate.expected(estimated.price) / estimated.estimate.paths
    assert bought == min(estimated.estimate.paths, int(0.01 / per_path)) and 0 < bought < estimated.estimate.paths


@pytest.mark.parametrize("extra, fixes", [(["--temperatures", "0.7"], "--temperatures 1 --no-greedy"),
                                          (["--temperatures", "1"], "--no-greedy"),
                                          (["--temperatures", "1", "--no-greedy", "--top-p", "0.9"], "--top-p 1.0")])
def test_the_dry_run_refuses_what_the_run_refuses_a_model_without_sampling_parameters(tmp_path, extra, fixes):
    """The run refuses a temperature (or a greedy path, or a top-p) Claude Haiku 5.5 cannot take before
    anything is sent: the dry run of the same command refuses it in the same line, rather than pricing it."""
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "2", "--backend", "anthropic-batch", "--model",
            "claude-haiku-5-5", "--run-dir", str(tmp_path / "run"), *extra]
    proc = run_cli(*args, "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: claude-haiku-5-5 takes no temperature"), proc.stderr
    assert errors[0].endswith(f"give {fixes}") and proc.stdout == ""
    assert not (tmp_path / "run").exists()
    taken = run_cli(*args[:-len(extra)], "--temperatures", "1", "--no-greedy", "--dry-run")
    assert taken.returncode == 0 and "dry run: gsm8k on claude-haiku-5-5" in taken.stdout, taken.stderr


def test_a_dry_run_refuses_what_the_run_would_in_the_same_words(tmp_path, scripted_backend):
    """The dry run goes through the run's own checks (experiment.preflight) before pricing anything: a
    budget below a path a question, an amount below the first batch wave's least cost, and a run directory
    that holds another run's paths are refused as the run refuses them, and nothing is made."""
    from selfconsistency.store import StoreMismatch
    from selfconsistency.tasks import DataError

    def both(settings, run_dir, error):
        refusals = []
        for attempt in (lambda: dry_run(settings, run_dir), lambda: run_experiment(settings, run_dir)):
            with pytest.raises(error) as caught:
                attempt()
            refusals.append(str(caught.value))
        assert refusals[0] == refusals[1]
        return refusals[0]

    small = RunSettings(data=str(GSM8K_TEST), limit=10, paths=4, budget_paths=5, backend="scripted", model="m")
    assert "less than 1 per question" in both(small, tmp_path / "a", DataError)
    assert not (tmp_path / "a").exists()
    batch = RunSettings(data=str(GSM8K_TEST), limit=20, paths=4, backend="anthropic-batch", model="claude-haiku-4-5",
                        prompt_format="chat", allocate="blend-asc", max_cost=0.01)
    assert "cannot pay the first wave" in both(batch, tmp_path / "b", DataError)
    assert not (tmp_path / "b").exists()
    made = RunSettings(data=str(GSM8K_TEST), limit=3, paths=2, backend="scripted", model="m")
    run_experiment(made, tmp_path / "c")
    other = made.model_copy(update={"max_tokens": 99})
    assert "holds a run made with different settings (max_tokens)" in both(other, tmp_path / "c", StoreMismatch)
    assert dry_run(made, tmp_path / "c").stored == 3 * 3  # the run's own settings: priced, its paths counted
    printed = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "3", "--paths", "2", "--backend",
                      "scripted", "--model", "m", "--max-tokens", "99", "--run-dir", str(tmp_path / "c"), "--dry-run")
    assert printed.returncode == 2 and "different settings (max_tokens)" in printed.stderr
    assert len(printed.stderr.strip().splitlines()) == 1 and "Traceback" not in printed.stderr


def test_a_cap_that_cannot_pay_anything_is_refused_before_the_run_directory(tmp_path):
    """--max-cost as a cap (no budget): a new run whose jobs' worst case (batch) or whose cheapest request's
    worst case (request by request) is above it would send nothing; the run and its dry run both refuse
    before a run directory exists. A cap that pays some requests runs, and stops at the cap."""
    from selfconsistency.tasks import DataError

    base = dict(data=str(GSM8K_TEST), limit=20, paths=4, model="claude-haiku-4-5", prompt_format="chat")
    for backend, cap, says in (("anthropic-batch", 0.01, "the worst case of its jobs, $0.1"),
                               ("anthropic", 0.001, "the worst case of its cheapest request, $0.002")):
        settings = RunSettings(backend=backend, max_cost=cap, **base)
        for attempt in (dry_run, run_experiment):
            with pytest.raises(DataError, match=rf"^--max-cost \${cap:g} cannot pay {re.escape(says)}"):
                attempt(settings, tmp_path / backend)
        assert not (tmp_path / backend).exists()
    some = dry_run(RunSettings(backend="anthropic", max_cost=0.05, **base), tmp_path / "some")
    assert any("the run stops when the next request's worst case would pass it" in line for line in some.lines())
