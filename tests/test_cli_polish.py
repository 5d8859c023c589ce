"""The CLI as a newcomer meets it: export --questions, run --show-prompt, and the small things (plurals,
tables at 80 columns, help text, refusals with one line, Ctrl-C)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from rich.markdown import Markdown

from conftest import GSM8K_TEST, SMALL_MODEL, default_sigint, run_cli, stored_rows
from selfconsistency.experiment import run_experiment
from selfconsistency.models import PACKAGED_MODELS
from selfconsistency.report import markdown_table, write_report
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore, StoredQuestion

TESTS = Path(__file__).resolve().parent
EXEMPLARS = json.loads((TESTS.parent / "src/selfconsistency/data/gsm8k_cot_8shot.json").read_text())["exemplars"]
FIRST_QUESTION = json.loads(GSM8K_TEST.read_text().splitlines()[0])["question"]


def scripted_run(run_dir: Path, **overrides) -> Path:
    base = dict(data=str(GSM8K_TEST), limit=4, backend="scripted", model="scripted-model", paths=5,
                temperatures=(0.7,), subset_runs=5)
    run_experiment(RunSettings(**{**base, **overrides}), run_dir)
    write_report(run_dir)
    return run_dir


def at_columns(columns: int, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"COLUMNS": str(columns)})


def unfinished_store(run_dir: Path, **overrides) -> None:
    """A run's store with its settings and 2 selected questions, and no path yet."""
    from selfconsistency.runlock import prepare_run_dir

    config = RunSettings(**{"data": str(GSM8K_TEST), "limit": 2, **overrides})
    task = config.get_task()
    data = config.load(task)
    prepare_run_dir(run_dir)  # a run directory (its marker), as the run that made the store had made it
    with SampleStore(run_dir) as store:
        store.bind_config(config.identity(task), config.model_dump(mode="json"))
        store.add_questions(StoredQuestion(q.id, q.position, q.text, q.gold) for q in data.questions)
        store.set_selection([q.id for q in data.questions])


# -- export --questions -------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_questions_one_line_each_with_text_gold_vote_and_paths(tmp_path, scripted_backend):
    run_dir = scripted_run(tmp_path / "run")
    proc = run_cli("export", str(run_dir), "--questions")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    records = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:4]]
    assert [line["question"] for line in lines] == [r["question"] for r in records]
    assert [line["gold"] for line in lines] == [r["answer"].rsplit("#### ", 1)[1] for r in records]
    rows = stored_rows(run_dir)
    for line in lines:
        sampled = [answer for qid, t, _, _, answer, _ in rows if qid == line["id"] and t == 0.7]
        counts = Counter(sampled)
        vote = line["votes"][0]
        assert vote["counts"] == dict(counts) and vote["answer"] == counts.most_common(1)[0][0]
        assert vote["agreement"] == counts.most_common(1)[0][1] / 5
        assert line["greedy"]["answer"] == next(a for qid, t, _, _, a, _ in rows if qid == line["id"] and t == 0)
        assert [(p["temperature"], p["index"], p["text"], p["answer"]) for p in line["paths"]] == \
            [(t, i, text, a) for qid, t, i, text, a, _ in rows if qid == line["id"]]
        assert all(p["logprob"] == -2.0 for p in line["paths"])


# -- run --show-prompt ----------------------------------------------------------------------------------

def test_show_prompt_prints_the_completion_prompt_and_makes_no_store(tmp_path):
    run_dir = tmp_path / "never"
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    shots = "".join(f"Q: {e['question']}\nA: {e['rationale']}\n\n" for e in EXEMPLARS)
    assert proc.stdout == f"{shots}Q: {FIRST_QUESTION}\nA:\n"
    assert not run_dir.exists()


def test_show_prompt_into_a_run_directory_of_other_settings_is_refused_as_the_run_is(tmp_path):
    """--show-prompt shows what `run` would send into that directory: into an imported run (or any run of
    other settings) the run sends nothing, and --show-prompt and --dry-run refuse in the run's own line."""
    imported = tmp_path / "imported"
    (samples,) = (Path(__file__).resolve().parent / "data" / "import").glob("lm-eval/*/samples_*.jsonl")
    assert run_cli("import", "lm-eval", str(samples), "--run-dir", str(imported)).returncode == 0
    before = (imported / "samples.sqlite").read_bytes()
    base = ("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--run-dir", str(imported))
    lines = []
    for extra in ((), ("--dry-run",), ("--show-prompt",)):
        proc = run_cli(*base, *extra)
        assert proc.returncode == 2 and proc.stdout == "", (extra, proc.stdout)
        lines.append(proc.stderr.strip())
    assert len(set(lines)) == 1 and lines[0].startswith("error: ") and "\n" not in lines[0], lines
    assert (imported / "samples.sqlite").read_bytes() == before


@pytest.mark.parametrize("what", ["a file", "a directory of other files", "a store of a newer version",
                                  "a store that is not one"])
