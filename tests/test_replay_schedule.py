"""bench/replay_schedule.py: the slot schedule bench/local_throughput.py's replay ceiling decodes."""

import importlib.util
import random
from pathlib import Path

import llama_cpp
import numpy as np

from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.llama_batched import BatchedDecoder
from selfconsistency.prompts import Prompt, PromptFormat
from selfconsistency.sampling import SamplingParams

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


class _RecordingDecoder(BatchedDecoder):
    """The engine's scheduling with llama.cpp's decode and context recorded instead of run."""

    def __init__(self, backend, n_slots: int, trace: list):
        super().__init__(backend, n_slots)
        self.trace = trace

    def _ensure_context(self, n_ctx: int) -> None:
        self._n_ctx, self._memory = 1 << 30, "memory"

    def _decode(self, entries) -> None:  # the token left out: the replay feeds a fixed one
        self.trace.append(("decode", tuple((position, seq, logits) for _, position, seq, logits in entries)))

    def _logits(self, row: int) -> np.ndarray:
        return np.zeros(4, np.float32)

    def _all_logits(self, rows: int) -> np.ndarray:
        return np.zeros((rows, 4), np.float32)


class _PathOfKnownLength:
    """A path that ends after `pushes` sampled tokens (1: on the token sampled from its question's logits)."""

    def __init__(self, request, pushes: int):
        self.request, self.left, self.pushes, self.seconds = request, pushes, 0, 0.0

    def push(self, logits, normalizer=None):
        self.pushes += 1
        self.left -= 1
        return None if self.left == 0 else 7

    def result(self):
        return self


class _Backend:
    threads, verbose = 1, False

    def __init__(self, n_slots: int, split: dict, pushes: dict, trace: list):
        self.batch_size, self.split, self.pushes, self.made = n_slots, split, pushes, []
        self._batched = _RecordingDecoder(self, n_slots, trace)

    def tokens(self, prompt):
        return self.split[prompt.question]

    def path_decoder(self, request, n_prompt):
        self.made.append(_PathOfKnownLength(request, self.pushes[(request.question_id, request.path_index)]))
        return self.made[-1]


def test_the_replay_makes_the_engines_own_cache_operations_and_decodes(monkeypatch):
    """The replay ceiling does the engine's attention work, no less: over random jobs, the engine's
    scheduler (BatchedDecoder.generate) and the bench's replay of it make the same KV-cache operations and
    the same llama_decode calls (positions, sequences, logits wanted), in the same order."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import local_throughput

    trace: list = []
    monkeypatch.setattr(llama_cpp, "llama_memory_clear", lambda memory, data: trace.append(("clear",)))
    monkeypatch.setattr(llama_cpp, "llama_memory_seq_rm", lambda memory, seq, start, end: trace.append(
        ("rm", seq, start, end)))
    monkeypatch.setattr(llama_cpp, "llama_memory_seq_cp", lambda memory, source, target, start, end: trace.append(
        ("cp", source, target, start, end)))
    rng = random.Random(3)
    for _ in range(200):
        shared = list(range(rng.randint(1, 30)))
        split, requests, pushes = {}, [], {}
        for q in range(rng.randint(1, 4)):
            split[f"q{q}"] = (shared, [100 + q] * rng.randint(1, 20))
            for index in range(rng.randint(1, 5)):
                requests.append(GenerationRequest(f"q{q}", 0.7, index,
                                                  Prompt("s", f"q{q}", (), PromptFormat.completion),
                                                  SamplingParams(temperature=0.7, max_tokens=50)))
                pushes[(f"q{q}", index)] = rng.choice([1, 1, 2, 3, 5, 9, 20])
        backend = _Backend(rng.randint(1, 5), split, pushes, trace)
        trace.clear()
        list(backend._batched.generate(requests, [split[r.question_id] for r in requests]))
        engine = list(trace)
        assert [path.request for path in backend.made] == requests
        trace.clear()
        backend._batched._shared = backend._batched._question = None
        local_throughput.replay(backend, requests, [path.pushes - 1 for path in backend.made], 0)
        assert trace == engine
