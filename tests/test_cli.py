import os
import re

import click
import pytest
import typer.main
from typer.testing import CliRunner

from conftest import GSM8K_TEST, one_line_error, run_cli
from selfconsistency.cli import app

runner = CliRunner()
COMMAND = typer.main.get_command(app)


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


COMMANDS = list(_commands(COMMAND))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_help_explains_every_option(path, command):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:  # hidden: a setting the command refuses
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
            assert param.opts[0] in result.output


@pytest.mark.parametrize("args,message", [
    (["--temperatures", "0.7,3"], "outside (0, 2]"),
    (["--temperatures", "0,0.7"], "outside (0, 2]"),
    (["--temperatures", "hot"], "comma-separated"),
    (["--paths", "0"], "paths"),
    (["--model", "no-such-model"], "unknown model"),
])
def test_bad_options_exit_2_before_anything_is_stored(tmp_path, args, message):
    result = runner.invoke(app, ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1",
                                 "--run-dir", str(tmp_path / "run"), *args], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "run" / "samples.sqlite").exists()


def _offered(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    return result.output


def _lists(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){flag}(?![\w-])", help_text) is not None  # --data, not --shots-from-data


# The settings each command ignores: `answer` and `serve` vote over sampled paths and write no report;
# `serve` takes its questions from requests. (flag, a value to give it; None: a switch)
IGNORED = {
    "answer": [("--greedy", None), ("--no-greedy", None), ("--subset-runs", "10")],
    "serve": [("--greedy", None), ("--subset-runs", "10"), ("--data", str(GSM8K_TEST)), ("--offset", "1"),
              ("--limit", "2"), ("--split", "train"), ("--shots-from-data", "2")],
}


@pytest.mark.parametrize("command", sorted(IGNORED))
def test_answer_and_serve_help_lists_only_what_they_use(command):
    offered, run_offers = _offered(command), _offered("run")
    for flag, _ in IGNORED[command]:
        assert not _lists(offered, flag), f"{command} --help offers {flag}"
        assert _lists(run_offers, flag.replace("--no-", "--")), f"run --help lost {flag}"
    for used in ("--paths", "--temperatures", "--max-tokens", "--stop", "--backend", "--model", "--prompt-format"):
        assert _lists(offered, used), f"{command} --help lacks {used}"
    assert _lists(_offered("answer"), "--data") and _lists(_offered("answer"), "--limit")


@pytest.mark.parametrize("command,flag,value", [(c, f, v) for c, given in sorted(IGNORED.items()) for f, v in given],
                         ids=lambda v: "file" if v == str(GSM8K_TEST) else None)  # ids alike in every process
def test_a_setting_the_command_ignores_is_refused_in_one_line(tmp_path, command, flag, value):
    run_dir = tmp_path / "run"
    where = ["--data", str(GSM8K_TEST)] if command == "answer" else ["--port", "1"]  # runnable otherwise
    proc = run_cli(command, "gsm8k", *where, "--run-dir", str(run_dir), flag, *([value] if value else []))
    one_line_error(proc, flag, f"does not apply to '{command}'")
    assert not run_dir.exists()  # refused before anything ran or was stored


@pytest.mark.parametrize("command", ["answer", "serve"])
def test_answer_and_serve_sample_at_one_temperature(tmp_path, command):
    extra = ["--data", str(GSM8K_TEST)] if command == "answer" else ["--port", "1"]
    proc = run_cli(command, "gsm8k", *extra, "--temperatures", "0.5,0.7", "--run-dir", str(tmp_path / "run"))
    one_line_error(proc, "one temperature")
    assert not (tmp_path / "run").exists()


def test_answer_output_never_overwrites_its_inputs_and_is_checked_before_sampling(tmp_path, stub_server):
    """-o may not be the questions file or the run's paid sample store, and must be writable: each is
    refused in one line before any request (a directory -o used to fail only after sampling)."""
    import shutil

    from conftest import OpenAIStub, stored_rows

    data = tmp_path / "questions.jsonl"
    shutil.copy(GSM8K_TEST, data)
    run_dir = tmp_path / "run"
    args = ["answer", "gsm8k", "--data", str(data), "--limit", "1", "--paths", "2", "--backend", "openai",
            "--base-url", stub_server, "--model", "stub", "--run-dir", str(run_dir), "--quiet"]
    proc = run_cli(*args, "-o", str(tmp_path / "answers.jsonl"))
    assert proc.returncode == 0, proc.stderr
    calls, rows, questions = len(OpenAIStub.calls), stored_rows(run_dir), data.read_bytes()
    store = (run_dir / "samples.sqlite").read_bytes()
    (tmp_path / "a-directory").mkdir()
    os.link(data, tmp_path / "hard-link.jsonl")  # another name for the questions file
    audit = (run_dir / "audit.jsonl").read_bytes()
    for output, reason in [(data, "the run's data file"), (run_dir / "samples.sqlite", "sample store"),
                           (run_dir / "." / "samples.sqlite-wal", "sample store"),
                           (tmp_path / "hard-link.jsonl", "the run's data file"),
                           (run_dir / "audit.jsonl", "audit log"),
                           (tmp_path / "a-directory", "is a directory"),
                           (tmp_path / "missing" / "answers.jsonl", "does not exist")]:
        proc = run_cli(*args, "--limit", "2", "-o", str(output))  # a new question: sampling would call
        one_line_error(proc, reason)
    assert len(OpenAIStub.calls) == calls and stored_rows(run_dir) == rows
    assert data.read_bytes() == questions and (run_dir / "samples.sqlite").read_bytes() == store
    assert (run_dir / "audit.jsonl").read_bytes() == audit


def test_a_gold_that_does_not_match_shows_the_pattern_as_written(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "q", "answer": "42"}\n')
    proc = run_cli("answer", "gsm8k", "--data", str(data), "--run-dir", str(tmp_path / "run"))
    one_line_error(proc, r"does not match gold_pattern '####\s*(.+?)\s*$'")


def test_report_of_missing_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no sample store" in result.output
