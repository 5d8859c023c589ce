"""Live adaptive stopping through the runner, with the scripted test backend."""

import json

import pytest

from conftest import GSM8K_TEST
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings
from selfconsistency.stopping import parse_rule
from selfconsistency.store import SampleStore


def config(**overrides):
    base = dict(data=str(GSM8K_TEST), limit=6, backend="scripted", model="scripted-model", paths=16,
                temperatures=(0.7,), stop="beta:0.95", round_size=4, greedy=True)
    return RunSettings(**{**base, **overrides})


@pytest.mark.parametrize("stop", ["beta:0.95", "dirichlet:0.9", "entropy:0.3"])
def test_rounds_stop_each_question_when_its_rule_fires(tmp_path, scripted_backend, stop):
    run_experiment(config(stop=stop), tmp_path)
    rule = parse_rule(stop, max_paths=16)
    with SampleStore(tmp_path, create=False) as store:
        stops = store.stops(rule.name)
        answers = store.answers_in_order()
    assert len(stops) == 6
    for (qid, temperature), (used, generated, reason) in stops.items():
        sofar = answers[(qid, temperature)]
        assert generated == len(sofar) and generated % 4 == 0 and used <= generated <= 16
        assert rule.should_stop(sofar[:used]) and not any(rule.should_stop(sofar[:k]) for k in range(1, used))
        if int(qid[-1]) % 2 == 0:  # sure questions stop within the first round
            assert (generated, reason) == (4, "rule")
    results = write_report(tmp_path)
    adaptive = results["sampled"][0]["adaptive"]
    assert adaptive["rule"] == stop and adaptive["max_paths"] == 16
    assert adaptive["mean_paths_used"] < 16 and adaptive["stopped_by_rule"] >= 3
    assert results["sampled"][0]["curve"][0]["k"] == 1  # the curve over the paths every question has
    assert "(adaptive)" in (tmp_path / "results.md").read_text()
    json.dumps(results)


def test_several_temperatures_each_stop_on_their_own(tmp_path, scripted_backend):
    temperatures = (0.5, 0.7, 1.0)
    run_experiment(config(temperatures=temperatures, greedy=False), tmp_path)
    rule = parse_rule("beta:0.95", max_paths=16)
    with SampleStore(tmp_path, create=False) as store:
        stops = store.stops(rule.name)
        answers = store.answers_in_order()
    assert sorted({t for _, t in stops}) == list(temperatures) and len(stops) == 6 * 3
    for key, (used, generated, _) in stops.items():  # each (question, temperature) decided on its own answers
        assert generated == len(answers[key]) and rule.should_stop(answers[key][:used])
        assert not any(rule.should_stop(answers[key][:k]) for k in range(1, used))
    # a coin question's answers differ between temperatures (other seeds): its settings are separate runs
    coin = {q for q, _ in stops if int(q[-1]) % 2 == 1}
    assert len({tuple(answers[(q, t)]) for q in coin for t in temperatures}) > len(coin)
    results = write_report(tmp_path)
    assert [s["temperature"] for s in results["sampled"]] == list(temperatures)
    assert all(s["adaptive"]["rule"] == "beta:0.95" for s in results["sampled"])
    for setting in results["sampled"]:  # each setting's report counts its own stops
        t = setting["temperature"]
        used = [u for (_, temp), (u, _, _) in stops.items() if temp == t]
        generated = [g for (_, temp), (_, g, _) in stops.items() if temp == t]
        assert setting["adaptive"]["mean_paths_used"] == pytest.approx(sum(used) / 6)
        assert setting["adaptive"]["mean_paths_generated"] == pytest.approx(sum(generated) / 6)


def test_rerun_generates_nothing_more(tmp_path, scripted_backend):
    run_experiment(config(), tmp_path)
    first = len(scripted_backend[-1].generated)
    run_experiment(config(), tmp_path)
    assert len(scripted_backend) == 1 or scripted_backend[-1].generated == []
    with SampleStore(tmp_path, create=False) as store:
        assert len(store.stored_keys()) == first


def test_bad_rule_rejected():
    with pytest.raises(ValueError, match="stopping rule"):
        config(stop="psychic:1")


