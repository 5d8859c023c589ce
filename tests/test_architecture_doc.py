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


SRC = Path(__file__).resolve().parents[1] / "src" / "selfconsistency"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else len(text)]


def _modules(text: str) -> set[str]:
    """The package's modules named in `text` (`store.py`, `backends/base.py`), relative to the package."""
    return {name for name in re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", text) if (SRC / name).is_file()}


def test_the_modules_over_300_lines_are_the_ones_listed():
    long = {str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
            if len(path.read_text().splitlines()) > 300}
    assert _modules(_section("Modules over 300 lines")) == long


def test_the_store_is_written_only_where_the_document_says():
    """Every writer of a store goes through store.writer; the modules calling it are the ones named."""
    import ast

    writers, constructors = set(), set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name == "writer":
                    writers.add(path.name)
                if name == "SampleStore" and path.name != "store.py":
                    constructors.add(path.name)
    row = next(line for line in DOC.read_text().splitlines() if line.startswith("| The run's store"))
    named = set(re.findall(r"`([a-z_]+\.py)`", row.split("|")[2].split("used by")[1]))
    assert constructors == set()  # nobody opens a store for writing but store.writer
    assert writers == named, (writers, named)


def test_the_pure_modules_do_no_io():
    import ast

    text = DOC.read_text()
    listed = _modules(text[text.index("Pure modules"): text.index("`results.py` reads an")])
    assert listed >= {"vote.py", "analysis.py", "stopping.py"}
    io_modules = {"os", "pathlib", "sqlite3", "subprocess", "socket", "shutil", "tempfile", "io", "urllib", "http",
                  "boto3", "botocore", "openai", "anthropic", "time", "random"}
    for name in listed:
        tree = ast.parse((SRC / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & io_modules, (name, ast.dump(node))
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] not in io_modules, (name, node.module)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                raise AssertionError(f"{name} calls open()")


def test_no_backend_opens_a_store_and_no_core_module_names_a_backend():
    """Backends reach the store through JobStore only; outside backends/, code asks a backend's declared
    capabilities instead of comparing its name (`== "local"`, `.endswith("-batch")`)."""
    import ast

    from selfconsistency.backends import BACKEND_NAMES

    for path in (SRC / "backends").glob("*.py"):
        source = path.read_text()
        assert "SampleStore" not in source and "from ..store" not in source, path.name
    for path in SRC.rglob("*.py"):
        if path.parent.name in ("backends", "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = {side.value for side in sides if isinstance(side, ast.Constant)} & set(BACKEND_NAMES)
                assert not named, f"{path.name}:{node.lineno} compares with backend {named}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("endswith", "startswith"):
                args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                assert not any("batch" in a for a in args), f"{path.name}:{node.lineno} tests a backend's name"


def test_the_emulators_live_where_the_document_says():
    named = _modules(_section("Modules over 300 lines")) | _modules(_section("Tests"))
    emulators = {str(p.relative_to(SRC)) for p in SRC.rglob("*emulator*.py")}
    assert emulators and emulators <= named | {f"testing/{p.split('/')[-1]}" for p in emulators if "testing/" in p}
    assert all(p.startswith("testing/") for p in emulators)


def test_the_allocator_snippet_plugs_in(tmp_path, scripted_backend):
    from selfconsistency import RunSettings, run_experiment
    from selfconsistency.allocation import ALLOCATORS
    from selfconsistency.store import SampleStore

    (block,) = [b for b in _blocks("python") if "register_allocator" in b]
    try:
        exec(block, {})
        settings = RunSettings(backend="scripted", model="m", data=str(GSM8K_TEST), limit=6, paths=10,
                               budget_paths=20, allocate="closest-race", wave_paths=4)
        run_experiment(settings, tmp_path / "run")
        with SampleStore.open_readonly(tmp_path / "run") as store:
            used = {qid: n for (qid, _), (n, _, _) in store.stops(settings.stops_name()).items()}
    finally:
        ALLOCATORS.pop("closest-race", None)
    assert sum(used.values()) == 20
    # the scripted even questions always agree: their lead grows, so the coin flips get the paths
    assert sum(n for q, n in used.items() if int(q[-1]) % 2) > sum(n for q, n in used.items() if not int(q[-1]) % 2)
