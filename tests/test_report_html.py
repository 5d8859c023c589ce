"""report.html: built from a run's store, self-contained, and safe with model output that looks like HTML.

The browser tests drive Debian's chromium through Selenium and skip, saying why, where it is missing.
"""

import json
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import GSM8K_TEST, ScriptedBackend
from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation
from selfconsistency.experiment import run_experiment
from selfconsistency.report import write_report
from selfconsistency.report_html import render_page, script_json
from selfconsistency.settings import RunSettings

HOSTILE = ("Let me see. <script>window.pwned = 1;</script> and </script><!--<script> "
           "<img src=x onerror=\"window.pwned = 2\"> & done.")


ABSTAINS = ("test-00002", 0.7, 0)  # this path gives no answer (its question's other paths all say 18)


class HostileBackend(ScriptedBackend):
    """The scripted answers, with path text that would run script if a page put it in as HTML."""

    def generate(self, requests):
        for generation in super().generate(requests):
            request = generation.request
            text = "No idea." if (request.question_id, request.temperature, request.path_index) == ABSTAINS \
                else f"{HOSTILE} {generation.text}"
            yield Generation(request, text, 100, 8, 0.01, "stop", -2.5)


def make_run(run_dir: Path, questions: int, paths: int = 5) -> Path:
    register_backend("hostile", lambda config: HostileBackend(config.model))
    config = RunSettings(data=str(GSM8K_TEST), limit=questions, backend="hostile", model="scripted-model",
                       paths=paths, temperatures=(0.7,), subset_runs=5)
    run_experiment(config, run_dir)
    write_report(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("html-run"), questions=12)


def expected_votes(run_dir: Path) -> dict[str, tuple[str, str, str, float]]:
    """question id -> (gold, greedy answer, majority answer, its share of the paths), from SQL alone."""
    db = sqlite3.connect(run_dir / "samples.sqlite")
    try:
        golds = dict(db.execute("SELECT id, gold FROM questions"))
        out = {}
        for qid, gold in golds.items():
            greedy = db.execute("SELECT answer FROM paths WHERE question_id = ? AND temperature = 0",
                                (qid,)).fetchone()[0]
            sampled = [a for (a,) in db.execute("SELECT answer FROM paths WHERE question_id = ? AND temperature > 0",
                                                (qid,))]
            (top, count), *rest = Counter(a for a in sampled if a is not None).most_common()
            assert not rest or rest[0][1] < count  # 5 paths, two answers: never a tie
            out[qid] = (gold, greedy, top, count / len(sampled))
        return out
    finally:
        db.close()


