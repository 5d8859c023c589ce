"""Adaptive stopping on a stored run: how many paths each rule spends, and what accuracy it keeps.

Replays every rule on the stored paths of a real run (each question's paths in 100 random orders; the
rule stops when it fires, at most at the N stored paths) and prints, side by side, the mean paths used,
the accuracy, the fixed-N accuracy at the same maximum, the saving and the accuracy change. The rules
use the thresholds published with them; nothing here is tuned on the run it is scored on.

Make the run first (hours on a 2-core CPU; it resumes where it stopped):

    .venv/bin/selfconsistency run gsm8k --data data/gsm8k/test.jsonl --limit 100 --paths 16 \\
        --temperatures 0.7 --run-dir runs/adaptive-1.5b
    .venv/bin/python bench/adaptive.py runs/adaptive-1.5b
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfconsistency.frontier import stored_frontier

RULES = ("beta:0.95", "dirichlet:0.95", "esc:4", "esc:8", "entropy:0.3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", default=",".join(RULES))
    args = parser.parse_args()

    frontier = stored_frontier(args.run_dir, args.temperature, args.rules.split(","), runs=args.runs, seed=args.seed)
    fixed, n = frontier.fixed, frontier.paths
    at_max = fixed[-1].exact
    print(f"{args.run_dir}: {frontier.questions} questions x {n} stored paths at T={args.temperature:g}; "
          f"{args.runs} random orders per question")
    print()
    print(f"| rule | mean paths | accuracy | fixed-N accuracy (N={n}) | fewer paths | accuracy change "
          "| fixed N at the same mean paths |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in frontier.rules:
        change = round(100 * (result.accuracy - at_max), 1) + 0.0  # + 0.0: no "-0.0"
        same_spend = frontier.fixed_at(result.mean_paths)  # fixed N at the rule's mean spend
        print(f"| {result.rule} | {result.mean_paths:.2f} | {result.accuracy:.1%} ± {result.accuracy_std:.1%} | "
              f"{at_max:.1%} | {n / result.mean_paths:.2f}x | {change:+.1f} pp | {same_spend:.1%} |")
    print()
    print("fixed-N curve (exact expectation over all k-subsets):")
    print("| k | " + " | ".join(str(p.k) for p in fixed) + " |")
    print("|---|" + "---:|" * len(fixed))
    print("| accuracy | " + " | ".join(f"{p.exact:.1%}" for p in fixed) + " |")


if __name__ == "__main__":
    main()
