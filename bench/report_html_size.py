"""report.html at the seed's scale: 7,473 questions x (greedy + 30 paths), from a synthetic run.

No model runs: a stand-in backend writes each path as a GSM8K reference explanation (from
data/gsm8k/test.jsonl, chosen per path's seed) ending in "The answer is N.", right 60 % of the time.
Prints the time `write_report` takes, the sizes of samples.sqlite and report.html (and gzipped), the
mean path length, and with --browser the time headless chromium takes to open the page and to apply a
filter.

    .venv/bin/python bench/report_html_size.py /tmp/seed-size --browser
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.settings import RunSettings

GSM8K = Path(__file__).resolve().parents[1] / "data" / "gsm8k" / "test.jsonl"


class ExplanationBackend:
    name = "explanations"

    def __init__(self, model: str, explanations: list[tuple[str, str]]):
        self.model = model
        self.explanations = explanations

    def generate(self, requests):
        for request in requests:
            rng = np.random.default_rng(request.params.seed)
            text, answer = self.explanations[int(rng.integers(len(self.explanations)))]
            if rng.random() > 0.6:
                answer = str(int(rng.integers(1, 100)))
            yield Generation(request, f"{text}\nThe answer is {answer}.", 180, 110, 0.01, "stop", -25.0)

    def close(self):
        pass


def seed_sized_data(target: Path, questions: int) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    with target.open("w") as fh:
        for record in itertools.islice(itertools.cycle(records), questions):
            fh.write(json.dumps(record) + "\n")
    return [tuple(r["answer"].rsplit("\n#### ", 1)) for r in records]


def browser_timings(page: Path) -> tuple[float, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        started = time.perf_counter()
        driver.get(page.resolve().as_uri())  # returns once the load event fired (the table is rendered)
        opened = time.perf_counter() - started
        assert len(driver.find_elements(By.CSS_SELECTOR, "#questions tbody tr")) == 100
        started = time.perf_counter()
        Select(driver.find_element(By.ID, "filter")).select_by_value("wrong")
        driver.find_element(By.ID, "summary").text  # noqa: B018 (waits for the handler to finish)
        filtered = time.perf_counter() - started
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return opened, filtered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--questions", type=int, default=7473)
    parser.add_argument("--paths", type=int, default=30)
    parser.add_argument("--browser", action="store_true", help="also time opening and filtering in chromium")
    args = parser.parse_args()

    args.run_dir.mkdir(parents=True, exist_ok=True)
    data = args.run_dir / "questions.jsonl"
    explanations = seed_sized_data(data, args.questions)
    register_backend("explanations", lambda config: ExplanationBackend(config.model, explanations))
    config = RunSettings(data=str(data), backend="explanations", model="synthetic", paths=args.paths,
                       temperatures=(0.7,), subset_runs=10)
    run_experiment(config, args.run_dir / "run")
    started = time.perf_counter()
    write_report(args.run_dir / "run")
    seconds = time.perf_counter() - started
    page = args.run_dir / "run" / "report.html"
    html = page.read_bytes()
    mean_chars = np.mean([len(text) + len(f"\nThe answer is {answer}.") for text, answer in explanations])
    print(f"{args.questions:,} questions x (greedy + {args.paths} paths), paths ~{mean_chars:.0f} characters")
    print(f"write_report: {seconds:.1f} s")
    print(f"samples.sqlite: {(args.run_dir / 'run' / 'samples.sqlite').stat().st_size / 1e6:.1f} MB")
    print(f"report.html: {len(html) / 1e6:.1f} MB ({len(gzip.compress(html)) / 1e6:.1f} MB gzipped)")
    if args.browser:
        opened, filtered = browser_timings(page)
        print(f"chromium: opened in {opened:.1f} s, 'vote wrong' filter applied in {filtered:.2f} s")


if __name__ == "__main__":
    main()
