"""The embedded backend end to end with the real 0.5B model (installed by `scripts/install.sh test`)."""

import json
import random
import sqlite3

import pytest

from conftest import cli, kill_when_stored, load_results, run_cli, small_run_args, stored_rows, without_runtime
from selfconsistency.extract import NumberExtractor

pytestmark = pytest.mark.model


def test_end_to_end_outputs(reference_run):
    results = load_results(reference_run)
    assert results["questions"] == 2 and results["model"] == "qwen2.5-coder-0.5b"
    assert results["greedy"]["paths"] == 2
    (sampled,) = results["sampled"]
    assert sampled["temperature"] == 0.7 and sampled["paths"] == 6
    assert [p["k"] for p in sampled["curve"]] == [1, 2, 3]
    # by hand from the stored answers: greedy is right where its answer is the gold; SC@1 (exact) is the
    # mean share of right sampled paths
    db = sqlite3.connect(reference_run / "samples.sqlite")
    gold = dict(db.execute("SELECT id, gold FROM questions").fetchall())
    db.close()
    right = {(qid, t, i): answer == gold[qid] for qid, t, i, _, answer, _ in stored_rows(reference_run)}
    assert results["greedy"]["accuracy"] == sum(ok for (_, t, _), ok in right.items() if t == 0.0) / 2
    shares = [sum(right[(qid, 0.7, i)] for i in range(3)) / 3 for qid in gold]
    assert sampled["curve"][0]["exact"] == pytest.approx(sum(shares) / 2)
    assert all(p["std"] >= 0 for p in sampled["curve"])
    assert sampled["completion_tokens"] > 0 and sampled["prompt_tokens"] > 6 * 500  # 8-shot prompt
    assert (reference_run / "accuracy_vs_paths.png").read_bytes()[:4] == b"\x89PNG"
    assert "SC@3" in (reference_run / "results.md").read_text()

    rows = stored_rows(reference_run)  # each stored once with its extracted answer: test_backend_contract.py
    assert len(rows) == 8  # 2 questions x (1 greedy + 3 sampled)
    assert all("\n" not in text for _, _, _, text, _, _ in rows)  # the completion stops at the end of the rationale


def test_report_rebuilds_from_store_alone(reference_run):
    before = load_results(reference_run)
    (reference_run / "results.json").unlink()
    proc = run_cli("report", str(reference_run))
    assert proc.returncode == 0, proc.stderr
    assert load_results(reference_run) == before


