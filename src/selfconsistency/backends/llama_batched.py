"""Continuous batched decoding for the embedded backend.

Many paths decode together: each `llama_decode` step feeds one token for every busy slot. The shared
exemplar block is evaluated once (sequence 0), each question's own tokens once on top of it (the
question sequence), and a path starts by copying the question's cells into its slot's sequence — with a
unified KV cache the copy only tags cells, it moves no data. When a path ends, its slot takes the next
pending path, of the same question or the next one, so the batch stays full.

Requests are taken in order and a question's paths are contiguous in it, so one question sequence is
enough: the next question's prompt replaces it once every path of the previous one has its slot.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..sampling import log_normalizers
from .base import BackendError, Generation, GenerationRequest

if TYPE_CHECKING:
    from .llama_cpp import LlamaCppBackend, PathDecoder, TokenFeed

SHARED_SEQ = 0
_ROUNDING = 256


def tokens_needed(n_slots: int, shared_tokens: int, rest_tokens: int, new_tokens: int) -> int:
    """The cache cells the worst case takes: the shared block, a question prompt per slot plus the open
    one, a full path per slot."""
    return shared_tokens + (n_slots + 1) * rest_tokens + n_slots * (new_tokens + 1)


def context_size(tokens: int) -> int:
    """The context made for `tokens` cells, rounded up (a job of slightly other prompts reuses it)."""
    return -(-tokens // _ROUNDING) * _ROUNDING


class BatchedDecoder:
    def __init__(self, backend: LlamaCppBackend, n_slots: int):
        self.backend = backend
        self.n_slots = n_slots
        self.question_seq = n_slots + 1  # slots are sequences 1..n_slots
        self._ctx = None
        self._batch = None
        self._n_ctx = 0
        self._shared: list[int] | None = None
        self._question: list[int] | None = None
        self._question_logits: np.ndarray | None = None
        self.prompt_tokens_evaluated = 0  # measured work: what llama.cpp was asked to evaluate
        self.prompt_seconds = 0.0  # ... and the time it took (bench/local_throughput.py reports both)
        self.steps = self.step_rows = 0  # generation steps, and the paths they decoded (batch occupancy)

    # -- llama.cpp context -----------------------------------------------------------------------

    def _ensure_context(self, n_ctx: int) -> None:
        import llama_cpp

        if self._ctx is not None and self._n_ctx >= n_ctx:
            return
        self.close()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(512, self.n_slots)
        params.n_ubatch = max(512, self.n_slots)
        params.n_seq_max = self.n_slots + 2
        params.kv_unified = True  # a copied prefix is shared by tagging cells, not duplicated
        params.n_threads = params.n_threads_batch = self.backend.threads
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=self.backend.verbose):  # llama.cpp logs to stderr while it sets up
            self._ctx = llama_cpp.llama_init_from_model(self.backend.llm.model, params)
        if self._ctx is None:
            raise BackendError(f"llama.cpp could not create a {n_ctx}-token context for "
                               f"{self.n_slots} sequences")
        self._n_ctx = n_ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, params.n_seq_max)
        self._shared = self._question = None

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) entries."""
        import llama_cpp

        batch = self._batch
        batch.n_tokens = len(entries)
        for i, (token, position, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        code = llama_cpp.llama_decode(self._ctx, batch)
        if code != 0:
            raise BackendError(f"llama_decode failed with code {code} (context of {self._n_ctx} tokens "
                               f"for {self.n_slots} sequences is too small?)")

    def _logits(self, row: int) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.backend.llm.n_vocab(),))

    def _all_logits(self, rows: int) -> np.ndarray:
        """The last decode's logits, one row per token that asked for them, in batch order: one view."""
        import llama_cpp

        pointer = llama_cpp.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.backend.llm.n_vocab()))

    def _evaluate(self, tokens: list[int], start: int, seq: int) -> None:
        started = time.perf_counter()
        for offset in range(0, len(tokens), self._batch_capacity()):
            chunk = tokens[offset: offset + self._batch_capacity()]
            last = offset + len(chunk) == len(tokens)
            self._decode([(t, start + offset + i, seq, last and i == len(chunk) - 1)
                          for i, t in enumerate(chunk)])
        self.prompt_tokens_evaluated += len(tokens)
        self.prompt_seconds += time.perf_counter() - started

    def _batch_capacity(self) -> int:
        return max(512, self.n_slots)

    def _open_question(self, shared: list[int], rest: list[int]) -> None:
        """Make the question sequence hold shared + rest and keep the prompt's last logits."""
        import llama_cpp

        if shared != self._shared:
            llama_cpp.llama_memory_clear(self._memory, True)
            self._evaluate(shared, 0, SHARED_SEQ)
            self._shared, self._question = shared, None
        if rest == self._question:
            return
        llama_cpp.llama_memory_seq_rm(self._memory, self.question_seq, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, SHARED_SEQ, self.question_seq, 0, len(shared))
        self._evaluate(rest, len(shared), self.question_seq)
        self._question = rest
        self._question_logits = self._logits(-1).copy()

    # -- scheduling ------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], split: Sequence[tuple[list[int], list[int]]],
                 feed: TokenFeed | None = None) -> Iterator[Generation]:
        """`feed`, if given, is asked for more paths whenever slots are free and none is pending (they
        join this batch if they fit it), and is asked before each step whether each path is still wanted."""
        import llama_cpp

        longest_shared = max(len(shared) for shared, _ in split)
        longest_rest = max(len(rest) for _, rest in split)
        max_new = max(r.params.max_tokens for r in requests)

        def needed_for(rest_tokens: int, new_tokens: int) -> int:
            return tokens_needed(self.n_slots, longest_shared, rest_tokens, new_tokens)

        self._ensure_context(context_size(needed_for(longest_rest, max_new)))

        def fits(joining: Sequence[tuple[GenerationRequest, tuple[list[int], list[int]]]]) -> bool:
            """Whether paths can join: the same shared block (a new one clears the cache) and room left."""
            nonlocal longest_rest, max_new
            rest = max([longest_rest, *(len(r) for _, (_, r) in joining)])
            new = max([max_new, *(request.params.max_tokens for request, _ in joining)])
            if any(s != self._shared for _, (s, _) in joining) or needed_for(rest, new) > self._n_ctx:
                return False
            longest_rest, max_new = rest, new
            return True

        pending = deque(zip(requests, split, strict=True))
        slots: dict[int, tuple[PathDecoder, int, int]] = {}  # seq -> (path, next token, its position)
        free = list(range(self.n_slots, 0, -1))
        while pending or slots:
            if feed is not None:
                for seq in [seq for seq, (path, _, _) in slots.items() if not feed.wants(path.request)]:
                    del slots[seq]  # nobody waits for this path any more: its slot is free
                    llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
                    free.append(seq)
                if free and not pending:
                    pending.extend(feed.more(fits))
            # Fill free slots; a path that ends on its first token is done at once.
            while free and pending:
                if slots and pending[0][1][0] != self._shared:
                    break  # another shared block clears the cache: it waits until the running paths end
                request, (shared, rest) = pending.popleft()
                if feed is not None and not feed.wants(request):
                    continue
                started = time.perf_counter()
                self._open_question(shared, rest)
                n_prompt = len(shared) + len(rest)
                path = self.backend.path_decoder(request, n_prompt)
                token = path.push(self._question_logits)
                path.seconds += time.perf_counter() - started
                if token is None:
                    yield path.result()
                    continue
                seq = free.pop()
                llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
                llama_cpp.llama_memory_seq_cp(self._memory, self.question_seq, seq, 0, n_prompt)
                slots[seq] = (path, token, n_prompt)
            if not slots:
                continue
            started = time.perf_counter()
            order = sorted(slots)
            self._decode([(slots[seq][1], slots[seq][2], seq, True) for seq in order])
            self.steps += 1
            self.step_rows += len(order)
            logits = self._all_logits(len(order))
            normalizers = log_normalizers(logits)  # all rows in one pass
            finished = []
            for row, seq in enumerate(order):
                path, _, position = slots[seq]
                token = path.push(logits[row], float(normalizers[row]))
                if token is None:
                    finished.append(seq)
                else:
                    slots[seq] = (path, token, position + 1)
            share = (time.perf_counter() - started) / len(order)  # each path's part of this step
            for seq in order:
                slots[seq][0].seconds += share
            for seq in finished:
                path = slots.pop(seq)[0]
                llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
                free.append(seq)
                yield path.result()
