"""docs/architecture.md's recipes work as written: its Python snippets run (a backend and a stopping rule
registered), a run goes through the new backend with its own option, and the YAML task loads and renders."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GSM8K_TEST

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow  # a fresh interpreter: the plugin registers before the CLI is built
def test_the_backend_and_rule_snippets_run_and_plug_in(tmp_path):
    script = "\n".join(_blocks("python")) + f'''
from selfconsistency import RunSettings, run_experiment
from selfconsistency.store import SampleStore
settings = RunSettings(backend="parrot", model="parrot-1", answer=7, data={str(GSM8K_TEST)!r}, limit=2, paths=6,
                       stop="streak:3")
run_dir = run_experiment(settings, {str(tmp_path / "run")!r})
with SampleStore.open_readonly(run_dir) as store:
    answers = {{p.answer for p in store.paths()}}
    stops = store.stops("streak:3")
    identity = store.get_meta("identity")
print(sorted(answers), sorted(v[:2] for v in stops.values()), identity["answer"])
from selfconsistency.cli import app
app(["run", "--help"], prog_name="selfconsistency", standalone_mode=False)
'''
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    # every path answers 7; the streak rule stops each question after 3 of its 6 paths; the option is identity
    assert first == "['7'] [(3, 4), (3, 4)] 7", first
    assert "--answer" in proc.stdout and "Parrot backend" in proc.stdout


def test_the_task_snippet_loads_and_renders(tmp_path):
    from selfconsistency.tasks import get_task

    (block,) = _blocks("yaml")
    spec = tmp_path / "parity.yaml"
    spec.write_text(block)
    assert yaml.safe_load(block)["name"] == "parity"
    data = tmp_path / "numbers.jsonl"
    data.write_text('{"question": "7", "answer": "no"}\n{"question": "10", "answer": "yes"}\n')
    task = get_task(str(spec))
    loaded = task.load(data, None, 0, None, None)
    assert [q.gold for q in loaded.questions] == ["no", "yes"]
    assert len(loaded.exemplars) == 1 and "Is 14 an even number?" in loaded.exemplars[0].question
