"""Analysis and batch I/O at the seed's scale (issue 16): 7,473 questions x 30 paths x 3 temperatures.

Seeded synthetic data of that shape (50 % gold, 5 % abstain, 8 other answers; log-probs so the weighted
votes run), then wall and CPU seconds of:

1. `accuracy_curve` (100 runs), the implementation before issue 16 (tests/analysis_reference.py) and
   today's side by side in this run, with the ratio and whether the exact curves are bit-identical;
   `report` (write_report) on a stored run of that size; `simulate` with 5 rules x 100 orders.
2. Batch I/O for one temperature (225,000 paths, one per record, Bedrock Llama 3 bodies): planning
   (pack, split_jobs, the job keys), writing the JSONL input files, parsing an output file of 225,000
   records (BedrockJobs.results without the S3 read: echo checks included) into Generations, and storing
   the 225,000 paths. --compare-with times the same steps with an older checkout's code in a subprocess.

Prints measured numbers; it asserts nothing about time. The machine may be shared: CPU seconds next to
wall seconds show how much of a wall time was waiting for the CPU (CPU: this process and the child
processes it forked, e.g. `report`'s).

    PYTHONPATH=src .venv/bin/python bench/analysis_scale.py [--questions 7473] [--keep DIR] [--skip-old]
        [--skip-analysis] [--skip-batch] [--before-src OTHER/src] [--repeats N] [--compare-with OTHER/src]

`report` and `simulate` run in a fresh interpreter (this process holds the synthetic run: forking it
would cost what a command's forks do not), timed around `write_report` and `simulate` alone; the whole
`selfconsistency report RUN_DIR` command (start-up, imports, the printed table) is timed too.
`--before-src` times them with another checkout's src/ (e.g. main before a change) on the same stored
run right after this tree's, `--repeats` times over, the trees taking turns, and says whether their
results.json, results.md, plot, report.html and frontier.json are byte-identical. `--compare-with`
times the batch I/O again with another checkout's src/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference implementation

from analysis_reference import reference_accuracy_curve  # noqa: E402
from selfconsistency.analysis import accuracy_curve  # noqa: E402
from selfconsistency.runlock import prepare_run_dir  # noqa: E402
from selfconsistency.store import SampleStore, StoredPath, StoredQuestion  # noqa: E402

TEMPERATURES = (0.5, 0.7, 1.0)
RULES = ["beta:0.95", "dirichlet:0.95", "esc:4", "esc:8", "entropy:0.3"]
MODEL = "meta.llama3-1-8b-instruct-v1:0"
TEXT = ("Natalia sold 48 clips in April and half as many in May, so she sold 48 / 2 = 24 clips in May. "
        "Altogether she sold 48 + 24 = 72 clips in April and May. The answer is {answer}.")


def cpu_seconds() -> float:
    """This process's CPU time and its finished children's: `report` works in forked children too."""
    return sum(os.times()[:4])


@contextlib.contextmanager
def timed(label: str, rows: list):
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    rows.append((label, time.perf_counter() - wall, cpu_seconds() - cpu))
    print(f"  {label:58s} {rows[-1][1]:7.2f} s wall {rows[-1][2]:7.2f} s CPU", flush=True)


def synthetic_answers(rng: np.random.Generator, questions: int, paths: int) -> list[list[str | None]]:
    draw = rng.random((questions, paths))
    other = rng.integers(0, 8, (questions, paths))
    return [["gold" if u < 0.5 else None if u < 0.55 else f"other{o}" for u, o in zip(us, os, strict=True)]
            for us, os in zip(draw, other, strict=True)]


def stored_paths(rng: np.random.Generator, qids: list[str], temperature: float,
                 answers: list[list[str | None]]) -> list[StoredPath]:
    lengths = rng.integers(60, 200, (len(qids), len(answers[0])))
    logprobs = -lengths * rng.uniform(0.05, 0.6, lengths.shape)
    return [StoredPath(qid, temperature, j, j, TEXT.format(answer=answer), answer, 900, int(lengths[q, j]), 0.5,
                       "stop", float(logprobs[q, j]), "bedrock-batch", MODEL)
            for q, (qid, row) in enumerate(zip(qids, answers, strict=True)) for j, answer in enumerate(row)]


def store_paths(store: SampleStore, paths: list[StoredPath]) -> str:
    if hasattr(store, "add_paths"):
        store.add_paths(paths)
        return "store.add_paths"
    store._db.execute("BEGIN IMMEDIATE")
    for path in paths:
        store.add_path(path)
    store._db.execute("COMMIT")
    return "add_path calls in one BEGIN/COMMIT transaction"


def build_run(run_dir: Path, questions: int, paths: int, rng: np.random.Generator, rows: list) -> dict:
    qids = [f"q{i:05d}" for i in range(questions)]
    config = {"task": "gsm8k", "backend": "bedrock-batch", "model": MODEL, "greedy": True, "paths": paths,
              "temperatures": list(TEMPERATURES), "seed": 0, "subset_runs": 100, "stop": None, "min_paths": 1,
              "prices_file": None}
    by_temperature = {t: synthetic_answers(rng, questions, paths) for t in TEMPERATURES}
    greedy = synthetic_answers(rng, questions, 1)
    prepare_run_dir(run_dir)  # the marker a run leaves: report writes only into a run directory
    with SampleStore(run_dir) as store:
        store.bind_config({"task": "gsm8k", "model": MODEL}, config)
        store.add_questions(StoredQuestion(qid, i, f"question {i}", "gold") for i, qid in enumerate(qids))
        store.set_selection(qids)
        first = stored_paths(rng, qids, TEMPERATURES[0], by_temperature[TEMPERATURES[0]])
        with timed(f"store {len(first):,} paths", rows):
            how = store_paths(store, first)
        print(f"    (stored with {how})")
        for t in TEMPERATURES[1:]:
            store_paths(store, stored_paths(rng, qids, t, by_temperature[t]))
        store_paths(store, stored_paths(rng, qids, 0.0, greedy))
    return by_temperature


def analysis(questions: int, paths: int, skip_old: bool, keep: Path | None, before_src: Path | None,
             repeats: int = 1) -> list:
    rows: list = []
    rng = np.random.default_rng(16)
    answers = synthetic_answers(rng, questions, paths)
    golds = ["gold"] * questions
    print(f"accuracy_curve, {questions:,} questions x {paths} paths x 100 runs")
    with timed("accuracy_curve (this branch)", rows):
        curve = accuracy_curve(answers, golds, runs=100, seed=0)
    if not skip_old:
        with timed("accuracy_curve (main before issue 16)", rows):
            mean, std, exact = reference_accuracy_curve(answers, golds, runs=100, seed=0)
        new_exact = np.array([p.exact for p in curve])
        before, after = rows[-1], rows[-2]
        print(f"    ratio (before / after, wall): {before[1] / after[1]:.1f}x; CPU: {before[2] / after[2]:.1f}x")
        print(f"    exact curve bit-identical to before: {np.array_equal(new_exact, exact)}")
        gap = np.abs(np.array([p.mean for p in curve]) - mean)
        se = np.sqrt((std**2 + np.array([p.std for p in curve]) ** 2) / 100)
        print(f"    Monte-Carlo means: largest |after - before| = {gap.max():.4f} "
              f"({(gap / np.maximum(se, 1e-12)).max():.1f} standard errors)")
    with contextlib.ExitStack() as stack:
        run_dir = keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print(f"\nstored run: {questions:,} questions x {paths} paths x {len(TEMPERATURES)} temperatures + greedy "
              f"in {run_dir}")
        build_run(run_dir, questions, paths, rng, rows)
        # `report` and `simulate` as a user runs them: each tree in a fresh interpreter (this process holds
        # the synthetic run, which would make its forks and its memory unlike a command's), taking turns
        this_src = Path(__file__).resolve().parents[1] / "src"
        for _ in range(repeats):
            rows += time_source(this_src, run_dir, "this branch")
            if before_src:
                rows += time_source(before_src, run_dir, str(before_src))
    return rows


BEFORE = """
import contextlib, hashlib, os, sys, time
from pathlib import Path
from selfconsistency.cli import simulate
from selfconsistency.report import write_report
run_dir = Path(sys.argv[1])
names = ("results.json", "results.md", "accuracy_vs_paths.png", "report.html", "frontier.json")
# digests, not the bytes: 150 MB held here would make the report's forks unlike a command's
kept = {name: hashlib.sha256((run_dir / name).read_bytes()).digest() for name in names if (run_dir / name).exists()}
for label, work in (("report", lambda: write_report(run_dir)),
                    ("simulate", lambda: simulate(run_dir, stop=sys.argv[2:], temperature=0.7, min_paths=1,
                                                  runs=100, seed=0))):
    wall, cpu = time.perf_counter(), sum(os.times()[:4])
    with contextlib.redirect_stdout(open("/dev/null", "w")):
        work()
    print(label, time.perf_counter() - wall, sum(os.times()[:4]) - cpu, flush=True)
