"""Budgeted runs: a total of paths (or dollars) spent in waves where an allocator says they matter most."""

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import GSM8K_TEST, load_results
from selfconsistency.allocation import (
    ALLOCATORS,
    Budget,
    next_wave,
    plan_waves,
    ppr_density,
    replay_allocation,
    unit_key,
)
from selfconsistency.cli import app
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.stopping import TieBreaks, beta_leader_probability
from selfconsistency.store import SampleStore
from selfconsistency.tasks import DataError


def config(**overrides):
    base = dict(data=str(GSM8K_TEST), limit=12, backend="scripted", model="scripted-model", paths=16,
                temperatures=(0.7,), budget_paths=60, greedy=True)
    return RunSettings(**{**base, **overrides})


def synthetic_answers(questions=60, paths=24, seed=3):
    """Questions of every difficulty: answers drawn from a random distribution over 4 answers (None: no
    answer), the gold "0"."""
    rng = np.random.default_rng(seed)
    answers = []
    for _ in range(questions):
        p = rng.dirichlet(np.ones(4) * rng.uniform(0.2, 2))
        answers.append([str(x) if x < 3 else None for x in rng.choice(4, size=paths, p=p)])
    return answers, ["0"] * questions


def test_ppr_density_is_the_beta_posterior_density_at_one_half():
    for c1, c2 in [(0, 0), (1, 0), (3, 1), (7, 7), (20, 3)]:
        # the Beta(c1+1, c2+1) density at 1/2, from its definition
        from math import comb

        expected = (c1 + c2 + 1) * comb(c1 + c2, c1) / 2 ** (c1 + c2)
        assert ppr_density(c1, c2) == pytest.approx(expected)


@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_a_wave_never_gives_more_than_it_has_nor_past_the_cap(allocator):
    rng = np.random.default_rng(0)
    for _ in range(50):
        units = int(rng.integers(1, 30))
        taken = rng.integers(1, 8, size=(3, units))
        c1 = np.minimum(taken, rng.integers(0, 8, size=(3, units)))
        c2 = np.minimum(taken - c1, c1)
        open_units = rng.random((3, units)) < 0.8
        wave = rng.integers(1, 3 * units + 2, size=3)
        cap = 8
        extra, _ = next_wave(ALLOCATORS[allocator], c1, c2, taken, open_units, wave, rng.random(3),
                             rng.integers(0, 2**62, size=(3, units)).astype(np.uint64), cap)
        assert (extra >= 0).all() and (extra[~open_units] == 0).all()
        assert (taken + extra <= np.maximum(cap, taken)).all()
        room = np.where(open_units, np.maximum(cap - taken, 0), 0).sum(axis=1)
        assert (extra.sum(axis=1) == np.minimum(wave, room)).all()  # the whole wave, when there is room


def test_asc_serves_the_least_settled_vote_first():
    # 4 units: a 5-0 lead, a 3-2 race, a 1-1 tie, a 4-1 lead; one path to give
    c1, c2 = np.array([[5, 3, 1, 4]]), np.array([[0, 2, 1, 1]])
    taken = c1 + c2
    order = []
    for wave in (1, 2, 3, 4):
        extra, _ = next_wave(ALLOCATORS["asc"], c1, c2, taken, np.ones_like(taken, bool), np.array([wave]),
                             np.array([0.0]), np.zeros_like(taken, dtype=np.uint64), 40)
        order.append(set(np.flatnonzero(extra[0]).tolist()))
    assert order[0] == {2}  # P(leader ahead) is 1/2 for the tie
    assert order[1] == {2, 1} and order[2] == {2, 1, 3} and order[3] == {0, 1, 2, 3}
    assert beta_leader_probability(1, 1) < beta_leader_probability(3, 2) < beta_leader_probability(4, 1)


