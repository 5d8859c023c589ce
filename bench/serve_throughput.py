"""Requests per second of the self-consistency endpoint at 1, 4 and 8 concurrent clients.

Starts the app (uvicorn, loopback, embedded model) and sends the same GSM8K questions through the
official openai client: one at a time, then from C threads at once. Prints requests/s, mean latency,
completion tokens/s and the process's CPU seconds per concurrency. On the embedded model the paths of
concurrent requests are decoded together (up to --batch-size slots), so requests/s shows what batching
across requests buys over one request at a time, whose paths alone fill --paths slots.

    .venv/bin/python bench/serve_throughput.py --model qwen2.5-coder-0.5b --requests 8 --paths 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import uvicorn

from selfconsistency.api import SelfConsistency
from selfconsistency.serve import create_app

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--paths", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batch-size", type=int, default=8, help="decoder slots shared by concurrent requests")
    args = parser.parse_args()
    lines = (REPO / "data/gsm8k/test.jsonl").read_text().splitlines()
    questions = [json.loads(line)["question"] for line in lines[: args.requests]]
    engine = SelfConsistency(model=args.model, paths=args.paths, max_tokens=args.max_tokens,
                             batch_size=args.batch_size)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, max_concurrent=max(args.concurrency)),
                                           log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="unused",
                           timeout=3600, max_retries=0)

    def ask(question: str) -> tuple[float, int]:
        started = time.perf_counter()
        response = client.chat.completions.create(model=args.model,
                                                  messages=[{"role": "user", "content": question}])
        return time.perf_counter() - started, response.usage.completion_tokens

    ask(questions[0])  # loads the model
    print(f"{args.model}, {args.paths} paths per request, max_tokens {args.max_tokens}, batch size "
          f"{args.batch_size}, {len(questions)} requests per row, {os.cpu_count()} cores, "
          f"load average before {os.getloadavg()[0]:.2f}")
    print("| concurrent clients | requests/s | vs one at a time | mean latency (s) | completion tokens/s | "
          "wall s | CPU s |\n|---:|---:|---:|---:|---:|---:|---:|")
    baseline = None
    for clients in args.concurrency:  # without a run directory every request samples afresh
        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(ask, questions))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        rate = len(questions) / wall
        baseline = baseline or rate
        tokens = sum(tokens for _, tokens in results)
        print(f"| {clients} | {rate:.3f} | {rate / baseline:.2f}x | {sum(t for t, _ in results) / len(results):.1f} "
              f"| {tokens / wall:.1f} | {wall:.0f} | {cpu:.0f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server.should_exit = True
    engine.close()


if __name__ == "__main__":
    main()
