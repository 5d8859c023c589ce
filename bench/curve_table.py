"""maj@k and pass@k for every k, with their 95% intervals, and paired SC@k vs greedy, on a stored run.

`selfconsistency report` shows a few k; this prints every k = 1..N of one sampling temperature, as
results.json holds them (exact expectation over the k-subsets of each question's paths, percentile bootstrap
over questions for the interval), the expected number of questions whose gold ties for the lead at each k,
and for the chosen k the paired difference of SC@k from greedy on the same questions: SC@k's per-question
score is its exact expected correctness over the k-subsets, greedy's is 0 or 1; the interval is the paired
bootstrap and the p-value the paired permutation test of stats.paired, as the report's own comparisons.

    .venv/bin/python bench/curve_table.py RUN_DIR [--temperature 0.7] [--paired 8 --paired 16]

Reading a live run's store is safe (read-only); a store written by an older version needs `selfconsistency
upgrade` on a copy first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from selfconsistency.analysis import encode, exact_curves
from selfconsistency.results import build_results, sampled_answers
from selfconsistency.stats import paired
from selfconsistency.store import SampleStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's first")
    parser.add_argument("--paired", type=int, action="append", help="k of SC@k vs greedy (default: 8)")
    args = parser.parse_args()
    started = time.perf_counter()
    with SampleStore.open_readonly(args.run_dir) as store:
        settings = store.settings()
        temperature = args.temperature if args.temperature is not None else settings.sampling.temperatures[0]
        results = build_results(store)
        answers, golds, n, ties = sampled_answers(store, temperature)
        greedy_of = {p.question_id: p.answer for p in store.paths(text=False) if p.temperature == 0.0}
    (summary,) = [s for s in results["sampled"] if s["temperature"] == temperature]
    print(f"{results['task']} on {results['model']} ({results['backend']}): {len(golds)} complete labelled "
          f"questions x {n} paths at T={temperature:g}, greedy beside them")
    greedy = results.get("greedy")
    if greedy:
        low, high = greedy["interval"]
        print(f"greedy: {greedy['accuracy']:.1%} (95% interval {low:.1%}-{high:.1%})")
    print(f"\n{'k':>3} {'maj@k':>7} {'95% interval':>15} {'pass@k':>7} {'95% interval':>15} {'gold tied':>9}")
    for point, tied in zip(summary["curve"], summary["ties_with_gold"], strict=True):
        print(f"{point['k']:>3} {point['exact']:>7.1%} {point['low']:>7.1%}-{point['high']:<7.1%} "
              f"{point['pass_at_k']:>7.1%} {point['pass_low']:>7.1%}-{point['pass_high']:<7.1%} {tied:>9.2f}")
    if any(q not in greedy_of for q in ties.question_ids):
        print("\nno greedy path for every question: no paired comparison")
        return
    greedy_right = np.array([greedy_of[q] is not None and greedy_of[q] == g
                             for q, g in zip(ties.question_ids, golds, strict=True)], float)
    per_question = exact_curves(*encode(answers, golds))  # questions x k, each an exact expectation
    print(f"\n{'paired, same questions':<24} {'SC@k':>7} {'greedy':>7} {'difference':>11} {'95% interval':>22} "
          f"{'p':>7}")
    for k in args.paired or [8]:
        if not 1 <= k <= n:
            parser.error(f"--paired {k}: the run has 1 to {n} paths a question")
        result = paired(per_question[:, k - 1], greedy_right)
        print(f"{f'SC@{k} vs greedy':<24} {result.a:>7.1%} {result.b:>7.1%} {result.difference * 100:>+8.1f} pt "
              f"{result.low * 100:>+9.1f} to {result.high * 100:+.1f} pt {result.p_value:>7.4f}")
    print(f"\n({result.method}; {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
