from itertools import product

import pytest

from selfconsistency.stopping import (
    BetaRule,
    DirichletRule,
    EntropyRule,
    FixedN,
    WindowRule,
    beta_leader_probability,
    parse_rule,
    replay_many,
)


def test_beta_probability_matches_integration():
    # P(X > 1/2) for X ~ Beta(a+1, b+1) by numeric integration of the density
    for a, b in product(range(0, 7), range(0, 7)):
        n = 20000
        xs = [(i + 0.5) / n for i in range(n)]
        density = [x**a * (1 - x) ** b for x in xs]
        expected = sum(d for x, d in zip(xs, density, strict=True) if x > 0.5) / sum(density)
        assert beta_leader_probability(a, b) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("answers,stop", [
    (["7"] * 4, False),  # 4-0: P = 1 - 1/32 = 0.96875, just under 0.97
    (["7"] * 5, True),   # 5-0: P = 1 - 1/64 = 0.984
    (["7", "7", "7", "7", "8"], False),
    (["7"] * 7 + ["8"], True),
    ([None] * 6, False),  # abstentions are not votes
    (["7", None, "7", None, "7", "7", "7"], True),  # 5-0 among the votes
])
def test_beta_rule(answers, stop):
    assert BetaRule(threshold=0.97, max_paths=40).should_stop(answers) is stop


def test_beta_four_unanimous_meets_095():
    assert beta_leader_probability(4, 0) == pytest.approx(1 - 1 / 32)
    assert BetaRule(threshold=0.95).should_stop(["1"] * 4)
    assert not BetaRule(threshold=0.95).should_stop(["1"] * 3)  # 0.9375


def test_min_and_max_paths_bound_every_rule():
    rule = BetaRule(threshold=0.95, min_paths=6, max_paths=10)
    assert not rule.should_stop(["1"] * 5)
    assert rule.should_stop(["1"] * 6)
    assert rule.should_stop([str(i) for i in range(10)])  # max reached without agreement
    assert not rule.should_stop([str(i) for i in range(9)])


def test_dirichlet_rule_deterministic_and_sensible():
    rule = DirichletRule(threshold=0.95)
    assert rule.should_stop(["1"] * 8)
    assert not rule.should_stop(["1", "2", "3", "1", "2"])
    assert rule.should_stop(["1"] * 10 + ["2", "3"])
    assert [rule.should_stop(["1"] * 5 + ["2"]) for _ in range(5)] == [rule.should_stop(["1"] * 5 + ["2"])] * 5


def test_esc_windows():
    rule = WindowRule(window=3)
    assert not rule.should_stop(["1", "1"])  # not at a window boundary
    assert rule.should_stop(["1", "1", "1"])
    assert not rule.should_stop(["1", "2", "1"])
    assert rule.should_stop(["1", "2", "1", "4", "4", "4"])
    assert not rule.should_stop([None, None, None])  # an abstaining window is not agreement


def test_entropy_rule():
    rule = EntropyRule(threshold=0.3)
    assert rule.should_stop(["1", "1", "1", "1"])
    assert not rule.should_stop(["1", "1", "1"])  # too few paths to judge
    assert not rule.should_stop(["1", "2", "3", "1"])
    assert rule.should_stop(["1"] * 9 + ["2"])  # entropy 0.33 nats / log 10 = 0.14


def test_fixed():
    assert not FixedN(n=3).should_stop(["1", "1"]) and FixedN(n=3).should_stop(["1", "2", "3"])


def test_parse_and_validate():
    assert parse_rule("beta:0.9", max_paths=16) == BetaRule(threshold=0.9, max_paths=16)
    assert parse_rule("esc:4").window == 4
    assert parse_rule("fixed", max_paths=8).n == 8
    for bad in ["beta:1.5", "esc:0", "beta:x", "magic:1"]:
        with pytest.raises(ValueError):
            parse_rule(bad)
    with pytest.raises(ValueError):
        BetaRule(min_paths=5, max_paths=4)


def test_replay_is_seeded_and_saves_paths_on_easy_questions():
    answers = [["5"] * 16, ["3"] * 12 + ["4"] * 4, [str(i % 5) for i in range(16)]]
    golds = ["5", "3", "0"]
    first = replay_many([BetaRule(threshold=0.95, max_paths=16)], answers, golds, runs=50, seed=1)[0]
    assert first == replay_many([BetaRule(threshold=0.95, max_paths=16)], answers, golds, runs=50, seed=1)[0]
    fixed = replay_many([FixedN(n=16, max_paths=16)], answers, golds, runs=50, seed=1)[0]
    assert fixed.mean_paths == 16
    assert first.mean_paths < 10  # the unanimous question stops after 4 paths
    assert first.accuracy >= 0.6


