"""Live adaptive stopping through the runner, with the scripted test backend."""

import json

import pytest

from conftest import GSM8K_TEST
from selfconsistency.experiment import RunConfig, run_experiment
from selfconsistency.report import write_report
from selfconsistency.stopping import BetaRule
from selfconsistency.store import SampleStore


def config(**overrides):
    base = dict(data=str(GSM8K_TEST), limit=6, backend="scripted", model="scripted-model", paths=16,
                temperatures=(0.7,), stop="beta:0.95", round_size=4, greedy=True)
    return RunConfig(**{**base, **overrides})


def test_rounds_stop_each_question_when_its_rule_fires(tmp_path, scripted_backend):
    run_experiment(config(), tmp_path)
    rule = BetaRule(threshold=0.95, max_paths=16)
    with SampleStore(tmp_path, create=False) as store:
        stops = store.stops(rule.name)
        answers = store.answers_in_order()
    assert len(stops) == 6
    for (qid, temperature), (used, generated, reason) in stops.items():
        sofar = answers[(qid, temperature)]
        assert generated == len(sofar) and generated % 4 == 0 and used <= generated <= 16
        assert rule.should_stop(sofar[:used]) and not any(rule.should_stop(sofar[:k]) for k in range(1, used))
        if int(qid[-1]) % 2 == 0:  # sure questions stop after the first round
            assert (used, generated, reason) == (4, 4, "rule")
    results = write_report(tmp_path)
    adaptive = results["sampled"][0]["adaptive"]
    assert adaptive["rule"] == "beta:0.95" and adaptive["max_paths"] == 16
    assert adaptive["mean_paths_used"] < 16 and adaptive["stopped_by_rule"] >= 3
    assert results["sampled"][0]["curve"][0]["k"] == 1  # the curve over the paths every question has
    assert "(adaptive)" in (tmp_path / "results.md").read_text()
    json.dumps(results)


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


def test_a_changed_prompt_is_another_run_and_older_stores_still_resume(tmp_path, scripted_backend):
    """Exemplars read from the data (--shots-from-data) change every prompt while the task spec and the
    options stay the same: the store refuses to mix the two; a store from before the prompt was part of
    the identity resumes as it did."""
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

    with SampleStore(run_dir, create=False) as store:  # as an older version recorded it
        identity = store.get_meta("identity")
        del identity["prompt"]
        store._put_meta("identity", identity)
    run_experiment(config(**{**shots, "paths": 3}), run_dir)  # taken as unchanged: resumes
    with SampleStore(run_dir, create=False) as store:
        assert store.get_meta("identity")["prompt"] and len(list(store.paths())) == 4 * 4
