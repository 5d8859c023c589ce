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


def register() -> list[AnswerBot]:
    """Register the fake; returns the list each started instance is appended to."""
    made: list[AnswerBot] = []

    def factory(config):
        made.append(AnswerBot(config.model))
        return made[-1]

    register_backend(FAKE_BACKEND, factory)
    return made