def test_blend_asc_moves_from_the_asc_ranking_to_the_ppr_ranking():
    # a 2-0 lead (ASC: settled-ish; PPR: density 0.75) against a 9-6 race (ASC: less settled than 2-0? no,
    # P=0.79 vs 0.875; PPR: density high, 1.9): both rankings agree; take units where they disagree
    c1, c2 = np.array([[1, 12]]), np.array([[0, 7]])
    asc = [beta_leader_probability(1, 0), beta_leader_probability(12, 7)]
    ppr = [ppr_density(1, 0), ppr_density(12, 7)]
    assert asc[0] < asc[1] and ppr[1] > ppr[0]  # ASC serves unit 0 first, PPR-1v1 unit 1
    taken = c1 + c2
    picks = [int(np.flatnonzero(next_wave(ALLOCATORS["blend-asc"], c1, c2, taken, np.ones_like(taken, bool),
                                           np.array([1]), np.array([spent]), np.array([[1, 2]], np.uint64),
                                           40)[0][0])[0])
             for spent in (0.0, 1.0)]
    assert picks == [0, 1]


@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_replay_spends_exactly_the_budget_and_plans_what_a_live_run_plans(allocator):
    answers, golds = synthetic_answers()
    replay = replay_allocation(allocator, answers, golds, 5, wave=17, runs=4, seed=1)
    assert replay.taken.sum(axis=1).tolist() == [5 * 60] * 4 and replay.mean_paths == 5
    assert replay.taken.max() <= 24 and replay.taken.min() >= 1
    # a live run sees each question's paths in one order: plan_waves over what is stored, wave by wave
    orders = np.random.default_rng(1).permuted(np.broadcast_to(np.arange(24), (4, 60, 24)), axis=-1)
    ties = TieBreaks.anonymous(60)
    keys = [unit_key(0, q, 0.0) for q in ties.question_ids]
    budget = Budget(total=300, min_paths=1, max_paths=24, wave=17, allocator=allocator)
    for row in range(4):
        order = [[answers[u][i] for i in orders[row, u]] for u in range(60)]
        stored = [[] for _ in range(60)]
        while True:
            plan = plan_waves(budget, stored, keys)
            if plan.done:
                break
            stored = [order[u][:plan.target[u]] for u in range(60)]
        assert [len(s) for s in stored] == replay.taken[row].tolist()


def test_uniform_allocation_is_fixed_n():
    """Spent uniformly, a budget of k paths per question is the vote of k random paths: the replay's
    accuracy matches the exact fixed-k expectation within its sampling error."""
    from selfconsistency.analysis import accuracy_curve

    answers, golds = synthetic_answers(questions=80)
    exact = accuracy_curve(answers, golds, runs=10)[5 - 1].exact
    replay = replay_allocation("uniform", answers, golds, 5, wave=80, runs=400, seed=2)
    assert replay.taken.min() == replay.taken.max() == 5
    assert abs(replay.accuracy - exact) < 4 * replay.accuracy_std / np.sqrt(400) + 1e-9


def test_adaptive_allocators_beat_uniform_at_the_same_budget():
    """Where questions differ in difficulty, paths given to undecided votes buy accuracy uniform cannot."""
    answers, golds = synthetic_answers(questions=120, paths=40, seed=5)
    uniform = replay_allocation("uniform", answers, golds, 6, wave=30, runs=60, seed=0)
    for allocator in ("asc", "blend-asc"):
        adaptive = replay_allocation(allocator, answers, golds, 6, wave=30, runs=60, seed=0)
        assert adaptive.accuracy > uniform.accuracy


def test_a_budget_smaller_than_one_path_per_question_is_refused():
    answers, golds = synthetic_answers(questions=10)
    with pytest.raises(ValueError, match="less than 1 per question"):
        replay_allocation("blend-asc", answers, golds, 0.5, wave=4)


# -- live runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("allocator", [None, "asc", "uniform"])
def test_a_budgeted_run_spends_its_budget_and_no_more(tmp_path, scripted_backend, allocator):
    run_experiment(config(allocate=allocator), tmp_path)
    with SampleStore(tmp_path, create=False) as store:
        sampled = [k for k in store.stored_keys() if k[1] == 0.7]
        greedy = [k for k in store.stored_keys() if k[1] == 0.0]
        stops = store.stops(config(allocate=allocator).stops_name())
    assert len(sampled) == 60 and len(greedy) == 12
    assert len(stops) == 12 and sum(used for used, _, _ in stops.values()) == 60
    assert all(reason == "budget" for _, _, reason in stops.values())
    results = write_report(tmp_path)
    adaptive = results["sampled"][0]["adaptive"]
    assert adaptive["mean_paths_used"] == 5 and adaptive["rule"].startswith("budget:")
    assert results["sampled"][0]["paths"] == 60  # usage and cost count every path bought, not the curve's
    assert "T=0.7 budget 60 | 5.00 |" in (tmp_path / "results.md").read_text()
    printed = CliRunner().invoke(app, ["report", str(tmp_path)], env={"COLUMNS": "80"}).stdout
    # on an 80-column terminal the budget's rows are not wrapped: label and numbers on one line each
    assert re.search(r"^ T=0\.7 budget 60 +5\.00 ", printed, re.M), printed
    load_results(tmp_path)
    if allocator != "uniform":  # the scripted sure questions (even) settle at once: the coins get the paths
        used = {qid: used for (qid, _), (used, _, _) in stops.items()}
        sure = [u for q, u in used.items() if int(q[-1]) % 2 == 0]
        coin = [u for q, u in used.items() if int(q[-1]) % 2 == 1]
        assert np.mean(coin) > np.mean(sure)


