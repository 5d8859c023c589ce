"""Hostile input, round 3 (issue 24): each class of defect fixed by one mechanism every command goes
through, and tested through the commands."""

import os
import sqlite3

import pytest
from typer.testing import CliRunner

from conftest import GSM8K_TEST
from selfconsistency.cli import app
from selfconsistency.experiment import run_experiment
from selfconsistency.settings import RunSettings
from selfconsistency.store import STORE_FILENAME

READERS = [["report"], ["export"], ["export", "--questions"], ["simulate", "--stop", "beta:0.9"],
           ["jobs", "status"]]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def run_dir(tmp_path, scripted_backend):
    return run_experiment(RunSettings(data=str(GSM8K_TEST), limit=2, backend="scripted", model="m", paths=2),
                          tmp_path / "run")


def other_programs_database(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE precious (x)")
    db.execute("INSERT INTO precious VALUES (42)")
    db.commit()
    db.close()
    return path.read_bytes()


# -- one way to open a store (issue 24, part 2) -----------------------------------------------------------


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_no_reader_follows_a_symlinked_store_or_writes_what_it_points_at(tmp_path, run_dir, command):
    victim = tmp_path / "someone-elses.sqlite"
    before = other_programs_database(victim)
    (run_dir / STORE_FILENAME).unlink()
    (run_dir / STORE_FILENAME).symlink_to(victim)
    assert_one_line_error(invoke(*command, run_dir), f"{run_dir / STORE_FILENAME} is a symlink")
    assert victim.read_bytes() == before
    assert not any(p.name.startswith("someone-elses.sqlite-") for p in tmp_path.iterdir())


@pytest.mark.parametrize("side", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("command", [["report"], ["export"], ["run"]], ids=" ".join)
def test_a_symlinked_side_file_is_one_line(tmp_path, run_dir, side, command):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    side_file = run_dir / f"{STORE_FILENAME}{side}"
    if side_file.exists():
        side_file.unlink()
    side_file.symlink_to(victim)
    if command == ["run"]:
        command = ["run", "gsm8k", "--data", GSM8K_TEST, "--limit", 2, "--backend", "scripted", "--model", "m",
                   "--paths", 2, "--run-dir"]
    assert_one_line_error(invoke(*command, run_dir), f"{side_file} is a symlink")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("command", READERS[:3], ids=" ".join)
def test_a_fifo_in_the_stores_place_is_one_line(tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / STORE_FILENAME)
    assert_one_line_error(invoke(*command, run), "is not a regular file")


@pytest.mark.parametrize("command", READERS[:3], ids=" ".join)
def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()
    before = other_programs_database(run / STORE_FILENAME)
    assert_one_line_error(invoke(*command, run), "some other program, not a sample store")
    assert (run / STORE_FILENAME).read_bytes() == before