def test_show_prompt_and_dry_run_refuse_a_run_directory_the_run_refuses(tmp_path, what):
    run_dir = tmp_path / "run"
    if what == "a file":
        run_dir.write_text("hi\n")
    elif what == "a directory of other files":
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine\n")
    else:
        ok = run_cli("import", "lm-eval", str(next((Path(__file__).resolve().parent / "data" / "import").glob(
            "lm-eval/*/samples_*.jsonl"))), "--run-dir", str(run_dir))
        assert ok.returncode == 0, ok.stderr
        if what == "a store of a newer version":
            db = sqlite3.connect(run_dir / "samples.sqlite")
            db.execute("PRAGMA user_version = 999")
            db.commit()
            db.close()
        else:
            (run_dir / "samples.sqlite").write_text("not a database\n")
    base = ("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--run-dir", str(run_dir), "--quiet")
    lines = []
    for extra in ((), ("--dry-run",), ("--show-prompt",)):
        proc = run_cli(*base, *extra)
        assert proc.returncode == 2 and proc.stdout == "", (extra, proc.stdout, proc.stderr)
        lines.append(proc.stderr.strip())
    assert len(set(lines)) == 1 and lines[0].startswith("error: ") and "\n" not in lines[0], lines
    assert str(run_dir) in lines[0]  # refused for the directory, not for anything else


