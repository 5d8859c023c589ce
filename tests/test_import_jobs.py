"""The `jobs` commands on an imported run (lm-eval samples, an inspect_ai log): it has no batch jobs, said in
one line naming the tool, not a complaint about its stored settings."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfconsistency.cli import app
from selfconsistency.importing import import_run

FIXTURES = Path(__file__).resolve().parent / "data" / "import"
(LM_EVAL,) = FIXTURES.glob("lm-eval/*/samples_*.jsonl")
(INSPECT_JSON,) = FIXTURES.glob("inspect/*.json")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    return {"lm-eval": import_run("lm-eval", LM_EVAL, run_dir=root / "lm-eval").run_dir,
            "inspect_ai": import_run("inspect", INSPECT_JSON, run_dir=root / "inspect").run_dir}


@pytest.mark.parametrize("tool", ["lm-eval", "inspect_ai"])
@pytest.mark.parametrize("command", [["status"], ["stop"], ["forget", "abc"], ["forget", "abc", "--stop"],
                                     ["collect"], ["collect", "--resubmit"]])
def test_jobs_commands_on_an_imported_run_say_it_has_no_batch_jobs(imported, tool, command):
    run_dir = imported[tool]
    before = _contents(run_dir)
    result = CliRunner().invoke(app, ["jobs", command[0], str(run_dir), *command[1:]], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line == f"error: {run_dir} is an imported run ({tool}): it has no batch jobs", line
    assert _contents(run_dir) == before  # nothing written, nothing collected or reported


def _contents(run_dir: Path) -> dict[str, bytes]:
    """The run's files but SQLite's write-ahead log and its index, which any reader may create."""
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.endswith(("-shm", "-wal"))}
