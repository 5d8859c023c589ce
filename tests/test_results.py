"""The report's computation (results.py, frontier.py) runs without the plotting library."""

import subprocess
import sys

COMPUTE_WITHOUT_MATPLOTLIB = """
import sys
from pathlib import Path

from selfconsistency.frontier import stored_frontier
from selfconsistency.results import build_results
from selfconsistency.store import SampleStore, StoredPath, StoredQuestion

run_dir = Path(sys.argv[1])
config = {"task": "gsm8k", "backend": "local", "model": "m", "greedy": True, "temperatures": [0.7],
          "paths": 4, "subset_runs": 5, "seed": 0}
with SampleStore(run_dir) as store:
    store.bind_config({"task": "gsm8k"}, config)
    ids = ["test-00000", "test-00001"]
    store.add_questions(StoredQuestion(qid, i, f"q{i}", "1") for i, qid in enumerate(ids))
    store.set_selection(ids)
    for i, qid in enumerate(ids):
        store.add_path(StoredPath(qid, 0.0, 0, 0, "The answer is 1.", "1", 10, 5, 0.1, "stop", -1.0, "local", "m"))
        for j in range(4):
            answer = "1" if i == 0 else str(j % 2)
            store.add_path(StoredPath(qid, 0.7, j, j, f"The answer is {answer}.", answer, 10, 5, 0.1, "stop",
                                      -1.0, "local", "m"))
    results = build_results(store)
frontier = stored_frontier(run_dir, 0.7, ["beta:0.95", "fixed:2"], runs=5)
assert results["greedy"]["accuracy"] == 1.0 and results["sampled"][0]["curve"][-1]["k"] == 4
assert results["sampled"][0]["weighted_votes"], "weighted votes computed"
assert [r.rule for r in frontier.rules] == ["beta:0.95", "fixed:2"] and frontier.paths == 4
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib")
assert not loaded, loaded
print("ok")
"""


def test_results_and_frontier_are_computed_without_matplotlib(tmp_path):
    # A fresh interpreter: this test process may have imported matplotlib already.
    proc = subprocess.run([sys.executable, "-c", COMPUTE_WITHOUT_MATPLOTLIB, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "results.json").exists()  # computed, not written