def test_show_prompt_of_a_remote_chat_api_is_its_request_body(tmp_path):
    # nothing listens on port 9: the body is printed without a request
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--backend", "openai",
               "--base-url", "http://127.0.0.1:9/v1", "--prompt-format", "chat", "--run-dir", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 8 + ["user"]
    assert body["messages"][-1]["content"] == FIRST_QUESTION
    assert body["messages"][1]["content"] == EXEMPLARS[0]["rationale"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 256
    assert not (tmp_path / "x").exists()


def test_show_prompt_of_bedrock_batch_behind_an_application_profile_is_the_base_models_body(tmp_path):
    # an application inference profile names no model family: --base-model says which body it takes
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--backend", "bedrock-batch",
               "--model", profile, "--base-model", "meta.llama3-1-8b-instruct-v1:0", "--run-dir", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    # Llama 3's body: its own chat template in `prompt`, and max_gen_len
    assert body["prompt"].endswith(f"{FIRST_QUESTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert body["max_gen_len"] == 256
    assert not (tmp_path / "x").exists()


def test_show_prompt_of_bedrock_on_demand_sends_chat_families_through_converse(tmp_path):
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--backend", "bedrock",
               "--model", "anthropic.claude-3-haiku-20240307-v1:0", "--prompt-format", "chat")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["messages"][-1] == {"role": "user", "content": [{"text": FIRST_QUESTION}]}
    assert body["inferenceConfig"]["maxTokens"] == 256


@pytest.mark.model
@pytest.mark.skipif(not PACKAGED_MODELS[SMALL_MODEL].installed(), reason=f"{SMALL_MODEL} is not installed")
def test_show_prompt_applies_the_local_models_chat_template(loaded_model, tmp_path):
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--prompt-format", "chat",
               "--model", SMALL_MODEL, "--run-dir", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    # Qwen's template: each turn between <|im_start|>role and <|im_end|>, ending on the assistant's turn
    assert proc.stdout.endswith(f"<|im_start|>user\n{FIRST_QUESTION}<|im_end|>\n<|im_start|>assistant\n\n")
    assert proc.stdout.count("<|im_start|>assistant\n") == 9
    assert not (tmp_path / "x").exists()


def test_zero_shot_completion_prompt_asks_for_the_answer_statement():
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--zero-shot")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Q: {FIRST_QUESTION}\nEnd with \"The answer is N.\"\nA: Let's think step by step.\n"


# -- small things -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_report_without_paths_shows_a_dash_not_zero_percent(tmp_path, scripted_backend):
    unfinished_store(tmp_path, backend="scripted", model="scripted-model")
    proc = at_columns(80, "report", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    greedy = next(line for line in proc.stdout.splitlines() if "greedy (T=0)" in line)
    assert "–" in greedy and "%" not in greedy
    assert "0 questions" in proc.stdout and "2 selected questions lack some paths" in proc.stdout


@pytest.mark.slow
def test_one_question_is_singular(tmp_path, scripted_backend):
    run_dir = scripted_run(tmp_path, limit=1)
    proc = at_columns(80, "report", str(run_dir))
    assert "1 question\n" in proc.stdout and "1 questions" not in proc.stdout
    proc = at_columns(80, "simulate", str(run_dir), "--stop", "beta:0.95", "--runs", "5")
    assert proc.returncode == 0, proc.stderr
    assert "1 question," in proc.stdout and "1 questions" not in proc.stdout


@pytest.mark.slow
def test_results_tables_fit_80_columns(tmp_path, scripted_backend):
    run_dir = scripted_run(tmp_path, stop="beta:0.95", paths=16, round_size=4)
    proc = at_columns(80, "report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "(adaptive)" in proc.stdout and "completion" in proc.stdout
    tables = [line for line in proc.stdout.splitlines() if not line.startswith("wrote ")]  # a path may not fit
    assert "…" not in proc.stdout and max(len(line) for line in tables) <= 80
    # the widest cells a seed-sized batch run gives
    results = write_report(run_dir)
    for setting in [results["greedy"], *results["sampled"]]:
        setting.update(paths=224190, prompt_tokens=40_354_200, completion_tokens=24_660_900, cost_usd=123.4567)
    results["batch_jobs"] = [{"job": "0123456789ab", "status": "PartiallyCompleted", "records": 50000,
                              "paths": 224190, "input_tokens": 40354200, "output_tokens": 24660900,
                              "cost_usd": 123.456789, "runtime": {"seconds": 86400.123}}]
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(Markdown(markdown_table(results)))
    text = console.export_text()
    assert "PartiallyCompleted" in text and "40,354,200" in text and "86400.123" in text
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80


def test_tasks_show_prints_every_exemplar_it_counts():
    proc = run_cli("tasks", "show", "gsm8k")
    assert proc.returncode == 0, proc.stderr
    assert f"# {len(EXEMPLARS)} configured exemplars:" in proc.stdout and len(EXEMPLARS) == 8
    shown = proc.stdout.split(f"# {len(EXEMPLARS)} configured exemplars:", 1)[1]
    completion, chat = shown.split("# --prompt-format chat:")
    assert completion.count("\nQ: ") == 8 + 1  # the exemplars, then where the question goes
    assert completion.rstrip().endswith("Q: {question}\nA:")
    assert all(f"Q: {e['question']}\nA: {e['rationale']}" in completion for e in EXEMPLARS)
    assert all(f"[user]\n{e['question']}\n\n[assistant]\n{e['rationale']}" in chat for e in EXEMPLARS)


def test_missing_task_file_is_named_not_found(tmp_path):
    proc = run_cli("tasks", "show", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: task config file {tmp_path / 'missing.yaml'} not found"


def test_help_paragraphs_are_never_broken_mid_sentence():
    """Typer keeps a help paragraph's single line breaks: every paragraph must be one line."""
    import typer.main

    from selfconsistency.cli import app

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))

    for path, command in commands(typer.main.get_command(app)):
        for paragraph in (command.help or "").strip().split("\n\n"):
            assert "\n" not in paragraph.strip(), (path, paragraph)
    proc = at_columns(200, "jobs", "--help")
    assert any("collect" in line and line.rstrip(" │").endswith("and write the report.")
               for line in proc.stdout.splitlines())


def test_jobs_collect_refuses_a_local_run(tmp_path):
    unfinished_store(tmp_path, backend="local", model=SMALL_MODEL, paths=1)
    before = (tmp_path / "samples.sqlite").read_bytes()
    proc = run_cli("jobs", "collect", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "local run, which has no batch jobs" in proc.stderr
    assert stored_rows(tmp_path) == [] and (tmp_path / "samples.sqlite").read_bytes() == before


SLOW_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import ScriptedBackend
from selfconsistency.backends import register_backend

class Slow(ScriptedBackend):
    def generate(self, requests):
        for generation in super().generate(requests):
            time.sleep(0.3)
            yield generation

register_backend("slow", lambda config: Slow(config.model))
from selfconsistency.cli import app
app(sys.argv[1:], prog_name="selfconsistency")
"""


def _stored_any(run_dir) -> bool:
    try:
        return (run_dir / "samples.sqlite").exists() and bool(stored_rows(run_dir))
    except sqlite3.OperationalError:  # the file is there, its tables not yet
        return False


@pytest.mark.slow
def test_ctrl_c_during_run_says_how_to_resume(tmp_path):
    # 60 paths of 0.3 s: the interrupt comes after the first stored ones, long before the end, even on a
    # machine so loaded that this test polls late
    args = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "10", "--paths", "5", "--backend", "slow",
            "--model", "scripted-model", "--run-dir", str(tmp_path)]
    # Ctrl-C as in a shell, whatever this test process inherited (default_sigint)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN.format(tests=str(TESTS)), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 60
    while time.time() < deadline and not _stored_any(tmp_path):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: run the same command to resume"
    assert "Traceback" not in stderr and "Aborted" not in stderr
    kept = stored_rows(tmp_path)
    assert 0 < len(kept) < 60
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_the_progress_bars_eta_is_the_pace_so_far():
    """Paths finish in batches: the ETA extrapolates all paths done over all the time spent, from the first."""
    from rich.progress import Progress

    from selfconsistency.cli import PaceRemaining

    column, progress = PaceRemaining(), Progress()
    task_id = progress.add_task("sampling", total=60)
    task = progress.tasks[0]
    assert column.render(task).plain == "ETA after the first paths"
    task.start_time = task.get_time() - 30.0  # the first batch of 8 took 30 s
    progress.update(task_id, completed=8)
    assert column.render(task).plain == f"ETA 0:{int(30 / 8 * 52) // 60:02d}:{int(30 / 8 * 52) % 60:02d}"
