"""run_cli, the CLI in this process, shows what the installed command shows: the same exit code, stdout
and stderr apart, an escaping exception as a traceback. The slow tests compare it with the command run as
a process, and run the installed entry point itself."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GSM8K_TEST, cli, run_cli


def test_errors_go_to_stderr_alone_and_results_to_stdout_alone(tmp_path):
    missing = run_cli("tasks", "show", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1
    listed = run_cli("tasks", "list")
    assert listed.returncode == 0 and listed.stderr == "" and "gsm8k" in listed.stdout


def test_lines_are_as_wide_as_columns_200(tmp_path):
    listed = run_cli("models", "list")
    assert listed.returncode == 0
    assert max(len(line) for line in listed.stdout.splitlines()) > 80  # not wrapped at rich's default 80
    path = tmp_path / ("d" * 150) / "missing.yaml"
    line = run_cli("tasks", "show", str(path)).stderr
    assert str(path) in line and len(line.strip().splitlines()) == 1


def test_an_exception_the_command_lets_out_is_a_traceback_and_exit_code_1(tmp_path):
    from selfconsistency.backends import register_backend

    class Crashing:
        name, model = "crashing", "m"

        def generate(self, requests):
            raise RuntimeError("not a user error")
            yield

        def close(self):
            pass

    register_backend("crashing", lambda config: Crashing())
    proc = run_cli("run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--backend", "crashing", "--model", "m",
                   "--run-dir", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "RuntimeError: not a user error" in proc.stderr


def test_the_environment_given_is_seen_and_then_gone(monkeypatch):
    import os

    monkeypatch.delenv("SELFCONSISTENCY_API_KEY", raising=False)
    refused = run_cli("serve", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                      env={"SELFCONSISTENCY_API_KEY": ""})
    assert refused.returncode == 2 and "API key is empty" in refused.stderr
    assert "SELFCONSISTENCY_API_KEY" not in os.environ


COMMANDS = [
    ("tasks", "list"),
    ("models", "list"),
    ("tasks", "show", "gsm8k"),
    ("tasks", "show", "{tmp}/missing.yaml"),
    ("run", "gsm8k", "--data", str(GSM8K_TEST), "--paths", "0", "--run-dir", "{tmp}/run"),
    ("run", "gsm8k", "--data", str(GSM8K_TEST), "--show-prompt", "--run-dir", "{tmp}/run"),
    ("report", "{tmp}"),
    ("run", "--help"),
]


@pytest.mark.slow  # the command as a process, to compare
@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:3]) for a in COMMANDS])
def test_in_this_process_as_in_its_own(tmp_path, args):
    args = [a.format(tmp=tmp_path) for a in args]
    inside, outside = run_cli(*args), cli(*args)
    assert (inside.returncode, inside.stdout, inside.stderr) == (outside.returncode, outside.stdout, outside.stderr)


@pytest.mark.slow  # the installed console script: packaging and entry point
def test_the_installed_command_runs():
    command = Path(sys.executable).with_name("selfconsistency")
    assert command.exists(), "pip install -e . installs the `selfconsistency` script beside python"
    helped = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "Self-consistency" in helped.stdout
    listed = subprocess.run([str(command), "tasks", "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "gsm8k" in listed.stdout
