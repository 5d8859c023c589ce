import click
import pytest
import typer.main
from typer.testing import CliRunner

from conftest import GSM8K_TEST
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
        if isinstance(param, click.Option):
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


def test_report_of_missing_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no sample store" in result.output
