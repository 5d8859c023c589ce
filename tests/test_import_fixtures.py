"""The import fixtures come from the real tools: scripts/make_import_fixtures.py runs lm-eval and inspect_ai
(from PyPI, each in its own environment) against llama-cpp-python's server with the 0.5B model, and the
import reads what they write. The committed fixtures (tests/data/import) are that script's output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfconsistency.cli import app
from selfconsistency.store import SampleStore

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_import_fixtures.py"
COMMITTED = REPO / "tests" / "data" / "import"
REPEATS = 4  # lm-eval's repeats a question (its maj@k filter's k): fewer than the committed fixture's 8, faster
MODEL_TURN = Path("/work/tools/model_turn.sh")  # serialises model work on the project's machine, where it exists


def _script_pins() -> dict[str, str]:
    text = SCRIPT.read_text()
    return {name: text.split(f'{constant} = "', 1)[1].split('"', 1)[0].split("==")[1]
            for name, constant in (("lm_eval", "LM_EVAL"), ("inspect_ai", "INSPECT"))}


def test_the_committed_fixtures_are_the_scripts_output():
    manifest = json.loads((COMMITTED / "fixtures.json").read_text())
    assert {k: manifest["versions"][k] for k in ("lm_eval", "inspect_ai")} == _script_pins()
    assert any("lm_eval --model local-completions" in c and "seed=None" in c for c in manifest["commands"])
    assert any("inspect eval inspect_gsm8k.py" in c and f"--epochs {manifest['epochs']}" in c
               for c in manifest["commands"])
    (samples,) = COMMITTED.glob("lm-eval/*/samples_*.jsonl")
    assert f"|maj@{manifest['repeats']}" in (COMMITTED / "lm-eval" / "printed.md").read_text().replace(" ", "")


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(3600)  # installs two tools (once per machine), then waits its model turn and runs the model
def test_regenerated_fixtures_import_like_the_committed_ones(tmp_path):
    install = subprocess.run([sys.executable, str(SCRIPT), "--install-only"], capture_output=True, text=True,
                             timeout=3600)
    if install.returncode == 3:
        pytest.skip("lm-eval or inspect_ai cannot be installed here: "
                    + (install.stderr.strip().splitlines() or ["no output"])[-1])
    assert install.returncode == 0, install.stderr[-3000:]
    out = tmp_path / "fixtures"
    turn = [str(MODEL_TURN)] if MODEL_TURN.exists() else []
    made = subprocess.run([*turn, sys.executable, str(SCRIPT), "--out", str(out), "--questions", "2", "--repeats",
                           str(REPEATS), "--epochs", "2", "--max-tokens", "64"], capture_output=True, text=True,
                          timeout=3600,
                          env={**os.environ, "COLUMNS": "120"})
    assert made.returncode == 0, made.stderr[-3000:]
    (samples,) = out.glob("lm-eval/*/samples_*.jsonl")
    (log,) = out.glob("inspect/*.json")
    (archive,) = out.glob("inspect/*.eval")
    committed_line = json.loads(next(COMMITTED.glob("lm-eval/*/samples_*.jsonl")).read_text().splitlines()[0])
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert set(lines[0]) == set(committed_line) and {x["filter"] for x in lines} == {"score-first", f"maj@{REPEATS}"}
    assert json.loads(log.read_text())["version"] == json.loads(next(COMMITTED.glob("inspect/*.json")).read_text())[
        "version"]
    runner = CliRunner()
    for tool, path, paths in (("lm-eval", samples, 2 * REPEATS), ("inspect", log, 2 * 2), ("inspect", archive, 2 * 2)):
        run_dir = tmp_path / f"run-{path.suffix}"
        result = runner.invoke(app, ["import", tool, str(path), "--run-dir", str(run_dir)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        with SampleStore.open_readonly(run_dir) as store:
            stored = list(store.paths())
        assert len(stored) == paths
        if tool == "lm-eval":
            texts = {x["doc_id"]: x["resps"][0] for x in lines}
            assert sorted(p.text for p in stored) == sorted(t for texts_of in texts.values() for t in texts_of)
            assert f"maj@{REPEATS}" in result.stdout and f"first {REPEATS} of {REPEATS}, voted" in result.stdout
        else:
            samples_in_log = json.loads(log.read_text())["samples"]
            assert sorted((p.text, p.source_answer) for p in stored) == sorted(
                (s["output"]["completion"], s["scores"]["match"].get("answer")) for s in samples_in_log)