def test_audit_log_lines_without_bodies_unless_asked(tmp_path, scripted_backend):
    run_experiment(config(stop=None, paths=2, limit=2), tmp_path / "plain")
    lines = [json.loads(line) for line in (tmp_path / "plain" / "audit.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["run_start"] + ["generation"] * 6 + ["run_end"]
    generation = lines[1]
    assert {"time", "run", "backend", "model", "request_id", "prompt_tokens", "completion_tokens",
            "status"} <= set(generation)
    assert "prompt" not in generation and "completion" not in generation
    run_experiment(config(stop=None, paths=2, limit=2, log_prompts=True), tmp_path / "bodies")
    lines = [json.loads(line) for line in (tmp_path / "bodies" / "audit.jsonl").read_text().splitlines()]
    assert lines[1]["prompt"].startswith("Q: There are 15 trees") and "The answer is" in lines[1]["completion"]


def test_scrub_masks_key_shaped_strings():
    from selfconsistency.audit import scrub

    assert scrub({"a": "key AKIAABCDEFGHIJKLMNOP here", "b": ["sk-abcdefghijklmnopqrstuv"]}) == \
        {"a": "key [redacted] here", "b": ["[redacted]"]}


def test_a_changed_prompt_is_another_run(tmp_path, scripted_backend):
    """Exemplars read from the data (--shots-from-data) change every prompt while the task spec and the
    options stay the same: the store refuses to mix the two."""
    from selfconsistency.store import StoreMismatch

    data = tmp_path / "data.jsonl"
    lines = [{"question": f"Which number is {n}?", "choices": [str(n), str(n + 1)], "answer": "A",
              "explanation": f"It says {n}."} for n in range(8)]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    shots = dict(data=str(data), limit=4, stop=None, paths=2, shots_from_data=2, task="mcq")
    run_dir = tmp_path / "run"
    run_experiment(config(**shots), run_dir)
    lines[0]["explanation"] = "Edited by hand."  # an exemplar's rationale: every prompt changes
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(StoreMismatch, match="prompt"):
        run_experiment(config(**{**shots, "paths": 3}), run_dir)


class _ConfidenceScript:
    """Each path's answer and mean token log-prob by (question position, path index), 10 tokens a path."""

    name = "confidence-script"
    PATHS = {0: [("18", -0.5), ("7", -1.0), ("7", -1.0)],  # gold 18: the confident path is alone
             1: [("3", -0.1), ("5", -1.5), ("5", -1.5)]}  # gold 3: alone too, and far more confident

    def __init__(self, model):
        self.model = model

    def generate(self, requests):
        from selfconsistency.backends.base import Generation

        for request in requests:
            answer, mean = self.PATHS[int(request.question_id.rsplit("-", 1)[1])][request.path_index]
            yield Generation(request, f"Some steps. The answer is {answer}.", 100, 10, 0.01, "stop", mean * 10)

    def close(self):
        pass


def test_weighted_votes_match_a_hand_computation(tmp_path):
    """With all 3 paths every ordering votes on the same set, so vote-of-3 accuracy is exact:
    majority: 7 and 5 win, 0/2. logprob, weight exp(mean): question 0 has e^-0.5 = 0.61 for 18 against
    2 e^-1 = 0.74 for 7 (wrong), question 1 e^-0.1 = 0.90 against 2 e^-1.5 = 0.45 (right): 1/2.
    cisc:0.5, weight exp(mean / 0.5): e^-1 = 0.37 against 2 e^-2 = 0.27, and e^-0.2 against 2 e^-3: 2/2."""
    from selfconsistency.backends import register_backend

    register_backend("confidence-script", lambda backend_config: _ConfidenceScript(backend_config.model))
    run_experiment(config(backend="confidence-script", limit=2, paths=3, stop=None, greedy=False), tmp_path)
    with SampleStore(tmp_path, create=False) as store:
        assert [q.gold for q in store.questions()] == ["18", "3"]
    (setting,) = write_report(tmp_path)["sampled"]
    assert setting["curve"][-1]["k"] == 3 and setting["curve"][-1]["mean"] == 0.0
    votes = setting["weighted_votes"]
    assert set(votes) == {"logprob", "cisc:0.5"}
    assert (votes["logprob"][-1]["k"], votes["logprob"][-1]["mean"], votes["logprob"][-1]["std"]) == (3, 0.5, 0.0)
    assert (votes["cisc:0.5"][-1]["k"], votes["cisc:0.5"][-1]["mean"], votes["cisc:0.5"][-1]["std"]) == (3, 1.0, 0.0)
