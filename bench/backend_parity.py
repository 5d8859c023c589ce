"""The same experiment through the embedded model (--backend local) and through llama-cpp-python's
OpenAI-compatible server with the same GGUF file (--backend openai --api completions, so both see the same
prompt text), each run SIGKILLed part-way and started again.

Prints, side by side: accuracy (greedy, one path, the vote of all paths), tokens and wall time per
backend; whether every path stored before the kill was kept unchanged (not generated again); and how
often the two backends agree question by question. Sampling differs in its details (the embedded backend
samples with its own numpy generators, the server with llama.cpp's sampler chain), so sampled paths are
comparable, not identical; greedy paths should agree.

    python bench/backend_parity.py --model qwen2.5-coder-0.5b --limit 10 --paths 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selfconsistency.models import resolve_model_path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model_path(model)),
                             "--model_alias", model, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                             "--n_threads", str(os.cpu_count())],  # its default is half the cores
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def stored(run_dir: Path) -> dict[tuple, str]:
    if not (run_dir / "samples.sqlite").exists():
        return {}
    db = sqlite3.connect(run_dir / "samples.sqlite")
    try:
        return {(q, t, i): text for q, t, i, text in db.execute(
            "SELECT question_id, temperature, path_index, text FROM paths")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def run_killed_then_resumed(args: list[str], run_dir: Path, kill_at: int) -> dict:
    """Run, SIGKILL once `kill_at` paths are stored, run again to the end; what was kept and how long."""
    command = [sys.executable, "-m", "selfconsistency", *args, "--run-dir", str(run_dir), "--quiet"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(stored(run_dir)) < kill_at:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = stored(run_dir)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    after = stored(run_dir)
    kept = sum(after.get(key) == text for key, text in before_kill.items())
    results = json.loads((run_dir / "results.json").read_text())
    return {"seconds": seconds, "killed_with": len(before_kill), "kept": kept, "paths": len(after),
            "results": results, "answers": answers(run_dir)}


def answers(run_dir: Path) -> dict[tuple, str | None]:
    db = sqlite3.connect(run_dir / "samples.sqlite")
    try:
        return {(q, t, i): a for q, t, i, a in db.execute(
            "SELECT question_id, temperature, path_index, answer FROM paths")}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--data", default=str(ROOT / "data/gsm8k/test.jsonl"))
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--paths", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    options = parser.parse_args()
    out = options.out or Path(tempfile.mkdtemp(prefix="parity-"))
    common = ["run", "gsm8k", "--data", options.data, "--limit", str(options.limit), "--paths", str(options.paths),
              "--temperatures", str(options.temperature), "--model", options.model]
    total = options.limit * (options.paths + 1)
    server, url = start_server(options.model)
    try:
        runs = {
            "local": run_killed_then_resumed(common + ["--backend", "local"], out / "local", total // 3),
            "openai": run_killed_then_resumed(
                common + ["--backend", "openai", "--base-url", url, "--api", "completions", "--concurrency", "2"],
                out / "openai", total // 3),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{options.limit} GSM8K questions, {options.model}, greedy + {options.paths} paths at "
          f"T={options.temperature}; each run SIGKILLed once, then started again (run dirs in {out})\n")
    print(f"| {'':34} | {'local':>12} | {'openai (llama_cpp.server)':>26} |")
    print(f"|{'-' * 36}|{'-' * 14}|{'-' * 28}|")

    def row(name: str, values: list[str]) -> None:
        print(f"| {name:34} | {values[0]:>12} | {values[1]:>26} |")

    def accuracy(results: dict, k: int | None) -> str:
        if k is None:
            return f"{results['greedy']['accuracy'] * 100:.0f} %"
        setting = results["sampled"][0]
        point = next(p for p in setting["curve"] if p["k"] == k)
        return f"{point['exact'] * 100:.1f} %"

    names = list(runs)
    row("greedy accuracy", [accuracy(runs[n]["results"], None) for n in names])
    row("1 path (expected accuracy)", [accuracy(runs[n]["results"], 1) for n in names])
    row(f"vote of {options.paths} paths (expected)", [accuracy(runs[n]["results"], options.paths) for n in names])
    row("paths stored", [str(runs[n]["paths"]) for n in names])
    row("paths stored at the SIGKILL", [str(runs[n]["killed_with"]) for n in names])
    row("of those, kept unchanged", [str(runs[n]["kept"]) for n in names])
    row("completion tokens", [str(runs[n]["results"]["sampled"][0]["completion_tokens"]
                                  + runs[n]["results"]["greedy"]["completion_tokens"]) for n in names])
    row("wall time incl. kill + resume (s)", [f"{runs[n]['seconds']:.0f}" for n in names])
    local, remote = runs["local"]["answers"], runs["openai"]["answers"]
    greedy = [key for key in local if key[1] == 0.0]
    same_greedy = sum(local[key] == remote.get(key) for key in greedy)
    print(f"\ngreedy answers equal on {same_greedy} of {len(greedy)} questions")


if __name__ == "__main__":
    main()
