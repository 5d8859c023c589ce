"""How sure a number is (stats.py): pass@k against brute force, the intervals' coverage by simulation, the
paired test's false-positive rate, ties under both rules, and what results.json reports from them."""

from itertools import combinations
from math import comb

import numpy as np
import pytest

from selfconsistency.analysis import encode, exact_curve, exact_curves, exact_majority_accuracy
from selfconsistency.stats import LEVEL, intervals, paired, pass_at_k, resample_weights


def test_pass_at_k_is_the_share_of_k_subsets_with_a_right_path():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        right = rng.random(n) < rng.random()
        brute = [np.mean([any(right[list(subset)]) for subset in combinations(range(n), k)]) for k in range(1, n + 1)]
        assert np.allclose(pass_at_k(np.array([right.sum()]), n)[0], brute)
        # Chen et al.'s closed form, as written in the paper
        c = int(right.sum())
        assert np.allclose(pass_at_k(np.array([c]), n)[0],
                           [1 - (comb(n - c, k) / comb(n, k) if n - c >= k else 0) for k in range(1, n + 1)])


@pytest.mark.parametrize("kind", ["greedy (one path, right or wrong)", "maj@k of 5 paths, exact per question"])
def test_the_interval_covers_a_known_accuracy_in_95_percent_of_benchmarks(kind):
    """1,000 simulated benchmarks of 150 questions each from a population whose accuracy is known: the 95 %
    interval (percentile bootstrap over questions) covers it in 93-97 % of them."""
    rng = np.random.default_rng(7)
    questions, benchmarks, paths, k = 150, 1000, 5, 3
    weights = resample_weights(questions)
    covered = 0
    if kind.startswith("greedy"):
        truth = 0.62
        for _ in range(benchmarks):
            right = (rng.random(questions) < truth).astype(float)
            low, high = intervals(right[:, None], weights)
            covered += low[0] <= truth <= high[0]
    else:
        # each question's chance that one path is right, from a Beta population; its answers among 3 options
        def sample(count):
            p = rng.beta(2.0, 1.5, count)
            draws = rng.random((count, paths))
            answers = np.where(draws < p[:, None], "right", np.where(draws < (1 + p[:, None]) / 2, "w1", "w2"))
            return encode(answers.tolist(), ["right"] * count)

        population = sample(200_000)
        truth = exact_curve(*population)[k - 1]  # the population's maj@3 (over many questions: its mean)
        for _ in range(benchmarks):
            encoded, gold_ids = sample(questions)
            low, high = intervals(exact_curves(encoded, gold_ids)[:, k - 1:k], weights)
            covered += low[0] <= truth <= high[0]
    assert 0.93 <= covered / benchmarks <= 0.97, covered


def test_the_paired_test_rejects_a_true_null_about_5_percent_of_the_time_and_finds_a_real_gain():
    rng = np.random.default_rng(3)
    questions = 120
    weights = resample_weights(questions)
    rejected = 0
    trials = 200
    for _ in range(trials):
        same = rng.random(questions) < 0.6  # both methods right on a question with the same chance, paired
        a = np.where(rng.random(questions) < 0.8, same, rng.random(questions) < 0.6).astype(float)
        b = np.where(rng.random(questions) < 0.8, same, rng.random(questions) < 0.6).astype(float)
        rejected += paired(a, b, weights).p_value < 1 - LEVEL
    assert rejected / trials <= 0.10, rejected
    gain = paired((rng.random(questions) < 0.8).astype(float), (rng.random(questions) < 0.5).astype(float), weights)
    assert gain.p_value < 0.01 and gain.low > 0 and gain.low <= gain.difference <= gain.high


