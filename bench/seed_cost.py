"""The seed's cost figures from `run --dry-run`: the AWS blog's Cohere Command batch run (as the seed quoted
it: 5.5 M input and 0.625 M output tokens for 7,473 GSM8K questions; $9.50 for one generation a question,
$14.50 for five in one record) reproduced from those token counts by the estimator a user runs.

The 7,473 questions are the shipped GSM8K test split, cycled (the training split needs the hub): with the
token counts stated, only their number matters. Prints each command and its output verbatim.

    python bench/seed_cost.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS, INPUT_TOKENS, OUTPUT_TOKENS = 7_473, 5_500_000, 625_000


def main() -> None:
    lines = (REPO / "data" / "gsm8k" / "test.jsonl").read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "gsm8k-7473.jsonl"
        data.write_text("\n".join(lines[i % len(lines)] for i in range(QUESTIONS)) + "\n")
        for paths in (1, 5):
            args = ["run", "gsm8k", "--data", "gsm8k-7473.jsonl", "--backend", "bedrock-batch", "--model",
                    "cohere.command-text-v14", "--bucket", "my-bucket", "--role-arn",
                    "arn:aws:iam::123456789012:role/batch", "--paths", str(paths), "--no-greedy",
                    "--mean-prompt-tokens", str(round(INPUT_TOKENS / QUESTIONS)),
                    "--mean-output-tokens", str(round(OUTPUT_TOKENS / QUESTIONS)), "--dry-run"]
            print("$ selfconsistency " + " ".join(args))
            proc = subprocess.run([sys.executable, "-m", "selfconsistency", *args], capture_output=True, text=True,
                                  cwd=tmp, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
            print(proc.stdout + proc.stderr, end="\n" if paths == 1 else "")
            if proc.returncode:
                raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
