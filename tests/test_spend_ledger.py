"""The durable spend ledger of backends called request by request: each paid request's worst case is booked
in the run's store before it is sent, so that a run killed with requests in flight (paid to the provider,
never stored) counts them when it resumes, and --max-cost holds across SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import GSM8K_TEST, cli, run_cli, stored_rows
from selfconsistency.costs import PriceTable
from selfconsistency.store import SampleStore, StoredPath

MODEL, AMOUNT = "claude-haiku-4-5", 0.05


def _path(index: int, prompt: int, output: int, temperature: float = 0.7) -> StoredPath:
    return StoredPath("q", temperature, index, index, "The answer is 1.", "1", prompt, output, 0.1, "stop", None,
                      "anthropic", MODEL)


def test_a_resumed_run_counts_the_bookings_a_kill_left_open(tmp_path):
    """The resume arithmetic: stored paths at their usage; a request never answered at its booked worst
    case; one answered at its usage beyond the paths stored; a closed booking not at all; and bookings
    marked killed stay counted, frozen, whatever is stored later (the same path bought again)."""
    with SampleStore(tmp_path) as store:
        ledger = store.ledger("anthropic")
        settled = ledger.book([("q", 0.7, 0)], 100, 512)
        ledger.answered(settled, 90, 40)
        store.add_paths([_path(0, 90, 40)])  # its path stored: the booking closes in that transaction
        ledger.book([("q", 0.7, 1)], 100, 512)  # sent, never answered: killed in flight
        answered = ledger.book([("q", 0.7, 2), ("q", 0.7, 3)], 100, 1024)  # two paths of one call
        ledger.answered(answered, 80, 60)
        store.add_paths([_path(2, 80, 25)])  # one of its paths stored, then the kill
        cancelled = ledger.book([("q", 0.7, 4)], 100, 512)
        ledger.cancel(cancelled)  # failed unbilled
        assert store.tokens_used() == (90 + 80 + 100 + 0, 40 + 25 + 512 + 35)
    with SampleStore(tmp_path) as store:  # the next run
        killed = store.mark_killed_bookings()
        assert (killed.requests, killed.unanswered, killed.prompt_tokens, killed.output_tokens) == (2, 1, 100, 547)
        store.add_paths([_path(1, 95, 30), _path(3, 0, 33)])  # bought again by the resumed run
        assert store.tokens_used() == (90 + 80 + 95 + 100, 40 + 25 + 30 + 33 + 547)
        assert store.mark_killed_bookings().requests == 0  # nothing new
        assert store.unsettled().requests == 2


def test_a_store_of_the_previous_version_opens_and_gains_the_ledger(tmp_path):
    import sqlite3

    from selfconsistency import store as store_module

    db = sqlite3.connect(tmp_path / "samples.sqlite", isolation_level=None)
    for number, script in enumerate(store_module._MIGRATIONS[:-1], start=1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    db.close()
    with SampleStore(tmp_path) as store:
        assert store.tokens_used() == (0, 0) and store.unsettled().requests == 0


def _kill_after(args: list[str], run_dir, at_least: int) -> None:
    """Start the CLI and SIGKILL it once `at_least` paths are stored (and a moment more: requests in flight)."""
    proc = subprocess.Popen([sys.executable, "-m", "selfconsistency", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "samples.sqlite").exists() and len(stored_rows(run_dir)) >= at_least:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _billed(emulator) -> float:
    price = PriceTable().price(MODEL)
    return sum(price.cost(b["input"], b["output"]) for b in emulator.billed)


def _run_args(run_dir) -> list[str]:
    return ["run", "gsm8k", "--data", str(GSM8K_TEST), "--backend", "anthropic", "--model", MODEL,
            "--prompt-format", "chat", "--limit", "8", "--paths", "10", "--temperatures", "0.5,0.7",
            "--allocate", "blend-asc", "--max-cost", str(AMOUNT), "--wave-paths", "3", "--concurrency", "2",
            "--run-dir", str(run_dir)]


def _stored_cost(run_dir) -> float:
    price = PriceTable().price(MODEL)
    with SampleStore.open_readonly(run_dir) as store:
        return sum(price.cost(p.prompt_tokens, p.completion_tokens) for p in store.paths(text=False))


def _reported_cost(run_dir) -> float:
    results = json.loads((run_dir / "results.json").read_text())
    return sum(setting["cost_usd"] for setting in [results["greedy"], *results["sampled"]])


@pytest.mark.slow  # the CLI as a process, SIGKILLed
def test_max_cost_holds_across_sigkill_with_requests_in_flight(anthropic_api, tmp_path):
    """The reviewer's run, with slow answers so that every kill lands with requests in flight (billed by the
    emulator, never stored): killed three times and resumed, the dollars the emulator was asked for never
    pass --max-cost; the report's cost is the stored paths'; a run never killed stores as valid a result."""
    emulator, _ = anthropic_api
    emulator.faults.message_delay_s = 0.4
    whole = tmp_path / "whole"
    done = cli(*_run_args(whole))
    assert done.returncode == 0, done.stderr
    uninterrupted = _billed(emulator), emulator.message_calls, len(stored_rows(whole))
    assert uninterrupted[0] <= AMOUNT
    assert abs(_reported_cost(whole) - _stored_cost(whole)) < 1e-5

    emulator.billed.clear()
    emulator.message_calls = 0
    killed = tmp_path / "killed"
    for more in (26, 6, 6):  # the first wave (8 greedy + 16 first paths) and more, then a few paths more each time
        _kill_after(_run_args(killed), killed, (len(stored_rows(killed)) if killed.exists() else 0) + more)
        with SampleStore.open_readonly(killed) as store:
            assert _billed(emulator) <= AMOUNT
            open_bookings = store.unsettled().requests
        assert open_bookings > 0  # the kill left requests in flight: what this test is about
    done = cli(*_run_args(killed))
    assert done.returncode == 0, done.stderr
    assert "unsettled at a kill, counted at their worst case" in done.stderr
    billed, calls, stored = _billed(emulator), emulator.message_calls, len(stored_rows(killed))
    print(f"uninterrupted: {uninterrupted[1]} calls, {uninterrupted[2]} paths, ${uninterrupted[0]:.4f}; "
          f"killed 3 times: {calls} calls, {stored} paths, ${billed:.4f} billed of ${AMOUNT}")
    assert billed <= AMOUNT
    assert calls > stored  # requests paid for and lost at the kills
    assert abs(_reported_cost(killed) - _stored_cost(killed)) < 1e-5  # the report: the stored paths' cost
    with SampleStore.open_readonly(killed) as store:
        assert store.unsettled().requests >= 3
    report = run_cli("report", str(killed))
    assert report.returncode == 0, report.stderr


def test_an_amount_too_small_for_the_first_wave_on_demand_is_refused_before_the_run_directory(anthropic_api,
                                                                                               tmp_path):
    """--allocate with --max-cost on a backend called request by request: an amount that cannot pay the
    first wave (the greedy paths and every question's first path, at their worst case) is refused in one
    line before anything is sent or the run directory is made."""
    emulator, _ = anthropic_api
    for amount in ("0.0001", "0.005"):
        run_dir = tmp_path / f"run-{amount}"
        result = run_cli(*[a if a != str(AMOUNT) else amount for a in _run_args(run_dir)])
        assert result.returncode == 2, result.stderr
        assert "cannot pay the first wave" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not run_dir.exists()
    assert emulator.message_calls == 0
