"""Settings declared once: the run's groups and each backend's own options model, from which the CLI's
options, validation and the run's identity follow; the store returns them typed; backends registered."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import GSM8K_TEST
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore

TESTS = Path(__file__).parent

# A backend as a plugin writes it: one module, its options model beside it, one registration. Nothing
# else in the package names `--style` or `--retries`.
PLUGIN = '''
import sys
from typing import Annotated
from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation
from selfconsistency.options import BackendOptions, Cli, Identity

class EchoOptions(BackendOptions):
    style: Annotated[str, Cli("How the echo answers.", "Echo backend"), Identity()] = "plain"
    retries: Annotated[int, Cli("Times to retry (does not change the text).", "Echo backend")] = 0

class Echo:
    name = "echo"
    def __init__(self, config):
        self.model, self.style = config.model, config.options.style
    def generate(self, requests):
        for r in requests:
            yield Generation(r, f"{self.style}: the answer is 5.", 10, 5, 0.0, "stop")
    def close(self):
        pass

register_backend("echo", Echo, EchoOptions)
'''


def plugin_cli(*args: str) -> subprocess.CompletedProcess:
    script = PLUGIN + "from selfconsistency.cli import app\napp(sys.argv[1:], prog_name='selfconsistency')\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()})


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


@pytest.mark.slow  # a fresh interpreter: the plugin registers before the CLI is built
def test_a_backends_own_option_reaches_the_cli_and_the_identity(tmp_path):
    helped = plugin_cli("run", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--style" in helped.stdout and "--retries" in helped.stdout and "Echo backend" in helped.stdout
    run = ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--paths", "2", "--backend", "echo",
           "--model", "m", "--run-dir", str(tmp_path / "run"), "--quiet"]
    first = plugin_cli(*run, "--style", "loud")
    assert first.returncode == 0, first.stderr
    with SampleStore.open_readonly(tmp_path / "run") as store:
        assert store.get_meta("identity")["style"] == "loud"
        assert "loud: the answer is 5." in {p.text for p in store.paths()}
        assert store.settings().options.style == "loud"  # readable where the plugin is not registered
        exec(PLUGIN, {})  # and where it is, as its own options model
        assert type(store.settings().options).__name__ == "EchoOptions"
    assert plugin_cli(*run, "--style", "loud", "--retries", "3").returncode == 0  # not in the identity
    refused = plugin_cli(*run, "--style", "quiet")  # another text: another run
    assert refused.returncode == 2 and "different settings (style)" in refused.stderr


def test_identity_is_what_older_versions_recorded(tmp_path):
    """Stores made before the settings were regrouped keep their settings hash (their identity dicts, as
    the earlier RunSettings.identity wrote them)."""
    local = RunSettings(data=str(GSM8K_TEST), limit=2, model="gemma-3-270m", top_k=7)
    task = local.get_task()
    common = {"task": "gsm8k", "task_spec": task.fingerprint(), "shots_from_data": None, "model": "gemma-3-270m",
              "prompt_format": "completion", "zero_shot": False, "top_p": 1.0, "top_k": 7, "max_tokens": 256,
              "seed": 0, "flexible": True, "max_question_chars": 8000}
    assert local.identity(task) == {**common, "backend": "local"}
    server = RunSettings(data=str(GSM8K_TEST), backend="openai", model="gemma-3-270m", top_k=7, api="completions",
                         base_url="http://user:secret@host:8000/v1", concurrency=9)
    # credentials leave the URL entirely (scheme, host, port and path are kept)
    assert server.identity(task) == {**common, "backend": "openai", "api": "completions",
                                     "base_url": "http://host:8000/v1"}
    bedrock = RunSettings(data=str(GSM8K_TEST), backend="bedrock-batch", model="gemma-3-270m", top_k=7,
                          bucket="b", role_arn="r")
    old = {**common, "backend": "bedrock-batch", "base_url": None, "api": "chat"}
    assert bedrock.identity(task) == old
    assert bedrock.model_copy(update={"converse": True}).identity(task) == {**old, "converse": True}
    assert json.dumps(server.stored_settings()).count("secret") == 0


def test_flat_and_grouped_settings_are_the_same_and_typos_are_refused():
    flat = RunSettings(model="m", backend="openai", paths=10, temperatures=[0.7], stop="beta:0.95", base_url="u")
    grouped = RunSettings(model="m", backend="openai", sampling={"paths": 10, "temperatures": (0.7,)},
                          stopping={"stop": "beta:0.95"}, options={"base_url": "u"})
    assert flat == grouped and flat.sampling.paths == 10 and flat.options.base_url == "u"
    assert RunSettings(**flat.flat()) == flat
    with pytest.raises(ValidationError, match="pathz"):
        RunSettings(pathz=3)
    with pytest.raises(ValidationError, match="unknown backend 'nope'"):
        RunSettings(backend="nope")


def test_the_store_returns_the_runs_settings_typed(tmp_path, scripted_backend):
    from selfconsistency.experiment import run_experiment

    config = RunSettings(data=str(GSM8K_TEST), limit=2, backend="scripted", model="m", paths=3,
                         temperatures=(0.5, 0.7), max_cost=2.5)
    run_experiment(config, tmp_path)
    with SampleStore.open_readonly(tmp_path) as store:
        assert store.settings() == config


def test_an_older_store_is_read_only_once_upgraded_and_keeps_its_job_ids(tmp_path):
    """Job rows written when the provider's id was kept as `arn`. Reading never writes: the read-only open
    refuses the older schema, naming the command; `upgrade` migrates it (under the run lock), then the
    jobs read back with their `job_id`."""
    from typer.testing import CliRunner

    from selfconsistency import store as store_module
    from selfconsistency.cli import app

    db = sqlite3.connect(tmp_path / "samples.sqlite")
    for script in store_module._MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 4")
    db.execute("INSERT INTO jobs (job_key, backend, model, status, arn, input_uri, output_uri, records, created_at, "
               "updated_at) VALUES ('k', 'openai-batch', 'm', 'submitted', 'batch_123', 'in', '', '{}', 0, 0)")
    db.commit()
    db.close()
    before = (tmp_path / "samples.sqlite").read_bytes()
    with pytest.raises(ValueError, match=f"written by an older version; `selfconsistency upgrade {tmp_path}`"):
        SampleStore.open_readonly(tmp_path)
    assert (tmp_path / "samples.sqlite").read_bytes() == before
    upgraded = CliRunner().invoke(app, ["upgrade", str(tmp_path)])
    assert upgraded.exit_code == 0, upgraded.output
    with SampleStore.open_readonly(tmp_path) as store:
        assert [job["job_id"] for job in store.jobs()] == ["batch_123"]
        assert store.read_only


@pytest.mark.slow  # a fresh interpreter's imports
def test_importing_the_on_demand_bedrock_backend_leaves_store_and_batch_runner_out():
    code = ("import sys, selfconsistency.backends.bedrock_ondemand\n"
            "print(sorted(m for m in sys.modules if m in ('selfconsistency.store', "
            "'selfconsistency.backends.batch_jobs', 'selfconsistency.backends.bedrock_batch')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_job_services_come_from_the_registry():
    from selfconsistency.backends import BackendError, backend_spec, create_job_service, register_backend
    from selfconsistency.backends.base import BackendConfig

    made = []
    register_backend("fake-batch", lambda config: None, job_service=lambda config: made.append(config) or "svc")
    assert create_job_service("fake-batch", BackendConfig(model="m")) == "svc" and made[0].model == "m"
    with pytest.raises(BackendError, match="runs no batch jobs"):
        create_job_service("local", BackendConfig(model="m"))
    assert backend_spec("openai-batch").job_service is not None


def test_one_option_declared_differently_by_two_backends_is_refused():
    from typing import Annotated

    from selfconsistency.backends import _REGISTRY, register_backend
    from selfconsistency.cli_options import declared_options
    from selfconsistency.options import BackendOptions, Cli

    class Clashing(BackendOptions):
        concurrency: Annotated[int, Cli("Something else.", "Clash")] = 1

    register_backend("clash", lambda config: None, Clashing)
    try:
        with pytest.raises(TypeError, match="--concurrency is declared twice"):
            declared_options()
    finally:
        del _REGISTRY["clash"]


def test_run_help_is_grouped_by_concern_and_uncut_at_80_columns():
    from typer.testing import CliRunner

    from selfconsistency.cli import app

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.output  # no option name, type or default cut short
    panels = [line[3:].rstrip("─╮ ") for line in result.output.splitlines() if line.startswith("╭─")]
    for panel in ("Experiment", "Sampling", "Adaptive stopping", "Backend", "Budget (paid backends)", "Output"):
        assert any(title.startswith(panel) for title in panels), panels
    assert max(map(len, result.output.splitlines())) <= 80


@pytest.mark.parametrize("typed, refused", [
    (["--backend", "openai", "--bucket", "x"], "--bucket is an option of the bedrock-batch backend, not of openai"),
    (["--backend", "openai", "--batch-size", "3"], "--batch-size is an option of the local backend, not of openai"),
    (["--threads", "2", "--backend", "bedrock"], "--threads is an option of the local backend, not of bedrock"),
])
def test_another_backends_option_is_refused_in_one_line(typed, refused):
    from typer.testing import CliRunner

    from selfconsistency.cli import app

    result = CliRunner().invoke(app, ["run", "gsm8k", "--data", str(GSM8K_TEST), "--model", "m", *typed])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {refused}", result.output
    options = {typed[i].removeprefix("--").replace("-", "_"): typed[i + 1] for i in range(0, len(typed), 2)}
    with pytest.raises(ValidationError, match=refused):
        RunSettings(model="m", **options)


def test_the_python_api_refuses_another_backends_option_too():
    from selfconsistency import SelfConsistency

    with pytest.raises(ValueError, match="--role-arn is an option of the bedrock-batch backend, not of openai"):
        SelfConsistency(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", role_arn="arn:x")


def test_a_default_is_the_settings_own_and_not_an_option_given():
    """A command line passes on only what was typed: the defaults it shows are the settings' declarations."""
    from typer.testing import CliRunner

    from selfconsistency.cli import app

    result = CliRunner().invoke(app, ["run", "gsm8k", "--data", str(GSM8K_TEST), "--limit", "1", "--backend", "openai",
                                      "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--show-prompt"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("body, refused", [
    ({"temperature": 0}, "sampling temperature 0 is outside (0, 2]"),
    ({"temperature": 2.5}, "sampling temperature 2.5 is outside (0, 2]"),
    ({"top_p": 0}, "top_p: Input should be greater than 0"),
    ({"n": 0}, "n: Input should be greater than or equal to 1"),
    ({"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
    ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({"seed": -3}, "seed: Input should be greater than or equal to 0"),
    ({"n": "3"}, "n: Input should be a valid integer"),
    ({"self_consistency": {"min_agreement": 1.5}}, "min_agreement: Input should be less than or equal to 1"),
    ({"self_consistency": {"paths": 0}}, "paths: Input should be greater than or equal to 1"),
    ({"self_consistency": {"answer_type": "poem"}}, "unknown answer type 'poem'; use number, letter"),
])
def test_the_servers_request_fields_have_the_settings_bounds(body, refused):
    """serve's body is bounded by the settings it sets, declared once (and the answer types by the registry)."""
    from starlette.testclient import TestClient

    from selfconsistency import SelfConsistency
    from selfconsistency.serve import create_app

    engine = SelfConsistency(model="m", backend="openai", base_url="http://127.0.0.1:9/v1")
    with TestClient(create_app(engine)) as client:
        reply = client.post("/v1/chat/completions", json={"model": "m", **body,
                                                          "messages": [{"role": "user", "content": "1 + 1?"}]})
    assert reply.status_code == 400 and refused in reply.json()["error"]["message"], reply.text
    for value in body.values():  # the same value is refused where the settings are built too
        if isinstance(value, int | float) and not isinstance(value, bool) and "n" not in body:
            name = {"temperature": "temperatures", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
                    "seed": "seed"}[next(iter(body))]
            with pytest.raises(ValidationError):
                RunSettings(**{name: (value,) if name == "temperatures" else value})


def test_the_api_and_the_cli_share_the_settings_defaults():
    from selfconsistency import SelfConsistency

    api = SelfConsistency(model="m", backend="openai", base_url="http://127.0.0.1:9/v1").settings()[0]
    assert api.sampling.paths == RunSettings().sampling.paths
    assert api.sampling.temperatures == RunSettings().sampling.temperatures


def test_every_numeric_option_has_an_upper_bound():
    """A typo like --paths 100000000 is refused by the declaration, not met by a MemoryError."""
    import annotated_types

    from selfconsistency.backends import BACKEND_NAMES, backend_spec
    from selfconsistency.options import cli_fields
    from selfconsistency.settings import GROUPS, RunSettings

    models = [RunSettings, *GROUPS.values(), *(backend_spec(name).options for name in BACKEND_NAMES)]
    for model in models:
        for name, (field, _) in cli_fields(model).items():
            kinds = {a for a in getattr(field.annotation, "__args__", (field.annotation,)) if a is not type(None)}
            if kinds & {int, float}:
                bounded = any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in field.metadata)
                assert bounded, f"--{name.replace('_', '-')} ({model.__name__}) has no upper bound"
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        RunSettings(paths=100_000_000)


def test_the_local_models_default_threads_are_the_cores_this_process_may_use():
    """Not os.cpu_count(): under taskset or a container's cpuset a thread per machine core would wait on
    cores it never gets."""
    import os

    from selfconsistency.backends.llama_cpp import usable_cores

    every_core = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(every_core)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, every_core)
    assert usable_cores() == len(every_core)
