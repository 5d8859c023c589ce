"""Universal Self-Consistency against the majority vote, on the same sampled paths.

Samples N paths per GSM8K question once (a resumable run directory), then answers every question twice
from those paths: by majority vote over the extracted answers, and by USC (one more greedy request per
question whose paths disagree: the model names the most consistent response; its answer is the pick).
Prints accuracy, how many USC replies named no response (fallback to the vote), and the extra tokens.

    .venv/bin/python bench/usc_vs_majority.py --model qwen2.5-coder-0.5b --questions 50 --paths 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfconsistency.answers import answers_from_store
from selfconsistency.api import answer_data
from selfconsistency.settings import RunSettings
from selfconsistency.usc import select_with_usc

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench-usc")
    args = parser.parse_args()
    config = RunSettings(task="gsm8k", data=str(REPO / "data/gsm8k/test.jsonl"), limit=args.questions,
                       model=args.model, paths=args.paths, temperatures=(args.temperature,), greedy=False,
                       max_tokens=args.max_tokens, batch_size=args.batch_size)
    started = time.perf_counter()
    run_dir, majority = answer_data(config, args.run_dir, method="majority")
    sampled = time.perf_counter() - started
    requests = select_with_usc(config, run_dir)
    usc = answers_from_store(run_dir, method="usc")
    selecting = time.perf_counter() - started - sampled
    n = len(majority)
    print(f"{args.model}, GSM8K, {n} questions, {args.paths} paths at T={args.temperature:g}")
    print("| selection | accuracy | extra requests | extra tokens | USC fallbacks |\n|---|---:|---:|---:|---:|")
    print(f"| majority vote | {sum(bool(a.correct) for a in majority) / n:.1%} | 0 | 0 | – |")
    extra = sum(u.tokens - m.tokens for u, m in zip(usc, majority, strict=True))
    fallbacks = sum(not u.votes["parsed"] for u in usc)  # under USC, votes holds the selection
    print(f"| USC | {sum(bool(a.correct) for a in usc) / n:.1%} | {requests} | {extra:,} | {fallbacks} |")
    print(f"\nsampling {sampled:.0f} s, selection requests {selecting:.0f} s (this run; a rerun reuses both)")


if __name__ == "__main__":
    main()
