"""The report's computation (results.py, frontier.py) runs without the plotting library."""

import subprocess
import sys

import pytest

COMPUTE_WITHOUT_MATPLOTLIB = """
import sys
from pathlib import Path

from selfconsistency.frontier import stored_frontier
from selfconsistency.results import build_results
from selfconsistency.store import SampleStore, StoredPath, StoredQuestion

run_dir = Path(sys.argv[1])
config = {"task": "gsm8k", "backend": "local", "model": "m", "greedy": True, "temperatures": [0.7],
          "paths": 4, "subset_runs": 5, "seed": 0}
with SampleStore(run_dir) as store:
    store.bind_config({"task": "gsm8k"}, config)
    ids = ["test-00000", "test-00001"]
    store.add_questions(StoredQuestion(qid, i, f"q{i}", "1") for i, qid in enumerate(ids))
    store.set_selection(ids)
    for i, qid in enumerate(ids):
        store.add_path(StoredPath(qid, 0.0, 0, 0, "The answer is 1.", "1", 10, 5, 0.1, "stop", -1.0, "local", "m"))
        for j in range(4):
            answer = "1" if i == 0 else str(j % 2)
            store.add_path(StoredPath(qid, 0.7, j, j, f"The answer is {answer}.", answer, 10, 5, 0.1, "stop",
                                      -1.0, "local", "m"))
    results = build_results(store)
frontier = stored_frontier(run_dir, 0.7, ["beta:0.95", "fixed:2"], runs=5)
assert results["greedy"]["accuracy"] == 1.0 and results["sampled"][0]["curve"][-1]["k"] == 4
assert results["sampled"][0]["weighted_votes"], "weighted votes computed"
assert [r.rule for r in frontier.rules] == ["beta:0.95", "fixed:2"] and frontier.paths == 4
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib")
assert not loaded, loaded
print("ok")
"""


