"""Record the import fixtures with the real tools: lm-evaluation-harness and inspect_ai from PyPI, each in a
virtual environment of its own (they are no dependency of this project), against llama-cpp-python's
OpenAI-compatible server with the 0.5B test model, on the first questions of data/gsm8k/test.jsonl. Nothing
but PyPI is reached: the lm-eval task reads the local file (not the hub) and sends text, not tokens (no
tokenizer download); inspect_ai reads the same file.

    .venv/bin/python scripts/make_import_fixtures.py --install-only     # the tools' environments, once
    /work/tools/model_turn.sh .venv/bin/python scripts/make_import_fixtures.py [--out tests/data/import]

- lm-eval: `gsm8k_cot_self_consistency` as lm-eval ships it (8-shot CoT, its stop strings, temperature 0.2,
  its score-first and maj@k filters) with the local data, `--repeats` instead of 64 (its maj@64 filter
  becomes maj@<repeats>) and `--max-tokens`; run by `lm_eval --model local-completions` with
  `--gen_kwargs seed=None`: lm-eval otherwise sends seed 1234 with every request, and a server that honours
  seeds (llama.cpp's, vLLM's) returns the same generation for every repeat.
- inspect_ai: scripts/import_fixtures/inspect_gsm8k.py through its `openai-api` provider, `--epochs`.

Writes into --out: lm-eval/<model>/samples_*.jsonl and results_*.json as lm-eval wrote them,
lm-eval/printed.md (its printed table), inspect/<log>.json as inspect_ai wrote it and inspect/<log>.eval
(the same log through `inspect log convert --to eval`), inspect/printed.txt, and fixtures.json (versions,
settings, commands). Exit 3: a tool could not be installed here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LM_EVAL = "lm-eval[api]==0.4.13"
INSPECT = "inspect-ai==0.3.285"
TORCH = "torch==2.13.0"  # lm-eval imports torch; this one is a CPU wheel on this machine's disk
DATA = "data/gsm8k/test.jsonl"
SERVED_MODEL = "qwen-0.5b"
TASK = "gsm8k_cot_self_consistency_local"
FIRST_K = 8  # lm-eval's own maj@8 filter (the first 8 repeats)


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, **options)


def venv(directory: Path, packages: list[list[str]], executable: str) -> Path:
    """A virtual environment with `packages` installed (in order), made once and reused."""
    done = directory / ".installed"
    wanted = json.dumps(packages)
    if not (done.exists() and done.read_text() == wanted):
        shutil.rmtree(directory, ignore_errors=True)
        try:
            run([sys.executable, "-m", "venv", str(directory)])
            pip = [str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            run([*pip, "--upgrade", "pip"])
            for group in packages:
                run([*pip, *group])
        except subprocess.CalledProcessError as exc:
            print(f"cannot install {packages[-1]} here: {exc}", file=sys.stderr)
            sys.exit(3)
        done.write_text(wanted)
    return directory / "bin" / executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    from selfconsistency.models import resolve_model_path

    port = free_port()
    handle = open(log, "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                               str(resolve_model_path("qwen2.5-coder-0.5b")), "--model_alias", SERVED_MODEL,
                               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
                              stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.kill()
    sys.exit(f"llama_cpp.server did not start (see {log})")


def lm_eval_task(directory: Path, lm_eval_python: Path, repeats: int, max_tokens: int) -> None:
    """The shipped gsm8k_cot_self_consistency over the local data file, `repeats` repeats."""
    shipped = subprocess.run([str(lm_eval_python), "-c", "import importlib.util, pathlib; print(pathlib.Path("
                              "importlib.util.find_spec('lm_eval').origin).parent / 'tasks' / 'gsm8k' / "
                              "'gsm8k-cot-self-consistency.yaml')"], check=True, capture_output=True, text=True)
    answer = {"function": "regex", "regex_pattern": "The answer is (\\-?[0-9\\.\\,]*[0-9]+)"}
    filters = [{"name": "score-first", "filter": [answer, {"function": "take_first"}]},
               {"name": f"maj@{repeats}", "filter": [answer, {"function": "majority_vote"},
                                                      {"function": "take_first"}]}]
    if repeats > FIRST_K:
        filters.append({"name": f"maj@{FIRST_K}", "filter": [{"function": "take_first_k", "k": FIRST_K}, answer,
                                                             {"function": "majority_vote"},
                                                             {"function": "take_first"}]})
    config = {"include": shipped.stdout.strip(), "task": TASK, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": DATA}}, "repeats": repeats, "filter_list": filters,
              "generation_kwargs": {"until": ["Q:", "\n\n"], "do_sample": True, "temperature": 0.2,
                                    "max_gen_toks": max_tokens}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{TASK}.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "import")
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=16, help="lm-eval repeats per question")
    parser.add_argument("--epochs", type=int, default=4, help="inspect_ai epochs per sample")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--tools-dir", type=Path, default=Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "selfconsistency" / "import-tools")
    parser.add_argument("--install-only", action="store_true",
                        help="Only make the tools' environments (no model work: needs no model turn).")
    args = parser.parse_args()
    lm_eval = venv(args.tools_dir / "lm-eval", [[TORCH], [LM_EVAL]], "lm_eval")
    inspect = venv(args.tools_dir / "inspect-ai", [[INSPECT, "openai"]], "inspect")
    if args.install_only:
        return
    work = Path(tempfile.mkdtemp(prefix="import-fixtures-"))
    server, url = start_server(work / "server.log")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(work / "hf"), "NO_COLOR": "1", "COLUMNS": "120",
           "LLAMACPP_API_KEY": "none", "LLAMACPP_BASE_URL": url}
    commands = []
    try:
        lm_eval_task(work / "tasks", lm_eval.parent / "python", args.repeats, args.max_tokens)
        command = [str(lm_eval), "--model", "local-completions", "--model_args",
                   f"model={SERVED_MODEL},base_url={url}/completions,tokenizer_backend=None,tokenized_requests=False,"
                   "num_concurrent=1,max_retries=1", "--tasks", TASK, "--include_path", str(work / "tasks"),
                   "--limit", str(args.questions), "--gen_kwargs", "seed=None", "--log_samples",
                   "--output_path", str(work / "lm-eval")]
        printed = run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True).stdout
        (work / "lm-eval" / "printed.md").write_text(printed)
        commands.append(command)
        command = [str(inspect), "eval", "inspect_gsm8k.py", "-T", f"data=../../{DATA}", "--model",
                   f"openai-api/llamacpp/{SERVED_MODEL}", "--limit", str(args.questions), "--epochs",
                   str(args.epochs), "--temperature", "0.7", "--max-tokens", str(args.max_tokens),
                   "--max-connections", "1", "--log-format", "json", "--log-dir", str(work / "inspect"),
                   "--display", "plain"]
        printed = run(command, cwd=REPO / "scripts" / "import_fixtures", env=env, stdout=subprocess.PIPE,
                      text=True).stdout
        commands.append(command)
        (log,) = (work / "inspect").glob("*.json")
        command = [str(inspect), "log", "convert", str(log), "--to", "eval", "--output-dir", str(work / "eval")]
        run(command, env=env)
        (converted,) = (work / "eval").glob("*.eval")
        shutil.move(converted, work / "inspect" / converted.name)
        (work / "inspect" / "printed.txt").write_text(printed)
    finally:
        server.terminate()
        server.wait(timeout=30)
    versions = {name: subprocess.run([str(python.parent / "python"), "-c", f"import importlib.metadata as m; "
                                      f"print(m.version('{name}'))"], check=True, capture_output=True,
                                     text=True).stdout.strip()
                for name, python in (("lm_eval", lm_eval), ("inspect_ai", inspect))}
    from importlib.metadata import version

    versions["llama_cpp_python"] = version("llama_cpp_python")
    out = args.out
    for tool in ("lm-eval", "inspect"):
        shutil.rmtree(out / tool, ignore_errors=True)
        shutil.copytree(work / tool, out / tool)
    home = str(Path.home())
    manifest = {"versions": versions, "model": "qwen2.5-coder-0.5b (served as qwen-0.5b)", "data": DATA,
                "questions": args.questions, "repeats": args.repeats, "epochs": args.epochs,
                "max_tokens": args.max_tokens, "lm_eval_task": TASK,
                "commands": [" ".join(c).replace(str(work), "$WORK").replace(url, "$SERVER").replace(home, "~")
                             for c in commands]}
    (out / "fixtures.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
