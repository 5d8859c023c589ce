"""Hostile LaTeX never hangs nor explodes: power and factorial towers, 10,000 nested braces, `\\def`, huge
answers and paths. Every parse and comparison has a time limit and a size limit; beyond them an answer is
its own string (a comparison: not the same), and the run counts how often that happened. The worker
process keeps the limits from any thread, and a worker stuck past its time is killed and replaced."""

import os
import signal
import threading
import time

import pytest

from selfconsistency.answer_classes import Classifier, beyond_limits
from selfconsistency.math_answers import math_answer, split_thinking
from selfconsistency.math_verifier import InProcess, Isolated, Verdict
from selfconsistency.store import SampleStore, StoredPath, StoredQuestion

SECONDS = 0.5
TOWERS = [r"2^{2^{2^{100}}}", r"((10!)!)!", r"9^{9^{9^{9}}}", r"10^{10^{10}}", r"(10^{7})!", r"\sqrt{10^{10^{9}}}"]
TOO_BIG = ["{" * 10_000 + "1" + "}" * 10_000, r"\def\x{\x}\x", r"\newcommand{\a}{\a}\a", "1" * 100_000,
           r"\frac{1}{2}+" * 5_000]


@pytest.fixture(scope="module")
def in_process():
    return InProcess(seconds=SECONDS)


@pytest.mark.parametrize("tower", TOWERS)
def test_a_tower_is_a_limit_within_its_time(in_process, tower):
    started = time.monotonic()
    assert in_process.compare(tower, "2") is Verdict.limit
    assert time.monotonic() - started < 4 * SECONDS + 1


@pytest.mark.parametrize("form", TOO_BIG, ids=["braces", "def", "newcommand", "digits", "long"])
def test_what_exceeds_the_size_limits_is_never_parsed(in_process, form):
    started = time.monotonic()
    assert not in_process.usable(form)
    assert in_process.compare(form, "1") is Verdict.limit
    assert form not in in_process._parsed  # refused before math-verify saw it
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("text", [
    r"\boxed{" * 200_000, "{" * 200_000 + r"\boxed{1}" + "}" * 200_000, "Final Answer: The final answer is " * 30_000,
    "The answer is " * 50_000, "<think>" * 100_000, "</think>" * 100_000 + r"\boxed{2}",
], ids=["open-boxes", "deep-braces", "minerva", "answer-is", "open-tags", "close-tags"])
def test_reading_a_hostile_path_takes_linear_time(text):
    started = time.monotonic()
    math_answer(split_thinking(text).visible)
    assert time.monotonic() - started < 2.0


def test_a_run_counts_the_limits_and_the_answers_stay_their_own_strings(tmp_path, in_process):
    forms = {"q": [r"\frac{1}{2}", "0.5", TOWERS[0], TOWERS[0], TOO_BIG[0], TOO_BIG[1]]}
    with SampleStore(tmp_path) as store:
        store.add_questions([StoredQuestion("q", 0, "?", "2")])
        for i, form in enumerate(forms["q"]):
            store.add_path(StoredPath("q", 0.7, i, i, "", form, 1, 1, 0.0, "stop", None, "b", "m"))
        Classifier(store, in_process).update(["q"], {"q": "2"})
        classes = store.answer_classes()["q"]
        limits = beyond_limits(store.equivalence_checks())
    assert classes[TOWERS[0]] == TOWERS[0] and classes[TOO_BIG[0]] == TOO_BIG[0] and classes[TOO_BIG[1]] == TOO_BIG[1]
    assert classes["0.5"] == classes[r"\frac{1}{2}"]
    assert limits["answers"] == 2  # the two forms beyond the size limits
    assert limits["comparisons"] >= 1  # the tower against the other keys and the gold


@pytest.mark.slow
def test_the_worker_keeps_the_limits_from_another_thread():
    verifier = Isolated(seconds=SECONDS, kill_after=1.0)
    try:
        verdicts = []
        worker = threading.Thread(target=lambda: verdicts.extend(
            [verifier.compare(r"\frac{1}{2}", "0.5"), *(verifier.compare(t, "2") for t in TOWERS),
             *(verifier.compare(f, "1") for f in TOO_BIG)]))
        started = time.monotonic()
        worker.start()
        worker.join(120)
        assert not worker.is_alive()
        assert verdicts == [Verdict.same] + [Verdict.limit] * (len(TOWERS) + len(TOO_BIG))
        assert time.monotonic() - started < 60
    finally:
        verifier.close()


@pytest.mark.slow
def test_a_worker_that_stops_answering_is_killed_and_replaced():
    verifier = Isolated(seconds=SECONDS, kill_after=0.5)
    try:
        assert verifier.compare("1", "1.0") is Verdict.same  # started, imports done
        stuck = verifier._proc
        os.kill(stuck.pid, signal.SIGSTOP)  # as if stuck inside a C computation the timer cannot stop
        started = time.monotonic()
        assert verifier.compare("2", "2.0") is Verdict.limit
        assert time.monotonic() - started < 3 * SECONDS + 0.5 + 2
        assert stuck.poll() is not None and verifier.restarts == 1
        assert verifier.compare("3", "3.0") is Verdict.same  # a new worker
    finally:
        verifier.close()
