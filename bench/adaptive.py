"""Stopping rules and budget allocators on a stored run: how many paths each spends, what accuracy it keeps.

Replays every rule and every allocator on the stored paths of a real run, each question's paths in 100
random orders (the same orders for all), and prints side by side: mean paths, accuracy with its 95%
interval over questions, the change against fixed N (all stored paths) with its paired 95% interval, fixed
N's accuracy at the same mean paths, and the saving against fixed N. Rules use the thresholds published
with them; allocators are replayed at the rules' own mean spends (equal cost) and on a grid, from which
the smallest budget within 0.5 pp of fixed N is found. Nothing here is tuned on the run it is scored on.
Then the answers' agreement distribution, which bounds what any rule can save.

Make the run first (hours to days on a 2-core CPU; it resumes where it stopped), e.g.:

    nice -n 19 .venv/bin/selfconsistency run gsm8k --data data/gsm8k/test.jsonl --limit 200 --paths 40 \\
        --temperatures 0.7 --threads 1 --stop-at-answer --model qwen2.5-coder-0.5b --run-dir runs/gsm8k-0.5b-40
    .venv/bin/python bench/adaptive.py runs/gsm8k-0.5b-40
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from selfconsistency.collector import collector_paused
from selfconsistency.frontier import stored_frontier
from selfconsistency.report_tables import frontier_markdown
from selfconsistency.results import sampled_answers
from selfconsistency.store import SampleStore

RULES = ("beta:0.95", "esc:5", "entropy:0.3", "dirichlet:0.95")  # AC's setting, ESC's window, ours, AC's
ALLOCATORS = ("blend-asc", "asc", "uniform")
TOLERANCE = 0.005  # the target: at most 0.5 pp below fixed N


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--allocators", default=",".join(ALLOCATORS))
    parser.add_argument("--wave", type=int, default=None, help="paths per wave (default: a quarter of the questions)")
    args = parser.parse_args()
    allocators = [a for a in args.allocators.split(",") if a]

    started = time.perf_counter()
    rules = stored_frontier(args.run_dir, args.temperature, args.rules.split(","), runs=args.runs, seed=args.seed)
    n = rules.paths
    grid = sorted({round(r.mean_paths, 2) for r in rules.rules} | {b for b in (2, 3, 4, 6, 8, 12, 16, 24, 32) if b < n})
    frontier = stored_frontier(args.run_dir, args.temperature, args.rules.split(","), runs=args.runs, seed=args.seed,
                               allocators=allocators, budgets=grid, wave=args.wave)
    print(f"{args.run_dir}: {frontier.questions} complete questions x {n} stored paths at T={args.temperature:g}; "
          f"{args.runs} random orders per question; replayed in {time.perf_counter() - started:.1f} s")
    print()
    print(frontier_markdown(frontier))
    print()
    at_n = frontier.fixed_accuracy  # the vote of all N paths, tie-broken as the replays are
    print(f"Smallest budget within {100 * TOLERANCE:.1f} pp of fixed N = {n} ({at_n:.1%}), searched to 0.25 paths "
          "per question:")
    print()
    print("| allocator | budget (mean paths) | accuracy [95% interval] | change vs fixed N [95% paired interval] "
          "| fewer paths than fixed N |")
    print("|---|---:|---:|---:|---:|")
    for name in allocators:
        found = _smallest_budget(args, name, frontier.wave, at_n - TOLERANCE, n)
        if found is None:
            print(f"| {name} | none up to {n} | | | |")
            continue
        replay = stored_frontier(args.run_dir, args.temperature, [], runs=args.runs, seed=args.seed,
                                 allocators=[name], budgets=[found], wave=args.wave)
        result = replay.allocations[0]
        low, high = replay.interval(result)
        versus = replay.versus_fixed(result)
        print(f"| {name} | {found:g} | {result.accuracy:.1%} [{low:.1%}, {high:.1%}] | "
              f"{100 * versus.difference:+.1f} pp [{100 * versus.low:+.1f}, {100 * versus.high:+.1f}] | "
              f"{n / found:.2f}x |")
    print()
    print("fixed-N curve (exact expectation over all k-subsets):")
    print("| k | " + " | ".join(str(p.k) for p in frontier.fixed) + " |")
    print("|---|" + "---:|" * len(frontier.fixed))
    print("| accuracy | " + " | ".join(f"{p.exact:.1%}" for p in frontier.fixed) + " |")
    print()
    _agreement(args.run_dir, args.temperature)


def _smallest_budget(args: argparse.Namespace, allocator: str, wave: int, target: float, n: int) -> float | None:
    """The smallest budget (to a quarter path per question) whose replayed accuracy reaches `target`,
    by bisection (accuracy grows with the budget, up to the replay's noise)."""

    def reaches(budget: float) -> bool:
        replay = stored_frontier(args.run_dir, args.temperature, [], runs=args.runs, seed=args.seed,
                                 allocators=[allocator], budgets=[budget], wave=wave)
        return replay.allocations[0].accuracy >= target

    if not reaches(n):
        return None
    low, high = 1.0, float(n)  # reaches(high); below low nothing can be spent
    while high - low > 0.25:
        middle = round((low + high) / 2 * 4) / 4
        if middle in (low, high):
            break
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


def _agreement(run_dir: Path, temperature: float) -> None:
    """How often the paths agree: the leading answer's share of each question's N paths, in bins, and
    whether it is the gold answer. A rule can stop early only where the share is high."""
    with collector_paused(), SampleStore.open_readonly(run_dir) as store:
        answers, golds, n, _ = sampled_answers(store, temperature)
    bins = [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.9), (0.9, 1.0), (1.0, 1.01)]
    rows = Counter()
    for row, gold in zip(answers, golds, strict=True):
        counts = Counter(a for a in row if a is not None)
        leader, votes = counts.most_common(1)[0] if counts else (None, 0)
        share = votes / n
        label = next(f"{lo:.0%}–{hi:.0%}" if hi <= 1 else "100%" for lo, hi in bins if lo <= share < hi)
        rows[(label, leader == gold)] += 1
    print(f"Agreement: the leading answer's share of each question's {n} paths ({len(answers)} questions)")
    print()
    print("| leader's share | questions | leader is gold | leader is wrong |")
    print("|---|---:|---:|---:|")
    for lo, hi in bins:
        label = f"{lo:.0%}–{hi:.0%}" if hi <= 1 else "100%"
        right, wrong = rows[(label, True)], rows[(label, False)]
        print(f"| {label} | {right + wrong} | {right} | {wrong} |")
    shares = [Counter(a for a in row if a is not None).most_common(1)[0][1] / n if any(row) else 0 for row in answers]
    print()
    print(f"median leader share {np.median(shares):.0%}; unanimous questions: {sum(s == 1 for s in shares)}")


if __name__ == "__main__":
    main()
