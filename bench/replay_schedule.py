"""The batched engine's slot schedule for a job whose path lengths are known (bench/local_throughput.py's
replay ceiling). Pure Python, no model: it mirrors `BatchedDecoder.generate`'s scheduling — paths taken
in work order, slot 1 first, a path that needs no decode step (it ended on the token sampled from its
question's logits) takes no slot, a freed slot taking the next path before the next step, freed slots
reused last-freed first. Not modelled: the engine lets running paths finish before it starts a path
whose prompt begins with another shared block (exemplar set) than theirs; the bench's job has one."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

# One step: the paths taken before it, in work order, each with its slot (None: it needed no decode
# step), then the step's rows in batch order: (slot, path, how many steps that path decoded before).
Step = tuple[list[tuple[int, int | None]], list[tuple[int, int, int]]]


def replay_schedule(steps_per_path: Sequence[int], n_slots: int) -> list[Step]:
    """The engine's steps for paths that decode `steps_per_path[i]` steps each, on `n_slots` slots."""
    pending = deque(range(len(steps_per_path)))
    running: dict[int, tuple[int, int]] = {}  # slot -> (path, steps it decoded so far)
    free = list(range(n_slots, 0, -1))
    schedule: list[Step] = []
    while pending or running:
        taken: list[tuple[int, int | None]] = []
        while free and pending:
            path = pending.popleft()
            if steps_per_path[path] == 0:
                taken.append((path, None))
                continue
            slot = free.pop()
            running[slot] = (path, 0)
            taken.append((path, slot))
        rows = [(slot, *running[slot]) for slot in sorted(running)]
        schedule.append((taken, rows))
        for slot, path, done in rows:
            if done + 1 == steps_per_path[path]:
                del running[slot]
                free.append(slot)
            else:
                running[slot] = (path, done + 1)
    return schedule