for name, digest in kept.items():
    print(name, hashlib.sha256((run_dir / name).read_bytes()).digest() == digest)
"""


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_source(source: Path, run_dir: Path, name: str) -> list:
    """write_report and simulate, then the whole `report` command, of a source tree on the stored run, each in a
    fresh interpreter; for another tree than this one, whether its results.json, report.html and
    frontier.json are byte-identical to those this branch wrote."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = subprocess.run([sys.executable, "-c", BEFORE, str(run_dir), *RULES], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(f"{name}: write_report/simulate failed:\n{proc.stderr}")
    # then the command itself: interpreter start-up, imports and the printed table included
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-m", "selfconsistency", "report", str(run_dir)], env=env,
                   stdout=subprocess.DEVNULL, check=True)
    what = f"`selfconsistency report RUN_DIR` (the whole command), {name}"
    rows = [(what, time.perf_counter() - wall, _children_cpu() - cpu)]
    print(f"  {what:58s} {rows[-1][1]:7.2f} s wall {rows[-1][2]:7.2f} s CPU", flush=True)
    for line in proc.stdout.splitlines():
        label, *values = line.split()
        if label in ("report", "simulate"):
            what = ("report (write_report: 3 temperatures, weighted votes, plots)" if label == "report" else
                    f"simulate ({len(RULES)} rules x 100 orders, T=0.7)") + f", {name}"
            rows.append((what, float(values[0]), float(values[1])))
            print(f"  {what:58s} {rows[-1][1]:7.2f} s wall {rows[-1][2]:7.2f} s CPU", flush=True)
        elif name != "this branch":
            print(f"    {label} byte-identical to this branch's: {values[0]}")
    return rows