class PageParser(HTMLParser):
    """The page's scripts, their attributes, and any attribute that could load something."""

    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self.loads: list[tuple[str, str, str]] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("src", "href"):
            if name in attributes:
                self.loads.append((tag, name, attributes[name]))
        if tag == "script":
            self._in_script = attributes
            self.scripts.append((attributes, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attributes, text = self.scripts[-1]
            self.scripts[-1] = (attributes, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def page_data(html: str) -> tuple[PageParser, dict]:
    parser = PageParser()
    parser.feed(html)
    blobs = [text for attributes, text in parser.scripts if attributes.get("type") == "application/json"]
    assert len(blobs) == 1
    return parser, json.loads(blobs[0])


def test_script_json_cannot_close_or_comment_out_its_element():
    value = {"text": "</script><!--<script>a && b > c</SCRIPT >"}
    encoded = script_json(value)
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded
    assert json.loads(encoded) == value


def test_script_json_writes_what_json_dumps_wrote():
    """The page's JSON comes from msgspec now: the same bytes as json.dumps(ensure_ascii=False, compact)
    gave, escapes included; floats the page never holds at realistic settings (below 1e-4, from 1e16)
    are spelled otherwise but parse to the same number."""
    import random

    rng = random.Random(7)
    text = "".join(map(chr, range(0x80))) + "\u2028\u2029\u0085\ufeff é 中 \U0001f600 \\ \" </script>"
    value = {"temperatures": [0.5, 0.7, 1.0, 1.3], "questions": [
        {"id": text, "votes": [{"counts": [["18", 3], [text, 2]], "agreement": round(rng.random(), 4),
                                "tie": False, "correct": None}],
         "paths": [(0.7, i, None, round(rng.uniform(-400, 0), 3), "stop", i * 7, text) for i in range(200)]}]}
    before = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert script_json(value) == before.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    odd = [1e-05, -3.2e-07, 1e16, -4.5e20, 5e-324, 1.7976931348623157e308]
    assert json.loads(script_json(odd)) == odd


def paths_of(data: dict, question: dict) -> list[list]:
    """A question's path rows: its [first row, count] of the page's `paths`."""
    first, count = question["paths"]
    return data["paths"][first: first + count]


def test_page_holds_every_question_and_path_as_data_not_markup(small_run):
    html = (small_run / "report.html").read_text(encoding="utf-8")
    parser, data = page_data(html)
    # exactly the two scripts of the template: the data blob and the page's code; no path text became one
    assert [attributes.get("type") for attributes, _ in parser.scripts] == ["application/json", None]
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    # nothing is fetched: the only loadable attribute is the inlined plot
    assert [(tag, name) for tag, name, _ in parser.loads] == [("img", "src")]
    assert parser.loads[0][2].startswith("data:image/png;base64,")
    expected = expected_votes(small_run)
    assert [q["id"] for q in data["questions"]] == sorted(expected)
    for question in data["questions"]:
        gold, greedy, top, _ = expected[question["id"]]
        vote = question["votes"][0]
        assert (question["gold"], question["greedy"]["answer"], vote["answer"]) == (gold, greedy, top)
        assert vote["correct"] == (top == gold) and vote["paths_used"] == 5
        texts = [p[6] for p in paths_of(data, question)]
        assert len(texts) == 6 and sum(not t.startswith(HOSTILE) for t in texts) == (question["id"] == ABSTAINS[0])


class NearTieBackend(ScriptedBackend):
    """Log-prob sums like -1.2345, whose decimal rounding SQLite's round() and Python's round() disagree on."""

    def generate(self, requests):
        for generation in super().generate(requests):
            yield Generation(generation.request, generation.text, 100, 8, 0.01, "stop",
                             -1.2345 - generation.request.path_index / 10)


def test_page_carries_the_stored_log_probs_and_only_the_selected_questions(tmp_path):
    """Each path row holds its stored log-prob as it is (a rounding by SQLite once showed -1.235 for
    -1.2345, whose binary value is below the tie); a rerun narrowed to fewer questions ships only theirs."""
    register_backend("near-tie", lambda config: NearTieBackend(config.model))
    config = dict(data=str(GSM8K_TEST), backend="near-tie", model="scripted-model", paths=3, temperatures=(0.7,),
                  subset_runs=5)
    run_experiment(RunSettings(limit=3, **config), tmp_path)
    run_experiment(RunSettings(limit=2, **config), tmp_path)  # the store keeps the third question's paths
    write_report(tmp_path)
    _, data = page_data((tmp_path / "report.html").read_text(encoding="utf-8"))
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    try:
        stored = {(qid, t, i): logprob for qid, t, i, logprob in
                  db.execute("SELECT question_id, temperature, path_index, logprob_sum FROM paths")}
    finally:
        db.close()
    assert len({qid for qid, _, _ in stored}) == 3
    shown = {(q["id"], p[0], p[1]): p[3] for q in data["questions"] for p in paths_of(data, q)}
    assert {qid for qid, _, _ in shown} == {"test-00000", "test-00001"}
    assert len(data["paths"]) == len(shown) == 2 * 4
    assert shown == {key: value for key, value in stored.items() if key in shown}
    assert -1.2345 in shown.values()


@pytest.mark.slow  # a process with a file-size limit (rlimit)
def test_a_report_the_disk_refuses_is_one_line_and_keeps_the_old_page(tmp_path):
    """A full disk (here a file-size limit: the same OSError path) while `report` writes: one line, exit 2,
    the old report.html kept, nothing half-written left behind, the store untouched."""
    import resource
    import signal
    import subprocess
    import sys

    run_dir = make_run(tmp_path / "run", questions=3)
    old_page = (run_dir / "report.html").read_bytes()
    before = sorted(p.name for p in run_dir.iterdir())

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(old_page) // 2, len(old_page) // 2))

    proc = subprocess.run([sys.executable, "-m", "selfconsistency", "report", str(run_dir)], capture_output=True,
                          text=True, timeout=120, preexec_fn=small_files, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot write the report in ") and "File too large" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (run_dir / "report.html").read_bytes() == old_page
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_names_from_settings_and_jobs_are_escaped(small_run):
    results = json.loads((small_run / "results.json").read_text())
    results["model"] = results["config"]["model"] = "<script>window.pwned = 3</script>"
    results["batch_jobs"] = [{"job": "<b>job</b>", "status": "Completed", "records": 1, "paths": 5,
                              "input_tokens": None, "output_tokens": 10, "runtime": {"seconds": None}}]
    html = render_page(results, {"temperatures": [], "questions": [], "paths": []}, None)
    parser, data = page_data(html)
    assert len(parser.scripts) == 2 and data["questions"] == []
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned = 3&lt;/script&gt;" in html
    assert "&lt;b&gt;job&lt;/b&gt;" in html


@pytest.mark.model
def test_report_html_of_a_real_run_lists_its_questions(reference_run):
    """The 0.5B reference run: the page's question table holds the stored questions and path texts."""
    _, data = page_data((reference_run / "report.html").read_text(encoding="utf-8"))
    db = sqlite3.connect(reference_run / "samples.sqlite")
    try:
        questions = db.execute("SELECT id, question, gold FROM questions ORDER BY position").fetchall()
        texts = {(qid, t, i): text for qid, t, i, text in
                 db.execute("SELECT question_id, temperature, path_index, text FROM paths")}
    finally:
        db.close()
    assert [(q["id"], q["question"], q["gold"]) for q in data["questions"]] == questions
    assert {(q["id"], p[0], p[1]): p[6] for q in data["questions"] for p in paths_of(data, q)} == texts
    assert all(q["complete"] and q["votes"][0]["paths_used"] == 3 for q in data["questions"])


# -- in a real browser ---------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    profile = tempfile.mkdtemp(prefix="sc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser, run_dir: Path):
    from selenium.webdriver.common.by import By

    browser.get((run_dir / "report.html").resolve().as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    return lambda css: browser.find_elements(By.CSS_SELECTOR, css)


def shown_ids(find) -> list[str]:
    return [row.get_attribute("data-id") for row in find("#questions tbody tr")]


@pytest.mark.slow
def test_browser_table_filter_and_paths(browser, small_run):
    from selenium.webdriver.support.ui import Select

    find = open_page(browser, small_run)
    expected = expected_votes(small_run)
    assert shown_ids(find) == sorted(expected)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    Select(find("#filter")[0]).select_by_value("wrong")
    wrong = sorted(qid for qid, (gold, _, top, _) in expected.items() if top != gold)
    assert 0 < len(wrong) < len(expected)
    assert shown_ids(find) == wrong
    Select(find("#filter")[0]).select_by_value("greedy-wrong-vote-right")
    assert shown_ids(find) == sorted(qid for qid, (gold, greedy, top, _) in expected.items()
                                     if greedy != gold and top == gold)
    Select(find("#filter")[0]).select_by_value("abstained")
    assert shown_ids(find) == [ABSTAINS[0]]
    Select(find("#filter")[0]).select_by_value("low")
    find("#low")[0].clear()
    find("#low")[0].send_keys("0.7")
    low = sorted(qid for qid, (_, _, _, share) in expected.items() if share < 0.7)
    assert 0 < len(low) < len(expected) and shown_ids(find) == low

    Select(find("#filter")[0]).select_by_value("all")
    find("#questions tbody tr")[1].click()
    assert find("#detail-title")[0].text == f"Question {sorted(expected)[1]}"
    paths = find("#detail-paths pre")
    assert len(paths) == 6
    assert all(pre.text.startswith(HOSTILE) for pre in paths)  # shown as text, markup and all
    headings = [h.text for h in find("#detail-paths h4")]
    assert headings[0].startswith("greedy (T=0): answer ") and "log-prob -2.50" in headings[0]
    assert browser.execute_script("return window.pwned") is None  # nothing in a path ran
    assert browser.execute_script("return document.scripts.length") == 2
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.mark.slow
def test_browser_pages_through_more_than_a_page(browser, tmp_path):
    find = open_page(browser, make_run(tmp_path / "run", questions=130, paths=3))
    first = shown_ids(find)
    assert len(first) == 100 and "1–100 of 130" in find("#summary")[0].text
    find("#next")[0].click()
    second = shown_ids(find)
    assert len(second) == 30 and not set(first) & set(second)
    assert find("#next")[0].get_attribute("disabled") is not None


@pytest.mark.model
def test_browser_opens_the_real_runs_report(browser, reference_run):
    """The acceptance check on the 0.5B reference run: its table, the 'vote wrong' filter, a path's text."""
    from selenium.webdriver.support.ui import Select

    db = sqlite3.connect(reference_run / "samples.sqlite")
    try:
        golds = dict(db.execute("SELECT id, gold FROM questions"))
        rows = db.execute("SELECT question_id, temperature, path_index, text, answer FROM paths "
                          "ORDER BY question_id, temperature, path_index").fetchall()
    finally:
        db.close()
    find = open_page(browser, reference_run)
    assert shown_ids(find) == sorted(golds)

    wrong, undecided = set(), set()  # undecided: gold tied for the lead, the seeded tie-break decides
    for qid, gold in golds.items():
        counts = Counter(answer for q, t, _, _, answer in rows if q == qid and t > 0 and answer is not None)
        top = max(counts.values(), default=0)
        if counts.get(gold, 0) < top or top == 0:
            wrong.add(qid)
        elif sum(c == top for c in counts.values()) > 1:
            undecided.add(qid)
    Select(find("#filter")[0]).select_by_value("wrong")
    assert set(shown_ids(find)) - undecided == wrong

    Select(find("#filter")[0]).select_by_value("all")
    find("#questions tbody tr")[0].click()
    first = sorted(golds)[0]
    shown = [pre.get_attribute("textContent") for pre in find("#detail-paths pre")]
    assert shown == [text for q, _, _, text, _ in rows if q == first]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
