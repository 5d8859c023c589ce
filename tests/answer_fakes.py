"""A test double for answering: a backend registered by name whose paths depend on the question's words
and the path's seed, and which answers Universal Self-Consistency requests by naming a response."""

import threading

import numpy as np

from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation

FAKE_BACKEND = "answerbot"
USC_REPLY = "The most consistent response is Response 2, because it agrees with most."


class AnswerBot:
    """`sure` in the question: every path says 18. `coin`: 3 or 4 by the path's seed. `mute`: paths
    state no answer. `essay`: free text, three distinct texts by seed. Log-probs favour the answer 4."""

    name = FAKE_BACKEND

    def __init__(self, model: str):
        self.model = model
        self.calls: list[tuple[str, float, int]] = []
        self.usc_prompts: list[str] = []
        self.usc_messages: list[tuple[tuple[str, str], ...]] = []  # the same requests' chat turns
        self.closed = False
        self._lock = threading.Lock()

    def generate(self, requests):
        for request in requests:
            text = request.prompt.text
            with self._lock:
                self.calls.append((request.question_id, request.temperature, request.path_index))
            if "most consistent response" in text:
                with self._lock:
                    self.usc_prompts.append(text)
                    self.usc_messages.append(request.prompt.messages)
                yield Generation(request, USC_REPLY, 50, 12, 0.001, "stop", -1.0)
                continue
            question = text.rsplit("Q:", 1)[-1]
            draw = int(np.random.default_rng(request.params.seed).integers(3))
            if "sure" in question:
                reply, logprob = "Some steps. The answer is 18.", -2.0
            elif "coin" in question:
                answer = 3 + draw % 2
                reply, logprob = f"Some steps. The answer is {answer}.", -0.5 if answer == 4 else -40.0
            elif "mute" in question:
                reply, logprob = "I cannot tell.", -3.0
            else:
                reply, logprob = ["A short essay.", "Another essay.", "A third essay."][draw], -1.0
            yield Generation(request, reply, 100, 8, 0.001, "stop", logprob)

    def close(self):
        self.closed = True


def register(kind: type[AnswerBot] = AnswerBot) -> list:
    """Register a fake under its name; returns the list each started instance is appended to."""
    made: list = []

    def factory(config):
        made.append(kind(config.model))
        return made[-1]

    register_backend(kind.name, factory, shared_decoder=getattr(kind, "shared_decoder", False))
    return made


class BatchingBot(AnswerBot):
    """AnswerBot as a decoder that must never be entered by two threads (like llama.cpp), and is slow
    enough per batch for concurrent calls to queue up behind it."""

    name = "batchbot"
    shared_decoder = True  # registered so: concurrent calls share its batches

    def __init__(self, model: str):
        super().__init__(model)
        self.batches: list[set[str]] = []  # the questions of each generate call
        self.inside = 0
        self.overlapped = False

    def generate(self, requests):
        import time

        self.inside += 1
        self.overlapped |= self.inside > 1
        try:
            time.sleep(0.2)
            self.batches.append({r.question_id for r in requests})
            yield from super().generate(requests)
        finally:
            self.inside -= 1


class SlowBot(AnswerBot):
    """AnswerBot taking `seconds` per path, one path at a time: long enough for a client to give up."""

    name = "slowbot"
    seconds = 0.25

    def generate(self, requests):
        import time

        for request in requests:
            time.sleep(self.seconds)
            yield from super().generate([request])


class SlowBatchingBot(SlowBot):
    name = "slowbatchbot"
    shared_decoder = True  # registered so: concurrent calls share its batches


def register_slow() -> dict[str, list[AnswerBot]]:
    return {kind.name: register(kind) for kind in (SlowBot, SlowBatchingBot)}


class FeedingBot(AnswerBot):
    """A decoder like the embedded engine: `slots` paths decode together, one step of `step_seconds` at a
    time, a path taking `max_tokens` steps; whenever a slot is free and nothing is pending it asks the
    feed for more paths, and it drops paths the feed no longer wants. Paths whose question says `huge`
    never fit a running batch. `events` records ("start" | "end" | "stopped", question id, path index)."""

    name = "feedbot"
    shared_decoder = True  # registered so: concurrent calls share its batches
    slots = 2
    step_seconds = 0.02

    def __init__(self, model: str):
        super().__init__(model)
        self.events: list[tuple[str, str, int]] = []
        self.batches = 0

    @staticmethod
    def _fits(requests):
        return not any("huge" in r.prompt.text.rsplit("Q:", 1)[-1] for r in requests)

    def generate(self, requests, feed=None):
        import time
        from collections import deque

        self.batches += 1
        pending, running = deque(requests), {}  # running: id(request) -> [request, steps left]
        while pending or running:
            if feed is not None:
                for key in [key for key, (r, _) in running.items() if not feed.wants(r)]:
                    request = running.pop(key)[0]
                    self.events.append(("stopped", request.question_id, request.path_index))
                if len(running) < self.slots and not pending:
                    pending.extend(feed.more(self._fits))
            while pending and len(running) < self.slots:
                request = pending.popleft()
                if feed is None or feed.wants(request):
                    running[id(request)] = [request, request.params.max_tokens]
                    self.events.append(("start", request.question_id, request.path_index))
            time.sleep(self.step_seconds)
            for key in list(running):
                running[key][1] -= 1
                if not running[key][1]:
                    request = running.pop(key)[0]
                    self.events.append(("end", request.question_id, request.path_index))
                    yield from super().generate([request])