def test_a_killed_budgeted_run_resumes_the_same_plan(tmp_path, scripted_backend):
    """Killed after part of a wave, the run finishes that wave and makes the plan an uninterrupted run
    makes: the same paths, none generated twice."""
    whole = tmp_path / "whole"
    run_experiment(config(wave_paths=7), whole)
    with SampleStore(whole, create=False) as store:
        expected = sorted(store.stored_keys())

    class Killed(Exception):
        pass

    broken = tmp_path / "broken"
    first_backend = len(scripted_backend)
    for kill_after in (20, 15, 10):  # 72 paths in all (12 greedy)
        count = 0

        def on_path(_generation, limit=kill_after):
            nonlocal count
            count += 1
            if count == limit:
                raise Killed

        with pytest.raises(Killed):
            run_experiment(config(wave_paths=7), broken, on_path=on_path)
    run_experiment(config(wave_paths=7), broken)
    with SampleStore(broken, create=False) as store:
        assert sorted(store.stored_keys()) == expected
    generated = [g for backend in scripted_backend[first_backend:] for g in backend.generated]
    assert len(generated) == len(set(generated))  # nothing paid for twice


def test_budget_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--allocate spends a budget"):
        config(budget_paths=None, allocate="asc")
    with pytest.raises(ValueError, match="--wave-paths applies with a budget"):
        config(budget_paths=None, wave_paths=4)
    with pytest.raises(ValueError, match="unknown allocator"):
        config(allocate="psychic")
    under_budget = RunSettings(data=str(GSM8K_TEST), backend="scripted", model="m", budget_paths=60, max_paths=8)
    assert under_budget.sampling.paths == 8  # --max-paths names --paths under a budget too
    with pytest.raises(DataError, match="less than 1 per question"):
        run_experiment(config(budget_paths=5), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_a_budget_with_a_rule_stops_settled_questions_early(tmp_path, scripted_backend):
    run_experiment(config(stop="beta:0.95", budget_paths=120), tmp_path)
    settings = config(stop="beta:0.95", budget_paths=120)
    with SampleStore(tmp_path, create=False) as store:
        stops = store.stops(settings.stops_name())
    assert settings.stops_name() == "budget:blend-asc:120+beta:0.95"
    reasons = {q: r for (q, _), (_, _, r) in stops.items()}
    assert all(reasons[q] == "rule" for q in reasons if int(q[-1]) % 2 == 0)
    assert sum(used for used, _, _ in stops.values()) <= 120


def test_a_question_that_never_answers_is_served_last():
    """The published statistics rank a question without any vote as least settled: one whose paths all
    abstain would draw every path. After SILENT_AFTER of them it waits behind every other question."""
    from selfconsistency.allocation import SILENT_AFTER

    answers, golds = synthetic_answers(questions=20, paths=24)
    answers[7] = [None] * 24
    for allocator in ("asc", "blend-asc"):
        replay = replay_allocation(allocator, answers, golds, 4, wave=5, runs=5, seed=1)
        assert replay.taken[:, 7].max() <= SILENT_AFTER


def test_another_plan_in_the_same_run_directory_is_refused_and_a_larger_amount_buys_the_difference(
        tmp_path, scripted_backend):
    """A rerun with other plan settings would replay another plan over the paths the first one bought and
    buy past the budget: refused by name. The same settings with a larger amount buy only the difference."""
    run_experiment(config(wave_paths=3), tmp_path)
    for changed, named in ((dict(wave_paths=5), "wave: 3 before, 5 now"), (dict(limit=10), "questions"),
                           (dict(min_paths=2, wave_paths=3), "first paths: 1 before, 2 now"),
                           (dict(wave_paths=3, allocate="asc"), "allocator: blend-asc before, asc now")):
        with pytest.raises(DataError, match=named):
            run_experiment(config(**changed), tmp_path)
    run_experiment(config(wave_paths=3, budget_paths=90), tmp_path)
    with SampleStore(tmp_path, create=False) as store:
        sampled = [k for k in store.stored_keys() if k[1] == 0.7]
        stops = store.stops(config(budget_paths=90).stops_name())
    assert len(sampled) == 90 and sum(used for used, _, _ in stops.values()) == 90


def test_a_report_before_any_question_is_finished(tmp_path, scripted_backend):
    """A budgeted run records its questions' stops at its end: killed before, it has none, and its report
    says so instead of failing."""
    class Killed(Exception):
        pass

    def kill(_generation, seen=[]):  # noqa: B006 - the count across calls
        seen.append(1)
        if len(seen) == 30:
            raise Killed

    with pytest.raises(Killed):
        run_experiment(config(), tmp_path, on_path=kill)
    results = write_report(tmp_path)
    assert results["questions"] == 0 and len(results["incomplete_questions"]) == 12
    load_results(tmp_path)


def test_unlabelled_questions_take_a_budget_too(tmp_path, scripted_backend):
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(line.split(', "answer"')[0] + "}\n" for line in GSM8K_TEST.read_text().splitlines()[:6]))
    run_experiment(config(data=str(data), limit=6, budget_paths=20), tmp_path / "run")
    results = write_report(tmp_path / "run")
    assert results["questions"] == 6 and results["sampled"][0]["paths"] == 20


