"""The tool's grading of MATH answers against independent graders, on the stored paths of real runs.

For every stored path of a math run (every temperature, greedy included), it compares whether the path is
right according to:
- **the tool**: the path's answer class (its extraction, then math-verify's grouping) equals the gold's
  class, exactly as every report of the run counts it;
- **math-verify direct**: `verify(parse("$gold$"), parse(path text))`, math-verify's own extraction from the
  whole path and its own comparison, at its defaults (the tool's thinking blocks are not removed);
- **math-verify on our extraction**: `verify(parse("$gold$"), parse("$our written answer$"))`, which tells an
  extraction difference from a grouping one;
- **lm-eval minerva_math** (with --lm-eval-python): lm-evaluation-harness's `process_results` for
  minerva_math (`exact_match`: its Minerva "Final Answer" extraction and sympy equivalence; `math_verify`:
  its math-verify metric, gold parsed from the solution), run by bench/minerva_check.py in the grader's
  environment.

It prints one table of agreements and disagreements per grader, then every disagreement: the question,
the gold, what the tool read (and by which rule) and its verdict, and what the other grader read and its
verdict, with a first reason (no answer read, no Minerva sentence, extraction differs, grouping).

lm-eval pins antlr4 4.11 while math-verify here uses 4.13, so lm-eval runs in its own environment, kept
out of the package's dependencies (no torch is needed: the minerva_math check needs sympy, antlr4 and
math-verify):

    python3 -m venv .venv-grader
    .venv-grader/bin/pip install --no-deps lm-eval==0.4.13
    .venv-grader/bin/pip install "sympy>=1.12" antlr4-python3-runtime==4.11 "math-verify[antlr4_11_0]==0.9.0"

    .venv/bin/python bench/math_grading.py RUN_DIR [RUN_DIR ...] --data data/math500/test.jsonl \\
        --lm-eval-python .venv-grader/bin/python [--json OUT.json]

`--data` gives each question's full solution (lm-eval's gold is the solution's last \\boxed{}); questions
are matched by id (math500's ids are MATH-500's unique_id).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from selfconsistency.math_verifier import InProcess, Verdict
from selfconsistency.store import SampleStore

HERE = Path(__file__).resolve().parent


def stored_paths(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run_dir in run_dirs:
        with SampleStore.open_readonly(run_dir) as store:
            questions = {q.id: q for q in store.questions()}
            for path in store.paths():
                question = questions[path.question_id]
                if question.gold is None:
                    continue
                rows.append({"key": f"{run_dir.name}/{path.question_id}/{path.temperature:g}/{path.path_index}",
                             "question_id": path.question_id, "text": path.text, "gold": question.written_gold,
                             "gold_class": question.gold, "answer": path.answer, "written": path.written,
                             "rule": path.answer_rule,
                             "ours": path.answer is not None and path.answer == question.gold})
    return rows


def math_verify_direct(rows: list[dict]) -> None:
    """Both math-verify columns, each parse and comparison at math-verify's own time limit (this thread is
    the main one)."""
    import math_verify

    verifier = InProcess()
    for row in rows:
        gold = math_verify.parse(f"${row['gold']}$")
        target = math_verify.parse(row["text"])
        row["mv_direct"] = bool(math_verify.verify(gold, target))
        row["mv_direct_read"] = next((x for x in target if isinstance(x, str)), None) if target else None
        row["mv_ours"] = row["written"] is not None and verifier.compare(row["gold"], row["written"]) is Verdict.same


def lm_eval(rows: list[dict], python: str, solutions: dict[str, str]) -> None:
    requests = "".join(json.dumps({"key": row["key"], "text": row["text"],
                                   "solution": solutions[row["question_id"]]}) + "\n" for row in rows)
    done = subprocess.run([python, str(HERE / "minerva_check.py")], input=requests, capture_output=True, text=True,
                          check=True)
    replies = {reply["key"]: reply for reply in map(json.loads, done.stdout.splitlines())}
    for row in rows:
        reply = replies[row["key"]]
        row["lm_exact"], row["lm_mv"], row["lm_read"] = bool(reply["exact_match"]), bool(reply["math_verify"]), \
            reply["extracted"]


def reason(row: dict, grader: str) -> str:
    """A first reason for a disagreement (the lead's explanation goes into docs/benchmarks.md)."""
    if row["written"] is None:
        return "the tool read no answer (no \\boxed{}, Minerva sentence or 'The answer is')"
    if grader == "lm_exact" and row["lm_read"] == "[invalidanswer]":
        return "lm-eval read no answer: its extraction needs Minerva's 'Final Answer: ... I hope it is correct.'"
    if grader in ("mv_direct", "lm_mv") and row["rule"] != "boxed":
        return f"the tool read its answer by rule {row['rule']}; math-verify's extraction takes another"
    if row["mv_ours"] != row["ours"]:
        return "grouping: the written answer is the gold by math-verify, but its class's key is not (or the reverse)"
    if grader == "lm_exact":
        return "equivalence: lm-eval's sympy check (after Minerva's normalisation) decides otherwise"
    return "extraction: math-verify read another answer from the whole text"


GRADERS = {"mv_direct": "math-verify direct", "mv_ours": "math-verify on our extraction",
           "lm_exact": "lm-eval minerva_math exact_match", "lm_mv": "lm-eval minerva_math math_verify"}


def report(rows: list[dict]) -> dict:
    print(f"{len(rows)} stored paths of labelled questions; the tool marks {sum(r['ours'] for r in rows)} right\n")
    print("| grader | agree | disagree | tool right, grader wrong | tool wrong, grader right |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for grader, name in GRADERS.items():
        if grader not in rows[0]:
            continue
        differ = [r for r in rows if r[grader] != r["ours"]]
        summary[grader] = {"agree": len(rows) - len(differ), "disagree": len(differ)}
        print(f"| {name} | {len(rows) - len(differ)} | {len(differ)} | {sum(r['ours'] for r in differ)} | "
              f"{sum(not r['ours'] for r in differ)} |")
    for grader, name in GRADERS.items():
        if grader not in rows[0]:
            continue
        differ = [r for r in rows if r[grader] != r["ours"]]
        if differ:
            print(f"\n## {name}: {len(differ)} disagreements\n")
        for r in differ:
            theirs = r.get("lm_read") if grader.startswith("lm") else r.get("mv_direct_read")
            print(f"- {r['key']}: gold {r['gold']!r}; tool read {r['written']!r} ({r['rule']}) -> class "
                  f"{r['answer']!r}, {'right' if r['ours'] else 'wrong'}; {name} "
                  f"{'right' if r[grader] else 'wrong'}" + (f", read {theirs!r}" if theirs is not None else "")
                  + f". {reason(r, grader)}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, help="the task's records (JSONL with unique_id and solution)")
    parser.add_argument("--lm-eval-python", help="a Python with lm-eval installed (see this file's docstring)")
    parser.add_argument("--json", type=Path, help="also write every row and the summary here")
    args = parser.parse_args()
    rows = stored_paths(args.run_dirs)
    if not rows:
        sys.exit("no stored paths of labelled questions")
    math_verify_direct(rows)
    if args.lm_eval_python:
        if args.data is None:
            sys.exit("--lm-eval-python needs --data (lm-eval's gold is the solution's last \\boxed{})")
        records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
        lm_eval(rows, args.lm_eval_python, {r["unique_id"]: r["solution"] for r in records})
    summary = report(rows)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
