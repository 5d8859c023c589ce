"""bench/replay_schedule.py: the slot schedule bench/local_throughput.py's replay ceiling decodes."""

import importlib.util
import random
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "replay_schedule", Path(__file__).resolve().parents[1] / "bench" / "replay_schedule.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
replay_schedule = _module.replay_schedule


def test_paths_take_freed_slots_at_once_in_work_order():
    # Path 1 ends after one step, so path 2 takes its slot 2 before step 1; path 3 ended on its first
    # sampled token (no step) and takes no slot; path 4 takes slot 2, the last freed.
    assert replay_schedule([3, 1, 2, 0, 2], 2) == [
        ([(0, 1), (1, 2)], [(1, 0, 0), (2, 1, 0)]),
        ([(2, 2)], [(1, 0, 1), (2, 2, 0)]),
        ([], [(1, 0, 2), (2, 2, 1)]),
        ([(3, None), (4, 2)], [(2, 4, 0)]),
        ([], [(2, 4, 1)]),
    ]


def test_paths_without_steps_after_the_last_step_are_still_taken():
    # The engine still opens their question (prompt work) after the last step.
    assert replay_schedule([1, 0], 1) == [([(0, 1)], [(1, 0, 0)]), ([(1, None)], [])]


def test_each_path_decodes_its_steps_in_one_slot_and_the_batch_stays_full_while_paths_wait():
    rng = random.Random(7)
    steps_per_path = [rng.choice([0, 1, 5, 40, 256]) for _ in range(60)]
    n_slots = 8
    schedule = replay_schedule(steps_per_path, n_slots)
    seen: dict[int, list[tuple[int, int, int]]] = {}
    taken_so_far = 0
    for index, (taken, rows) in enumerate(schedule):
        taken_so_far += len(taken)
        slots = [slot for slot, _, _ in rows]
        assert slots == sorted(set(slots)) and len(rows) <= n_slots
        if taken_so_far < len(steps_per_path):  # paths still wait: no slot idles
            assert len(rows) == n_slots
        for slot, path, done in rows:
            seen.setdefault(path, []).append((index, slot, done))
    assert [path for taken, _ in schedule for path, _ in taken] == list(range(len(steps_per_path)))
    for path, steps in enumerate(steps_per_path):
        visits = seen.get(path, [])
        assert [done for _, _, done in visits] == list(range(steps))
        if visits:  # consecutive steps, one slot
            assert [index for index, _, _ in visits] == list(range(visits[0][0], visits[0][0] + steps))
            assert len({slot for _, slot, _ in visits}) == 1