def test_an_amount_to_spend_needs_a_price_before_the_run_directory_is_made(tmp_path, scripted_backend):
    with pytest.raises(DataError, match="needs a price"):
        run_experiment(config(budget_paths=None, allocate="asc", max_cost=1.0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_paths_generated_are_the_stored_paths_after_a_larger_amount(tmp_path, scripted_backend):
    """A question's stop is recorded once per plan; a rerun of the smaller plan after a larger amount bought
    more paths reports the paths generated now (what usage and cost count), not those of its first run."""
    for amount, generated in ((60, 60), (90, 90), (60, 90)):
        run_experiment(config(wave_paths=3, budget_paths=amount), tmp_path)
        adaptive = write_report(tmp_path)["sampled"][0]["adaptive"]
        assert adaptive["mean_paths_used"] == amount / 12
        assert adaptive["mean_paths_generated"] == generated / 12


@pytest.mark.parametrize("name", ["max_paths", "min_paths"])
def test_the_api_and_serve_suggest_no_budget_they_refuse(name):
    """SelfConsistency and `serve` take no budget (budget_paths is refused there): a rule's setting given
    without a rule asks for a rule, not for --budget-paths."""
    from selfconsistency.api import run_config

    with pytest.raises(ValueError) as refused:
        run_config("gsm8k", {"backend": "openai", "model": "m", name: 3})
    message = str(refused.value)
    assert "budget" not in message and "Value error" not in message, message
    assert "stop" in message
    with pytest.raises(ValueError, match="budget_paths does not apply to SelfConsistency"):
        run_config("gsm8k", {"backend": "openai", "model": "m", "budget_paths": 10})


@pytest.mark.parametrize("amount", ["nan", "inf", "0"])
def test_an_amount_that_is_not_a_finite_positive_number_is_one_line(tmp_path, amount):
    from conftest import one_line_error, run_cli

    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "4", "--backend", "openai", "--model", "m",
                   "--base-url", "http://127.0.0.1:9/v1", "--allocate", "asc", "--max-cost", amount, "--dry-run")
    line = one_line_error(proc, "--max-cost")
    assert ("finite" in line) if amount != "0" else ("greater than 0" in line)


@pytest.mark.parametrize("budget", ["nan", "inf", "0", "0.5", "20000"])
def test_a_simulated_budget_out_of_range_is_one_line_saying_the_range(tmp_path, budget):
    from conftest import one_line_error, run_cli

    one_line_error(run_cli("simulate", str(tmp_path), "--allocate", "asc", "--budget", budget),
                   f"--budget {budget}", "1 to 10,000")
