"""What one GSM8K self-consistency run is billed on Claude: Anthropic's Messages API (on demand), Message
Batches, Message Batches with prompt caching forced on, and Bedrock batch inference, all on the emulators
(the Anthropic API emulator; the Bedrock emulator with S3 on a moto server), priced with the packaged table.

Each column is one run of the same questions and settings (greedy + PATHS at T=0.7, 8-shot prompt as chat
turns). Tokens are the billed counts: the on-demand run's from each response's usage (stored per path), the
batch runs' from the spend ledger (every job's results, cache writes and reads included); the last row is
the Anthropic emulator's own bill, which the ledger must equal. Dollars: tokens x the model's price (batch at half;
cache writes at 1.25x / 2x, reads at 0.1x the input price).

    python bench/anthropic_costs.py --limit 200 --paths 10
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-ant-bench"


def emulators():
    """The Anthropic emulator and the Bedrock one (with a moto S3 server), on loopback; their environment set."""
    import boto3
    from moto.server import ThreadedMotoServer

    from selfconsistency.testing import anthropic_emulator, bedrock_emulator

    anthropic = anthropic_emulator.Emulator(api_key=KEY, step_seconds=0.01)
    server = anthropic_emulator.make_server(anthropic)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    host, port = s3.get_host_and_port()
    os.environ.update({"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"})
    bedrock = bedrock_emulator.Emulator(boto3.client("s3"), step_seconds=0.01)
    bedrock_server = bedrock_emulator.make_server(bedrock)
    threading.Thread(target=bedrock_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{bedrock_server.server_address[1]}"
    os.environ.update({"AWS_ENDPOINT_URL_BEDROCK": url, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url})
    return anthropic, bedrock


def run(name: str, settings: dict, base: Path) -> dict:
    from selfconsistency.costs import PriceTable
    from selfconsistency.experiment import run_experiment
    from selfconsistency.report import write_report
    from selfconsistency.settings import RunSettings
    from selfconsistency.store import SampleStore

    config = RunSettings(**settings)
    started = time.perf_counter()
    run_dir = run_experiment(config, base / name)
    results = write_report(run_dir)
    spend = results["spend"]
    if results["batch_jobs"]:
        jobs = results["batch_jobs"]
        tokens = {"input": sum(j["input_tokens"] for j in jobs), "output": sum(j["output_tokens"] for j in jobs)}
        cached = spend["cached_input_tokens"]
        dollars = spend["total_usd"]
    else:  # on demand: each path's billed usage, stored with it
        with SampleStore(run_dir, create=False) as store:
            paths = list(store.paths())
        tokens = {"input": sum(p.prompt_tokens for p in paths), "output": sum(p.completion_tokens for p in paths)}
        cached = 0
        dollars = PriceTable().price(config.model).cost(tokens["input"], tokens["output"])
    return {"input": tokens["input"], "cached": cached, "output": tokens["output"], "dollars": dollars,
            "saved": spend.get("saved_by_cache_usd"), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--paths", type=int, default=10)
    parser.add_argument("--model", default="claude-haiku-4-5")
    parser.add_argument("--bedrock-model", default="anthropic.claude-haiku-4-5-20251001-v1:0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's S3 server logs every request
    anthropic, _ = emulators()
    common = {"data": str(ROOT / "data/gsm8k/test.jsonl"), "limit": args.limit, "paths": args.paths,
              "temperatures": (0.7,), "prompt_format": "chat", "model": args.model}
    batch = {**common, "backend": "anthropic-batch", "poll_seconds": 0.05}
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        billed = []
        for name, settings in (("on-demand", {**common, "backend": "anthropic", "concurrency": 8}),
                               ("batch", {**batch, "cache_prompt": "off"}),
                               ("batch + caching", {**batch, "cache_prompt": "on"})):
            before = len(anthropic.billed)
            columns[name] = run(name.replace(" + ", "-"), settings, base)
            entries = anthropic.billed[before:]
            billed.append(sum(e["input"] + e["cache_write"] + e["cache_read"] + e["output"] for e in entries))
        columns["Bedrock batch"] = run("bedrock", {**common, "backend": "bedrock-batch", "model": args.bedrock_model,
                                                   "bucket": "bench", "create_bucket": True, "poll_seconds": 0.05,
                                                   "role_arn": "arn:aws:iam::123456789012:role/bench"}, base)
        billed.append(None)  # the Bedrock emulator's bill is its manifests, which the ledger reads as they are
    requests = args.limit * (1 + args.paths)
    print(f"GSM8K, {args.limit} questions x (greedy + {args.paths} paths at T=0.7) = {requests:,} requests; "
          f"{args.model} (Bedrock: {args.bedrock_model}), 8-shot prompt as chat turns")
    names = list(columns)
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    rows = [("input tokens, uncached", "input", "{:,}"), ("input tokens, cache write + read", "cached", "{:,}"),
            ("output tokens", "output", "{:,}"), ("billed (USD)", "dollars", "${:.4f}")]
    for label, key, form in rows:
        print(f"| {label} | " + " | ".join(form.format(columns[n][key]) for n in names) + " |")
    saved = [columns[n]["saved"] for n in names]
    print("| saved by caching (USD) | " + " | ".join("–" if s is None else f"${s:.4f}" for s in saved) + " |")
    print("| emulator's bill, tokens | " + " | ".join("–" if b is None else f"{b:,}" for b in billed) + " |")
    print("| wall seconds (emulated) | " + " | ".join(f"{columns[n]['seconds']:.1f}" for n in names) + " |")


if __name__ == "__main__":
    main()