def _read_output_before(data: bytes, job_records, records: dict, adapter):
    """What BedrockJobs.results did with a job's output before the batch I/O speed-up (main before issue
    16 item 2, without the S3 read): json.loads per line, the echo compared as a decoded value."""
    from selfconsistency.backends.batch_jobs import MALFORMED_CODE, JobResults, retryable_status

    results = JobResults()
    for raw in data.decode("utf-8", errors="replace").splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            record_id = line.get("recordId")
        except (ValueError, AttributeError):
            results.unreadable += 1
            continue
        if not isinstance(record_id, str) or record_id not in job_records:
            results.unreadable += 1
            continue
        record = records.get(record_id)
        if record is None:
            continue
        try:
            if line.get("modelInput") != record.body:
                results.mismatched.append(record.record_id)
            elif "modelOutput" in line:
                results.outputs[record.record_id] = adapter.response(line["modelOutput"], record.requests[0].params)
            elif isinstance(line.get("error"), dict):
                code = line["error"].get("errorCode")
                results.errors[record.record_id] = (str(code), str(line["error"].get("errorMessage", "")),
                                                    retryable_status(code))
            else:
                raise ValueError("neither modelOutput nor error")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            results.errors[record.record_id] = (MALFORMED_CODE, "malformed", True)
    return results