def test_ties_are_counted_and_abstain_counts_a_tie_as_no_answer():
    answers = [["1", "2"], ["1", "1"], ["2", "3"]]  # gold 1: tied, sure, absent
    encoded, gold_ids = encode(answers, ["1", "1", "1"])
    assert exact_curves(encoded, gold_ids).tolist() == [[0.5, 0.5], [1.0, 1.0], [0.0, 0.0]]
    assert exact_curves(encoded, gold_ids, "abstain").tolist() == [[0.5, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert exact_curves(encoded, gold_ids, "tied").sum(axis=0).tolist() == [0.0, 1.0]  # at k=2 one gold tie
    for row in exact_curves(encoded, gold_ids):  # per question, the closed form each comes from
        assert len(row) == 2
    assert np.allclose(exact_curves(encoded, gold_ids)[0], exact_majority_accuracy(1, [1], 0)[:2])


def test_results_report_intervals_pass_at_k_ties_and_paired_comparisons(tmp_path, scripted_backend):
    from conftest import GSM8K_TEST
    from selfconsistency.experiment import run_experiment
    from selfconsistency.results import build_results
    from selfconsistency.settings import RunSettings
    from selfconsistency.store import SampleStore

    settings = RunSettings(data=str(GSM8K_TEST), limit=30, backend="scripted", model="m", paths=5)
    run_dir = run_experiment(settings, tmp_path / "run")
    with SampleStore.open_readonly(run_dir) as store:
        results = build_results(store)
        paths = list(store.paths())
        golds = {q.id: q.gold for q in store.questions()}
    sampled = [p for p in paths if p.temperature == 0.7]
    rows = {}
    for p in sampled:
        rows.setdefault(p.question_id, []).append(p.answer)
    right = np.array([sum(a == golds[q] for a in answers) for q, answers in sorted(rows.items())])
    curve = results["sampled"][0]["curve"]
    assert [point["pass_at_k"] for point in curve] == pytest.approx(pass_at_k(right, 5).mean(axis=0).tolist())
    for point in curve:
        assert point["low"] <= point["exact"] <= point["high"] and point["pass_low"] <= point["pass_at_k"]
        assert point["pass_at_k"] >= point["exact"] - 1e-12  # some path right is at least the vote right
    low, high = results["greedy"]["interval"]
    assert low <= results["greedy"]["accuracy"] <= high
    assert len(results["sampled"][0]["ties_with_gold"]) == 5
    names = [c["name"] for c in results["comparisons"]]
    assert names[0] == "T=0.7 SC@5 vs greedy" and "logprob vs majority at N=5" in " ".join(names)
    first = results["comparisons"][0]
    assert first["a"] == pytest.approx(curve[-1]["exact"]) and first["b"] == pytest.approx(
        results["greedy"]["accuracy"])
    assert first["low"] <= first["difference"] <= first["high"] and 0 < first["p_value"] <= 1


def test_compare_two_runs_question_by_question(tmp_path, scripted_backend):
    """Two runs over the same questions (two seeds): compare pairs their per-question scores; a run over
    other golds is refused."""
    import json

    from typer.testing import CliRunner

    from conftest import GSM8K_TEST
    from selfconsistency.cli import app
    from selfconsistency.compare import compare, run_scores
    from selfconsistency.experiment import run_experiment
    from selfconsistency.settings import RunSettings

    runs = [run_experiment(RunSettings(data=str(GSM8K_TEST), limit=20, backend="scripted", model="m", paths=4,
                                       seed=seed), tmp_path / f"run{seed}") for seed in (1, 2)]
    a, b = run_scores(runs[0]), run_scores(runs[1])
    greedy, majority = compare(a, b)
    assert greedy.setting == "greedy" and greedy.result.questions == 20
    assert majority.setting.startswith("SC@4") and majority.result.a == pytest.approx(
        np.mean([a.majority[q][-1] for q in sorted(a.majority)]))
    result = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[1])], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "SC@4" in result.stdout and "permutation" in result.stdout, result.output
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"question": json.loads(line)["question"], "answer": "#### 99999"}) + "\n"
                             for line in GSM8K_TEST.read_text().splitlines()[:20]))
    elsewhere = run_experiment(RunSettings(data=str(other), backend="scripted", model="m", paths=4), tmp_path / "o")
    refused = CliRunner().invoke(app, ["compare", str(runs[0]), str(elsewhere)])
    assert refused.exit_code == 2 and "did not ask the same questions" in refused.stderr


def test_the_permutation_p_value_matches_the_exact_sign_flip_distribution():
    import itertools

    rng = np.random.default_rng(11)
    for n, shift in ((12, 0.15), (13, 0.0), (5, 0.3)):  # group sizes that do not divide by 8
        a = np.clip(rng.random(n) + shift, 0, 1)
        b = rng.random(n)
        differences = a - b
        observed = abs(differences.mean())
        flips = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))
        exact = np.mean(np.abs(flips @ differences / n) >= observed - 1e-12)
        assert abs(paired(a, b).p_value - exact) < 0.015, (n, paired(a, b).p_value, exact)


def test_sign_flip_means_are_means_of_signed_differences():
    from selfconsistency.stats import sign_flip_means

    differences = np.random.default_rng(2).random(21) - 0.5
    means = sign_flip_means(differences, np.random.default_rng(5), 3000)
    reachable = np.abs(differences).sum() / 21
    assert np.all(np.abs(means) <= reachable + 1e-12)
    assert abs(means.mean()) < 0.01 and abs(means.std() - np.sqrt((differences ** 2).sum()) / 21) < 0.003