def _synthetic_run(run_dir, questions=12, paths=8):
    """A store as a run leaves it, written directly: easy questions agree, hard ones scatter."""
    from selfconsistency.runlock import prepare_run_dir
    from selfconsistency.store import SampleStore, StoredPath, StoredQuestion

    prepare_run_dir(run_dir)  # a run directory, as a run makes it

    config = {"task": "gsm8k", "backend": "local", "model": "m", "greedy": False, "temperatures": [0.7],
              "paths": paths, "subset_runs": 20, "seed": 0}
    with SampleStore(run_dir) as store:
        store.bind_config({"task": "gsm8k"}, config)
        ids = [f"test-{i:05d}" for i in range(questions)]
        store.add_questions(StoredQuestion(qid, i, f"q{i}", "1") for i, qid in enumerate(ids))
        store.set_selection(ids)
        for i, qid in enumerate(ids):
            for j in range(paths):
                answer = "1" if i % 2 == 0 else str(j % 3)
                store.add_path(StoredPath(qid, 0.7, j, j, f"The answer is {answer}.", answer, 10, 5, 0.1,
                                          "stop", -1.0, "local", "m"))


def test_simulate_command_writes_the_frontier(tmp_path):
    import json

    from typer.testing import CliRunner

    from selfconsistency.cli import app

    _synthetic_run(tmp_path)
    result = CliRunner().invoke(app, ["simulate", str(tmp_path), "--stop", "beta:0.95", "--stop", "fixed:8",
                                      "--runs", "20"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    frontier = json.loads((tmp_path / "frontier.json").read_text())
    beta, fixed = frontier["rules"]
    assert frontier["questions"] == 12 and frontier["paths"] == 8 and len(frontier["fixed"]) == 8
    assert fixed["mean_paths"] == 8 and abs(fixed["accuracy"] - frontier["fixed"][-1]["exact"]) < 0.1
    assert frontier["fixed"][-1]["exact"] == 0.75  # 6 unanimous + 6 two-way ties at N=8
    assert beta["mean_paths"] < 6.5  # the six unanimous questions stop after 4 paths
    # beside each rule, fixed N at the rule's own mean paths: the curve between its two nearest k
    k = int(beta["mean_paths"])
    low, high = frontier["fixed"][k - 1]["exact"], frontier["fixed"][k]["exact"]
    at_same_paths = low + (high - low) * (beta["mean_paths"] - k)
    row = next(line for line in result.stdout.splitlines() if "beta:0.95" in line)
    assert f"{beta['mean_paths']:.2f}" in row and f"{at_same_paths:.1%}" in row, row
    assert (tmp_path / "frontier.png").exists()
    bad = CliRunner().invoke(app, ["simulate", str(tmp_path), "--stop", "beta:0.95", "--temperature", "1.0"])
    assert bad.exit_code == 2 and "T=1" in bad.output


def reference_replay(rule, answers, golds, runs=100, seed=0):
    """replay path by path, as it was before issue 16, with the questions' own tie-breaks (vote.decide)."""
    import numpy as np

    from selfconsistency.stopping import ReplayResult
    from selfconsistency.vote import decide

    rng = np.random.default_rng(seed)
    accuracy, used = np.zeros(runs), np.zeros(runs)
    for run in range(runs):
        correct = spent = 0
        for position, (row, gold) in enumerate(zip(answers, golds, strict=True)):
            order = [row[i] for i in rng.permutation(len(row))]
            k = next((k for k in range(1, len(order) + 1) if rule.should_stop(order[:k])), len(order))
            correct += decide(order[:k], seed=0, question_id=str(position), temperature=0.0).answer == gold
            spent += k
        accuracy[run], used[run] = correct / len(golds), spent / len(golds)
    return ReplayResult(rule.name, float(accuracy.mean()), float(accuracy.std()), float(used.mean()))


@pytest.mark.parametrize("text", ["beta:0.95", "dirichlet:0.9", "esc:3", "entropy:0.4", "fixed:6"])
def test_replay_matches_the_path_by_path_reference_in_distribution(text):
    import numpy as np

    rng = np.random.default_rng(3)
    pool = ["1", "2", "3", None]
    answers = [[pool[i] for i in rng.choice(4, size=10, p=rng.dirichlet([3, 1, 1, 0.3]))] for _ in range(40)]
    golds = ["1"] * 40
    rule = parse_rule(text, min_paths=2, max_paths=10)
    runs = 300
    fast = replay_many([rule], answers, golds, runs=runs, seed=1)[0]
    slow = reference_replay(rule, answers, golds, runs=runs, seed=2)
    # Per-run means over 40 questions: their spread over runs gives the standard error of each mean.
    assert abs(fast.accuracy - slow.accuracy) <= 5 * np.hypot(fast.accuracy_std, slow.accuracy_std) / np.sqrt(runs)
    assert abs(fast.mean_paths - slow.mean_paths) <= 0.05 * slow.mean_paths + 0.05
    assert abs(fast.accuracy_std - slow.accuracy_std) <= 0.3 * slow.accuracy_std + 0.01


def test_replay_many_equals_one_rule_at_a_time_for_the_orders():
    answers = [["5"] * 6 + ["4"] * 2, ["3", "4"] * 4, [None] * 8]
    golds = ["5", "3", "1"]
    rules = [FixedN(n=8, max_paths=8), BetaRule(threshold=0.95, max_paths=8)]
    from selfconsistency.stopping import replay_many

    together = replay_many(rules, answers, golds, runs=30, seed=4)
    assert together[0].mean_paths == 8 and together[0].accuracy <= 2 / 3
    assert together[1].mean_paths == replay_many([rules[1]], answers, golds, runs=30, seed=4)[0].mean_paths


def _full_sample_share(counts: tuple[int, ...], draws: int) -> float:
    """The Dirichlet rule's leader share before issue 16: all `draws` samples in one call."""
    import numpy as np

    if len(counts) == 1:
        counts = counts + (0,)
    rng = np.random.default_rng([len(counts), *counts])
    shares = rng.dirichlet(np.array(counts, dtype=float) + 1.0, size=draws)
    return float(np.mean(shares.argmax(axis=1) == 0))


def test_dirichlet_decisions_equal_the_full_samples_for_every_count_tuple():
    from itertools import combinations_with_replacement

    from selfconsistency.stopping import _dirichlet_leader_wins, _wins_needed

    # Every descending count tuple of up to 4 answers and 14 votes, at thresholds the early stop must
    # get right near the boundary too (shares close to 0.8, 0.9, 0.95 are among these).
    tuples = {tuple(sorted(c, reverse=True)) for size in range(1, 5)
              for c in combinations_with_replacement(range(1, 15), size) if sum(c) <= 14}
    near = 0
    for counts in sorted(tuples):
        share = _full_sample_share(counts, 4000)
        for threshold in (0.8, 0.9, 0.95):
            assert _dirichlet_leader_wins(counts, 4000, threshold) == (share >= threshold), (counts, threshold)
            near += abs(share - threshold) < 0.01
    assert near >= 5  # the comparison did meet counts whose share is within 1 % of a threshold
    # A share exactly at the threshold stops (>=): 3,800 of 4,000 wins is 0.95; 2 of 3 is the least >= 0.5.
    assert _wins_needed(4000, 0.95) == 3800 and _wins_needed(3, 0.5) == 2


def test_rows_multisets_follow_their_answer_counts():
    """replay_many tracks each row's multiset of vote counts as an index into a growing table; after every
    draw it must be the row's sorted counts (abstentions do not vote)."""
    from collections import Counter

    import numpy as np

    from selfconsistency.stopping import _grow_multisets

    rng = np.random.default_rng(6)
    n, rows = 12, 300
    drawn = rng.integers(0, 5, (n, rows))  # 0: abstain
    counts = np.zeros((rows, 5), dtype=np.int64)
    multisets, grown, state = [()], np.full((2, n + 1), -1, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    for k in range(n):
        before = counts[np.arange(rows), drawn[k]].copy()
        counts[np.arange(rows), drawn[k]] += 1
        grown = _grow_multisets(state, drawn[k] > 0, before, multisets, grown)
        for row in range(rows):
            expected = sorted(Counter(a for a in drawn[: k + 1, row].tolist() if a).values(), reverse=True)
            assert multisets[state[row]] == tuple(expected)
    assert len(set(multisets)) == len(multisets)  # each multiset once