def batch_io(questions: int, paths: int) -> list:
    """Times the code of the selfconsistency package imported: this branch's, or (run with PYTHONPATH at
    another checkout's src, as --compare-with does) an older one's, with what that one lacks replaced by
    what it did then."""
    import hashlib

    import selfconsistency.backends.bedrock_batch as bedrock_batch
    from selfconsistency.backends import batch_plan
    from selfconsistency.backends.base import GenerationRequest
    from selfconsistency.backends.batch_plan import Quotas, pack, record_generations, split_jobs
    from selfconsistency.backends.bedrock_batch import BedrockJobs, bedrock_line
    from selfconsistency.backends.bedrock_bodies import adapter_for
    from selfconsistency.prompts import Prompt, PromptFormat
    from selfconsistency.sampling import SamplingParams

    body_digests = getattr(batch_plan, "body_digests", lambda rs: [batch_plan.body_digest(r.body) for r in rs])
    read_output = getattr(bedrock_batch, "read_output", _read_output_before)
    input_file = getattr(batch_plan, "input_file", lambda lines: ("\n".join(lines) + "\n").encode())
    rows: list = []
    print(f"\nbatch I/O, {questions:,} questions x {paths} paths at one temperature (one path per record), "
          f"code from {Path(batch_plan.__file__).parents[2]}")
    adapter = adapter_for(MODEL)
    shared = "".join(f"Q: exemplar question {i} about clips and apples, worded at the length of GSM8K's?\n"
                     f"A: {TEXT.format(answer=i)}\n\n" for i in range(8))
    with timed("build the GenerationRequests (not part of the plan)", rows):
        prompts = [Prompt(shared, f"Q: question {q}?\nA:", (("user", f"{shared}Q: question {q}?"),),
                          PromptFormat.chat) for q in range(questions)]
        requests = [GenerationRequest(f"q{q:05d}", 0.7, j, prompts[q],
                                      SamplingParams(temperature=0.7, max_tokens=256, stop=("\n\n",), seed=j))
                    for q in range(questions) for j in range(paths)]
    plan = []
    with timed("plan: pack into records", plan):
        records = pack(requests, adapter.max_generations, adapter.request, bedrock_line)
    with timed("plan: split_jobs", plan):
        jobs = split_jobs(records, Quotas(), BedrockJobs.too_small)
    print(f"    {len(records):,} records in {len(jobs)} jobs")
    with timed("plan: job keys (each record's id and body digest)", plan):
        keys = [hashlib.sha256(",".join(sorted(f"{r.record_id}:{d}" for r, d in zip(job, body_digests(job),
                                                                                  strict=True))).encode()).hexdigest()
                for job in jobs]
    print(f"    job keys hash to {hashlib.sha256(''.join(keys).encode()).hexdigest()[:16]} "
          "(with --compare-with: equal in both runs means the same record ids and bodies)")
    with tempfile.TemporaryDirectory() as tmp:
        with timed("write the JSONL input files", plan):
            for number, job in enumerate(jobs):  # the bytes BedrockJobs.submit uploads
                Path(tmp, f"input-{number}.jsonl").write_bytes(input_file([r.line for r in job]))
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(f"    {size / 1e6:,.0f} MB written")
        output = Path(tmp, "records.jsonl.out")
        with output.open("w") as out:  # what Bedrock writes back: the input line plus modelOutput
            for r in records:
                body = {"generation": TEXT.format(answer=7), "prompt_token_count": 900, "generation_token_count": 80,
                        "stop_reason": "stop"}
                out.write(json.dumps({"recordId": r.record_id, "modelInput": r.body, "modelOutput": body}) + "\n")
        by_id = {r.record_id: r for r in records}
        data = output.read_bytes()  # what the S3 read returns
        with timed(f"parse the output file ({len(records):,} records) into Generations", plan):
            results = read_output(data, by_id, by_id, adapter)
            generations = [g for rid, outputs in results.outputs.items()
                           for g in record_generations(by_id[rid], outputs, 0.0)]
        print(f"    {len(generations):,} generations, {len(results.mismatched)} mismatched echoes")
    total = [sum(row[1] for row in plan), sum(row[2] for row in plan)]
    print(f"  {'total: plan, write and parse':58s} {total[0]:7.2f} s wall {total[1]:7.2f} s CPU")
    return rows + plan + [("total: plan, write and parse", *total)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=7473)
    parser.add_argument("--paths", type=int, default=30)
    parser.add_argument("--skip-old", action="store_true", help="do not time the implementation before issue 16")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-analysis", action="store_true", help="time the batch I/O only")
    parser.add_argument("--compare-with", type=Path, metavar="SRC",
                        help="time the batch I/O a second time with the package in SRC (e.g. /work/main/src)")
    parser.add_argument("--keep", type=Path, help="build the stored run here and keep it")
    parser.add_argument("--repeats", type=int, default=1, help="time report and simulate this many times "
                        "per source tree, the trees taking turns")
    parser.add_argument("--before-src", type=Path,
                        help="also time report and simulate of this source tree (its src/ directory) on the run")
    args = parser.parse_args()
    rows = [] if args.skip_analysis else analysis(args.questions, args.paths, args.skip_old, args.keep,
                                                  args.before_src, args.repeats)
    if not args.skip_batch:
        rows += batch_io(args.questions, args.paths)
        if args.compare_with:
            import os
            import subprocess

            sys.stdout.flush()
            env = {**os.environ, "PYTHONPATH": str(args.compare_with)}
            subprocess.run([sys.executable, __file__, "--skip-analysis", "--questions", str(args.questions),
                            "--paths", str(args.paths)], env=env, check=True)
    print("\n| step | wall s | CPU s |\n|---|---:|---:|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