@pytest.mark.slow  # a fresh interpreter, without matplotlib
def test_results_and_frontier_are_computed_without_matplotlib(tmp_path):
    # A fresh interpreter: this test process may have imported matplotlib already.
    proc = subprocess.run([sys.executable, "-c", COMPUTE_WITHOUT_MATPLOTLIB, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "results.json").exists()  # computed, not written


def _reference_summaries(store):
    """The greedy and sampled summaries as build_results computed them before issue 16 (one Python object
    per path, grouped by setting and question; every vote simulated on its own): what the columnar reads
    and the shared path orders must reproduce exactly."""
    from collections import defaultdict

    import numpy as np

    from selfconsistency.analysis import accuracy, accuracy_curve, encode, subset_curve
    from selfconsistency.results import WEIGHTED_VOTES
    from selfconsistency.vote import path_weights

    config = store.settings().stored_settings()
    by_setting = defaultdict(lambda: defaultdict(list))
    for path in store.paths(text=False):
        by_setting[path.temperature][path.question_id].append(path)
    wanted = {0.0: 1, **{t: config["paths"] for t in config["temperatures"]}}
    complete = [q for q in store.get_meta("selection") if all(len(by_setting[t][q]) >= n for t, n in wanted.items())]
    gold_of = {q.id: q.gold for q in store.questions()}
    golds = [gold_of[q] for q in complete if gold_of[q] is not None]
    settings = store.settings()
    price, on_demand_price = settings.price(), settings.price(on_demand=True)
    keys = store.on_demand_keys()
    out = {}
    for temperature, n in wanted.items():
        paths = [sorted(by_setting[temperature][q], key=lambda p: p.path_index)[:n] for q in complete]
        flat = [p for row in paths for p in row]
        extra = [p for p in flat if (p.question_id, p.temperature, p.path_index) in keys]
        extra_in, extra_out = sum(p.prompt_tokens for p in extra), sum(p.completion_tokens for p in extra)
        prompt, completion = sum(p.prompt_tokens for p in flat), sum(p.completion_tokens for p in flat)
        seconds = sum(p.latency_s for p in flat)
        cost = price.cost(prompt - extra_in, completion - extra_out) + on_demand_price.cost(extra_in, extra_out)
        summary = {"temperature": temperature, "paths_per_question": n, "paths": len(flat),
                   "abstention_rate": sum(p.answer is None for p in flat) / len(flat),
                   "truncated_paths": sum(p.finish_reason == "length" for p in flat),
                   "truncated_in_thinking": sum(p.finish_reason == "length" and p.ended_thinking for p in flat),
                   "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": round(cost, 6),
                   "thinking_tokens": sum(p.thinking_tokens or 0 for p in flat),
                   "thinking_cost_usd": round(price.cost(0, sum(p.thinking_tokens or 0 for p in flat)), 6),
                   "runtime": {"seconds": round(seconds, 3),
                               "completion_tokens_per_second": round(completion / seconds, 2)}}
        scored = [row for row, q in zip(paths, complete, strict=True) if gold_of[q] is not None]
        answers = [[p.answer for p in row] for row in scored]
        if temperature == 0.0:
            summary["accuracy"] = accuracy([row[0] for row in answers], golds)
        else:
            summary["curve"] = [point.__dict__ for point in accuracy_curve(answers, golds, runs=30, seed=3)]
            encoded, gold_ids = encode(answers, golds)
            lengths = np.array([[p.completion_tokens for p in row] for row in scored])
            logprobs = np.array([[p.logprob_sum for p in row] for row in scored], dtype=float)
            summary["weighted_votes"] = {}
            for method in WEIGHTED_VOTES:
                mean, std = subset_curve(encoded, gold_ids, 30, np.random.default_rng(3),
                                         path_weights(method, logprobs, lengths))
                summary["weighted_votes"][method] = [{"k": k + 1, "mean": float(mean[k]), "std": float(std[k])}
                                                     for k in range(len(mean))]
        out[temperature] = summary
    return out


def test_results_equal_the_path_by_path_computation(tmp_path):
    """build_results reads each setting's paths as columns and simulates every vote over one set of path
    orders; on a run with incomplete and unlabelled questions, extra stored paths, abstentions, truncated
    and on-demand paths, its summaries equal the path-by-path computation's exactly."""
    import random

    from selfconsistency.results import build_results
    from selfconsistency.store import SampleStore, StoredPath, StoredQuestion

    model = "anthropic.claude-3-haiku-20240307-v1:0"
    config = {"task": "gsm8k", "backend": "bedrock-batch", "model": model, "greedy": True,
              "temperatures": [0.5, 0.7], "paths": 6, "subset_runs": 30, "seed": 3, "stop": None, "min_paths": 1,
              "prices_file": None}
    draw = random.Random(8)
    ids = [f"q{i:03d}" for i in range(40)]
    with SampleStore(tmp_path) as store:
        store.bind_config({"task": "gsm8k", "model": model}, config)
        store.add_questions(StoredQuestion(qid, i, f"question {i}", None if i % 9 == 4 else "7")
                            for i, qid in enumerate(ids))
        store.set_selection(list(reversed(ids)))  # selection order is not id order
        for i, qid in enumerate(ids):
            for temperature, count in ((0.0, 1), (0.5, 7 if i % 5 == 0 else 6), (0.7, 5 if i % 13 == 2 else 6)):
                for j in range(count):
                    answer = draw.choice(["7", "7", "3", "4", None])
                    thinking = draw.choice([None, None, draw.randint(0, 20)])  # tokens inside a thinking block
                    store.add_path(StoredPath(qid, temperature, j, j, f"The answer is {answer}.", answer,
                                              draw.randint(50, 90), draw.randint(20, 300), draw.uniform(0.1, 3.0),
                                              draw.choice(["stop", "stop", "length"]),
                                              -draw.randint(1, 40) / 4, "bedrock-batch", model,
                                              thinking_tokens=thinking,
                                              ended_thinking=thinking is not None and draw.random() < 0.5))
        store.add_spend("bedrock-batch", "g1", "r1", [(ids[1], 0.5, 2), (ids[3], 0.7, 0), (ids[2], 0.7, 1)], 300, 40)
        results = build_results(store)
        reference = _reference_summaries(store)
    assert results["questions"] == 37 and results["labelled_questions"] == 33  # 3 incomplete, 4 unlabelled
    # the intervals, pass@k and tie counts came later than this reference: tests/test_stats.py checks them
    assert _without_statistics(results["greedy"]) == reference[0.0] and results["greedy"]["cost_usd"] is not None
    assert sum(s["truncated_in_thinking"] for s in results["sampled"]) > 0 < results["sampled"][0]["thinking_tokens"]
    assert [s["temperature"] for s in results["sampled"]] == [0.5, 0.7]
    for summary in results["sampled"]:
        assert _without_statistics(summary) == reference[summary["temperature"]]


def _without_statistics(summary):
    statistics = {"interval", "ties_with_gold", "low", "high", "pass_at_k", "pass_low", "pass_high"}
    out = {key: value for key, value in summary.items() if key not in statistics}
    if "curve" in out:
        out["curve"] = [{key: value for key, value in point.items() if key not in statistics}
                        for point in out["curve"]]
    return out


def test_the_collector_is_paused_only_while_a_report_is_built(tmp_path):
    import gc

    from selfconsistency.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_documented_schema_is_the_models():
    """docs/results.schema.json is what results_schema.Results says (regenerate it with the module's command)."""
    import json
    from pathlib import Path

    from selfconsistency.results_schema import json_schema

    documented = json.loads((Path(__file__).parents[1] / "docs" / "results.schema.json").read_text())
    assert documented == json_schema()


def test_a_runs_results_fit_the_schema_and_an_undeclared_key_does_not(tmp_path, scripted_backend):
    import pytest
    from pydantic import ValidationError

    from conftest import GSM8K_TEST
    from selfconsistency.experiment import run_experiment
    from selfconsistency.results import build_results
    from selfconsistency.results_schema import Results
    from selfconsistency.settings import RunSettings
    from selfconsistency.store import SampleStore

    run_dir = run_experiment(RunSettings(data=str(GSM8K_TEST), limit=4, backend="scripted", model="m", paths=4,
                                         stop="beta:0.9"), tmp_path / "run")
    with SampleStore.open_readonly(run_dir) as store:
        results = build_results(store)
    Results.model_validate(results)
    with pytest.raises(ValidationError, match="surprise"):
        Results.model_validate({**results, "surprise": 1})
    with pytest.raises(ValidationError, match="adaptive"):
        Results.model_validate({**results, "sampled": [{**results["sampled"][0], "adaptive": {"rule": "x"}}]})
