"""The README's "Demo result" block is what the code computes on the kept run of the README's first command
(docs/demo-run, kept by scripts/readme_demo.py --keep): a change that moves any number, or a store format
the code no longer reads, fails here until the demo is rerun and the block rewritten."""

import importlib.util
import shlex
from pathlib import Path

from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore
from test_readme_commands import readme_commands

REPO = Path(__file__).resolve().parents[1]


def _demo_script():
    spec = importlib.util.spec_from_file_location("readme_demo", REPO / "scripts" / "readme_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_block_is_computed_from_the_kept_run():
    demo = _demo_script()
    readme = (REPO / "README.md").read_text()
    shown = readme[readme.index(demo.BEGIN):readme.index(demo.END) + len(demo.END)]
    assert shown == demo.demo_block(demo.KEPT)


def test_the_kept_run_is_the_readme_first_command():
    """Same task, data, questions, model and paths as the command at the README's top (run directory aside)."""
    first = next(c for c in readme_commands("bash scripts/install.sh && ") if " run " in c)
    argv = shlex.split(first.split("&&", 1)[1])[2:]  # after `.venv/bin/selfconsistency run`
    with SampleStore.open_readonly(REPO / "docs" / "demo-run") as store:
        kept = store.settings()
    assert argv[0] == kept.experiment.task == "gsm8k"
    data = argv[argv.index("--data") + 1]
    assert Path(kept.experiment.data).parts[-3:] == Path(data).parts  # data/gsm8k/test.jsonl, made absolute
    # every other setting is the default the command leaves
    expected = RunSettings(task="gsm8k", data=kept.experiment.data, limit=int(argv[argv.index("--limit") + 1]))
    assert kept == expected
