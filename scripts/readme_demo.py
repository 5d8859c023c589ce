"""The README's demo block, generated from the stored run of its first command (docs/demo-run/).

    .venv/bin/python scripts/readme_demo.py docs/demo-run            # print the block
    .venv/bin/python scripts/readme_demo.py docs/demo-run --write    # put it into README.md
    .venv/bin/python scripts/readme_demo.py RUN_DIR --keep           # copy a new demo run into docs/demo-run

Everything in the block is computed from the run's store and audit log, so tests/test_readme_demo.py can
check that the README shows what the code computes on that run. Rebuild it after a change that moves any
number: run the README's first command, then `--keep` its run directory and `--write`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

from selfconsistency.report import markdown_table
from selfconsistency.results import build_results
from selfconsistency.store import STORE_FILENAME, SampleStore

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
KEPT = REPO / "docs" / "demo-run"
BEGIN, END = "<!-- demo:begin (scripts/readme_demo.py writes this block) -->", "<!-- demo:end -->"
# Rates the README's time range is stated at: this machine's measured one comes from the run itself.
SLOW_RATE = 10.0  # tokens/s: the 1.5B model on a slower 2-core CPU (an AMD EPYC, measured by a reviewer)


def _wall_seconds(run_dir: Path) -> float:
    """From the audit log: the run's start to its end."""
    events = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines() if line.strip()]
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events
             if e["event"] in ("run_start", "run_end")]
    return (max(times) - min(times)).total_seconds()


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def demo_block(run_dir: Path) -> str:
    """The README's demo block for the run in `run_dir`."""
    with SampleStore.open_readonly(run_dir) as store:
        results = build_results(store)
    settings = [results["greedy"], *results["sampled"]]
    tokens = sum(s["completion_tokens"] for s in settings)
    seconds = sum(s["runtime"]["seconds"] for s in settings)
    wall = _wall_seconds(run_dir)
    return "\n".join([
        BEGIN,
        f"Wall time {_minutes(wall)}: {tokens:,} completion tokens at {tokens / seconds:.1f} tokens/s "
        f"(this machine, measured); at {SLOW_RATE:g} tokens/s the same run takes about "
        f"{_minutes(tokens / SLOW_RATE + (wall - seconds))}.",
        "",
        markdown_table(results).rstrip(),
        END,
    ])


def _replace(text: str, block: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[end:]


def keep(run_dir: Path) -> None:
    """A finished demo run into docs/demo-run: its store (one file, checkpointed), audit log and marker."""
    KEPT.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(run_dir / STORE_FILENAME) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for name in (STORE_FILENAME, "audit.jsonl", ".selfconsistency-run"):
        shutil.copyfile(run_dir / name, KEPT / name)
    with sqlite3.connect(KEPT / STORE_FILENAME) as db:  # one file: readers of the kept copy leave no -wal/-shm
        db.execute("PRAGMA journal_mode=DELETE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--write", action="store_true", help="put the block into README.md")
    parser.add_argument("--keep", action="store_true", help="copy the run into docs/demo-run first")
    args = parser.parse_args()
    run_dir = args.run_dir
    if args.keep:
        keep(run_dir)
        run_dir = KEPT
    block = demo_block(run_dir)
    if args.write:
        README.write_text(_replace(README.read_text(), block))
    else:
        sys.stdout.write(block + "\n")


if __name__ == "__main__":
    main()