def test_export_jsonl(reference_run, tmp_path):
    out = tmp_path / "paths.jsonl"
    proc = run_cli("export", str(reference_run), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8
    assert {"question_id", "temperature", "path_index", "answer", "gold", "text", "completion_tokens"} <= set(lines[0])
    assert {line["gold"] for line in lines} == {"18", "3"}


def test_same_seed_same_paths_and_rerun_generates_nothing(reference_run, loaded_model, tmp_path):
    # on the exemplar block the last backend left (conftest._sharing): the reference run computed it from an
    # empty cache in this process, the SIGKILL test's runs in processes of their own, and all three agree
    proc = run_cli(*small_run_args(tmp_path / "again", second_only=True))
    assert proc.returncode == 0, proc.stderr
    again = [r[:5] for r in stored_rows(tmp_path / "again")]
    assert len(again) == 4 and again == [r[:5] for r in stored_rows(reference_run) if r[0] == "test-00001"]
    before = stored_rows(reference_run)
    proc = run_cli(*small_run_args(reference_run)[:-1])  # the same command again, not quiet
    assert proc.returncode == 0 and "resuming: 8 paths already stored, 0 to generate" in proc.stderr
    assert stored_rows(reference_run) == before


def test_sigkill_at_random_points_resumes_to_the_same_results(reference_run, loaded_model, tmp_path):
    """Killed with SIGKILL twice at random moments (a random number of stored paths, plus a
    random delay so the kill also lands mid-path and mid-commit), the run still ends with every path
    exactly once and the same results as the uninterrupted run."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    run_dir = tmp_path / "killed"
    kept: set = set()
    for target in sorted(rng.sample(range(0, 6), 2)):  # at least 3 of 8 paths left to kill into
        survivors = kill_when_stored(small_run_args(run_dir), run_dir, at_least=target,
                                     extra_delay=rng.uniform(0.0, 1.5))
        assert kept <= set(survivors), f"seed {seed}: a stored path changed or vanished"
        kept = set(survivors)
    assert len(kept) < 8, f"seed {seed}: the kills should land before the end"

    resumed = run_cli(*small_run_args(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    rows = stored_rows(run_dir)
    assert len(rows) == 8 and len({r[:3] for r in rows}) == 8, f"seed {seed}"  # every path exactly once
    assert kept <= set(rows)  # stored paths were kept, not generated again
    assert [r[:5] for r in rows] == [r[:5] for r in stored_rows(reference_run)], f"seed {seed}"
    assert without_runtime(load_results(run_dir)) == without_runtime(load_results(reference_run))


def test_batched_same_batch_size_same_paths(reference_run, loaded_model, tmp_path):
    """Batched decoding: the same seed and batch size reproduce the same texts; every path is there."""
    first, second = tmp_path / "b1", tmp_path / "b2"
    for run_dir in (first, second):
        proc = run_cli(*small_run_args(run_dir, batch_size=4, second_only=True))  # its 4 paths in one batch
        assert proc.returncode == 0, proc.stderr
    rows = stored_rows(first)
    assert [r[:5] for r in rows] == [r[:5] for r in stored_rows(second)]
    assert [r[:3] for r in rows] == [r[:3] for r in stored_rows(reference_run) if r[0] == "test-00001"]


def test_batched_run_killed_mid_batch_resumes_without_regenerating(loaded_model, tmp_path):
    run_dir = tmp_path / "killed"
    survivors = kill_when_stored(small_run_args(run_dir, batch_size=4), run_dir, at_least=2)
    assert 2 <= len(survivors) < 8, "the kill should land mid-run"
    resumed = run_cli(*small_run_args(run_dir, batch_size=4))
    assert resumed.returncode == 0, resumed.stderr
    rows = stored_rows(run_dir)
    assert len(rows) == 8 and len({r[:3] for r in rows}) == 8
    assert set(survivors) <= set(rows)


def test_a_damaged_model_file_fails_in_one_line(tmp_path):
    from conftest import GSM8K_TEST, SMALL_MODEL
    from selfconsistency.models import resolve_model_path

    truncated = tmp_path / "truncated.gguf"
    with open(resolve_model_path(SMALL_MODEL), "rb") as whole:
        truncated.write_bytes(whole.read(2_000_000))  # a valid GGUF header, the tensors cut off
    proc = cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--paths", "1", "--model",
               str(truncated), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: llama.cpp could not load {truncated}: Failed to load model from file: " \
                                  f"{truncated}"  # one line, no traceback


def test_chat_prompt_format_on_the_local_model(loaded_model, tmp_path):
    """--prompt-format chat: the 8 exemplars as chat turns in the model's own template (more prompt tokens
    than the plain completion prompt of the same question), answers extracted as usual."""
    prompt_tokens = {}
    for prompt_format in ("completion", "chat"):
        run_dir = tmp_path / prompt_format
        proc = run_cli(*small_run_args(run_dir), "--limit", "1", "--paths", "1", "--max-tokens", "24",
                   "--prompt-format", prompt_format)
        assert proc.returncode == 0, proc.stderr
        assert load_results(run_dir)["sampled"][0]["paths"] == 1
        rows = stored_rows(run_dir)
        assert len(rows) == 2 and all(answer == NumberExtractor()(text) for _, _, _, text, answer, _ in rows)
        db = sqlite3.connect(run_dir / "samples.sqlite")
        (prompt_tokens[prompt_format],) = db.execute("SELECT prompt_tokens FROM paths WHERE temperature = 0"
                                                     ).fetchone()
        db.close()
    assert prompt_tokens["chat"] > prompt_tokens["completion"]



def test_stop_at_answer_cuts_each_path_short_of_the_same_text(reference_run, loaded_model, tmp_path):
    """--stop-at-answer, one path at a time: each path is the reference path cut right after its first
    complete answer statement (same seed, same logits up to there), with the same answer; a store made
    with it refuses to resume without it."""
    from selfconsistency.answer_stop import answer_complete_pattern, complete_end

    pattern = answer_complete_pattern("The answer is {answer}.", "number")
    run_dir = tmp_path / "at-answer"
    proc = run_cli(*small_run_args(run_dir, "--stop-at-answer", second_only=True))
    assert proc.returncode == 0, proc.stderr
    db = sqlite3.connect(run_dir / "samples.sqlite")
    reasons = {(q, t, i): r for q, t, i, r in db.execute(
        "SELECT question_id, temperature, path_index, finish_reason FROM paths")}
    db.close()
    reference = {row[:3]: row for row in stored_rows(reference_run) if row[0] == "test-00001"}
    rows = stored_rows(run_dir)
    assert [row[:3] for row in rows] == list(reference)
    for key, text, answer in ((row[:3], row[3], row[4]) for row in rows):
        whole = reference[key][3]
        end = complete_end(whole, pattern)
        assert text == whole[:end] and answer == reference[key][4]
        assert (reasons[key] == "answer") == (end is not None)
    refused = run_cli(*small_run_args(run_dir, second_only=True))  # the same run without the option
    assert refused.returncode == 2 and "stop_at_answer" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
