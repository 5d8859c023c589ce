"""`collector_paused`: the cyclic garbage collector off while many short-lived Python objects are alive."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block. A report of a seed-size run holds 680,000 path rows,
    a batch plan or output hundreds of thousands of records: every burst of allocations would make the
    collector traverse all of them again (a second or more), and none of that work makes reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
