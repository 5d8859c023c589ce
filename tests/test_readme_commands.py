"""The README's `selfconsistency answer` and `selfconsistency serve` commands, run as written (the Python
example of the same section is run by tests/test_answers.py).

Substituted, and nothing else: the leading `selfconsistency` becomes `<this interpreter> -m
selfconsistency` (the package under test, wherever PATH points), and serve's `--port 8000` a free port
(8000 may be taken on a shared machine). bash expands `$KEY` from the environment the test sets, as a
user's shell would. `questions.jsonl` is the user's file: the test writes one in the working directory.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from conftest import GSM8K_TEST, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
KEY = "sk-readme-3c1f0a"


def readme_commands(prefix: str) -> list[str]:
    """Every command of a ```bash block of the README that starts with `prefix`, its backslash-continued
    lines joined as bash joins them."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    commands = [re.sub(r"\s*\\\n\s*", " ", block) for block in blocks]
    return [line.strip() for block in commands for line in block.splitlines() if line.startswith(prefix)]


def budget_command(command: str) -> bool:
    """The commands of "Spending fewer paths" (tested by test_readme_budget_commands)."""
    return "--budget-paths" in command or "--allocate" in command


def as_run(command: str) -> list[str]:
    """The command for bash, with `selfconsistency` as this interpreter's module."""
    return ["bash", "-c", f"exec {shlex.quote(sys.executable)} -m {command}"]


def test_the_answer_and_serve_sections_show_one_command_each():
    # a command added to the README without a test of it fails here first
    assert len(readme_commands("selfconsistency answer ")) == 1
    assert len(readme_commands("selfconsistency serve ")) == 1


@pytest.mark.model
def test_readme_answer_command(tmp_path):
    first, second = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:2]]
    (tmp_path / "questions.jsonl").write_text(json.dumps({"question": first["question"]}) + "\n"  # unlabelled
                                              + json.dumps(second) + "\n")  # labelled
    (command,) = readme_commands("selfconsistency answer ")
    proc = subprocess.run(as_run(command), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    unlabelled, labelled = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert (unlabelled["id"], labelled["id"]) == ("test-00000", "test-00001")  # input order
    for answer in (unlabelled, labelled):
        assert 1 <= answer["paths_used"] <= 8 and answer["stopped_by"] in ("beta:0.95", "max_paths")
        assert sum(answer["votes"].values()) + answer["abstained"] == answer["paths_used"]
        assert answer["low_confidence"] is (answer["agreement"] < 0.7)
        assert answer["tokens"] > 0 and answer["cost_usd"] is None  # the embedded model costs nothing
    assert "gold" not in unlabelled and labelled["gold"] == second["answer"].rsplit("#### ", 1)[1].strip()
    assert labelled["correct"] is (labelled["answer"] == labelled["gold"])
    assert "1 of 1 labelled" in proc.stderr or "0 of 1 labelled" in proc.stderr


@pytest.mark.model
def test_readme_serve_command(tmp_path):
    (command,) = readme_commands("selfconsistency serve ")
    assert " --port 8000 " in command
    port = free_port()
    server = subprocess.Popen(as_run(command.replace(" --port 8000 ", f" --port {port} ")), cwd=tmp_path,
                              env={**os.environ, "KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        url = f"http://127.0.0.1:{port}/v1"
        question = json.loads(GSM8K_TEST.read_text().splitlines()[0])["question"]
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
        # the client asks for fewer, shorter paths than the command's 5 (n and max_tokens are per request)
        response = client.chat.completions.create(model="qwen2.5-coder-0.5b", n=3, max_tokens=64,
                                                  messages=[{"role": "user", "content": question}])
        sc = response.self_consistency
        assert sc["paths_used"] == 3 and response.model == "qwen2.5-coder-0.5b"
        assert response.usage.completion_tokens == sum(p["completion_tokens"] for p in sc["paths"])
        with pytest.raises(openai.AuthenticationError):  # "$KEY" reached the server
            openai.OpenAI(base_url=url, api_key="not-the-key", max_retries=0).models.list()
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=60)
    assert "POST /v1/chat/completions" in log and KEY not in log


@pytest.mark.slow
def test_readme_anthropic_commands(anthropic_api, tmp_path):
    """The Anthropic section's commands, in order, against the emulator (ANTHROPIC_BASE_URL and
    ANTHROPIC_API_KEY from the fixture, as a user's shell has them). Substituted as well: `--poll-seconds
    0.05` added to each `run` of a batch (stored with the run, so `jobs collect` polls at it too), and the
    data path made absolute."""
    emulator, _ = anthropic_api
    commands = [c for c in readme_commands("selfconsistency ") if not budget_command(c)
                and ("anthropic" in c or "runs/claude" in c or "runs/haiku-5-5" in c)]
    assert len(commands) == 6
    outputs = []
    for command in commands:
        command = command.replace("data/gsm8k/test.jsonl", str(GSM8K_TEST))
        if " run " in f" {command}" and "anthropic-batch" in command and "--show-prompt" not in command:
            command += " --poll-seconds 0.05"
        proc = subprocess.run(as_run(command), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr)
        outputs.append(proc.stdout)
    assert len(emulator.batches) == 1 and "SC@10" in outputs[0]  # 50 questions x 11 paths, one batch
    assert "ended" in outputs[1] and "nothing to stop" in outputs[2] and "SC@10" in outputs[3]
    assert emulator.message_calls == 50 and "T=1 SC@5" in outputs[4]  # Haiku 5.5 on demand, at its default
    assert "sampled at its default, temperature 1" in " ".join(outputs[4].split())  # and the report says so
    results = json.loads((tmp_path / "runs" / "haiku-5-5" / "results.json").read_text())
    assert "claude-haiku-5-5 takes no temperature" in results["sampling_note"]
    assert "sampled at its default" in (tmp_path / "runs" / "haiku-5-5" / "report.html").read_text()
    assert json.loads((tmp_path / "runs" / "claude" / "results.json").read_text())["sampling_note"] is None
    body = json.loads(outputs[5])
    assert body["messages"][-2]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["temperature"] == 0.0 and "top_p" not in body


@pytest.mark.slow
def test_readme_budget_commands(anthropic_api, tmp_path):
    """A budget in dollars, as "Spending fewer paths" spends it on Message Batches (a budget in paths on the
    embedded default is run, scaled down, by tests/test_budget_backends.py::test_embedded_model), run here
    against the emulator, scaled down (20 questions, $0.10 rather than 200 and $5) and with the
    data path made absolute and `--poll-seconds 0.05`: the bill at the model's batch rates stays within
    the amount and spends nearly all of it, its waves batches (by default at least the 20 records below which
    a follow-up round goes to the Messages API at twice the price) but for the last ones, cut to what is left."""
    from selfconsistency.costs import PriceTable
    from selfconsistency.store import SampleStore

    emulator, _ = anthropic_api
    (in_dollars,) = [c for c in readme_commands("selfconsistency run ") if budget_command(c) and "--max-cost" in c]
    assert "anthropic-batch" in in_dollars and "--max-cost 5" in in_dollars and "--limit 200" in in_dollars
    command = (in_dollars.replace("--limit 200", f"--data {GSM8K_TEST} --limit 20")
               .replace("--max-cost 5", "--max-cost 0.1") + f" --run-dir {tmp_path / 'run'} --poll-seconds 0.05")
    proc = subprocess.run(as_run(command), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    batch, on_demand = (PriceTable().price("claude-haiku-4-5", batch=batch) for batch in (True, False))
    with SampleStore.open_readonly(tmp_path / "run") as store:
        paths = list(store.paths(text=False))
        sent_on_demand = store.on_demand_keys()  # the small follow-up waves, at the Messages API's price
    billed = sum((on_demand if (p.question_id, p.temperature, p.path_index) in sent_on_demand else batch)
                 .cost(p.prompt_tokens, p.completion_tokens) for p in paths)
    assert billed <= 0.1 and (billed >= 0.09 or len(paths) == 20 * 41), (billed, len(paths))
    # the first wave (greedy and a first path per question) is one batch, and so is each of the allocator's
    # waves; only the last waves, cut below 20 records to what the amount has left, go on demand
    assert len(emulator.batches) > 1 and emulator.message_calls == len(sent_on_demand) < len(paths) // 4
