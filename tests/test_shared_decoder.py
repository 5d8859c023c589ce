"""Continuous batching across calls on the embedded 0.5B model: the paths of a call that arrives while a
batch decodes join its free slots (api._BatchingDecoder feeding the engine), and one-path-at-a-time
decoding (--batch-size 1) still gives each path the same text whatever else is asked at the same time."""

import threading
import time

import pytest

from conftest import SMALL_MODEL
from selfconsistency.api import _BatchingDecoder
from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.llama_cpp import LlamaCppBackend
from selfconsistency.prompts import Prompt, PromptFormat
from selfconsistency.sampling import SamplingParams

pytestmark = pytest.mark.model


def story(call: str, paths: int, max_tokens: int) -> list[GenerationRequest]:
    """A call's paths: a story prompt (no stop, so paths run to max_tokens), one seed per path."""
    prompt = Prompt(shared="Here is a long story about a dragon and a knight.\n\n", question=f"Chapter {call}.\n",
                    messages=(), format=PromptFormat.completion)
    return [GenerationRequest(call, 0.8, n, prompt, SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=n))
            for n in range(paths)]


def collect(decoder, requests, arrivals: list) -> threading.Thread:
    """Consume one call in a thread, noting (call, path, text, when) as each of its paths arrives."""
    def consume():
        for generation in decoder.generate(requests):
            arrivals.append((generation.request.question_id, generation.request.path_index, generation.text,
                             time.monotonic()))

    thread = threading.Thread(target=consume)
    thread.start()
    return thread


def test_a_call_arriving_mid_batch_decodes_beside_the_running_one(loaded_model):
    backend = LlamaCppBackend(SMALL_MODEL, batch_size=4)
    decoder = _BatchingDecoder(backend)
    arrivals: list = []
    try:
        # 6 long paths on 4 slots: the last 2 start when the first 4 end, leaving 2 slots free
        long_call = collect(decoder, story("long", 6, 48), arrivals)
        deadline = time.monotonic() + 300
        while backend._batched is None or not backend._batched.prompt_tokens_evaluated:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # the batch is running: its prompt is in the cache
        short_call = collect(decoder, story("short", 2, 4), arrivals)
        long_call.join(600)
        short_call.join(600)
    finally:
        decoder.close()
    done = {call: max(when for c, _, _, when in arrivals if c == call) for call in ("long", "short")}
    assert sorted((c, n) for c, n, _, _ in arrivals) == [*(("long", n) for n in range(6)), ("short", 0), ("short", 1)]
    assert done["short"] < done["long"]  # it did not wait for the first call's batch to finish
    assert all(text for _, _, text, _ in arrivals)


def test_one_path_at_a_time_gives_the_same_texts_alone_and_together(loaded_model):
    """--batch-size 1 promises a path's text from its seed alone: two calls sharing the decoder get the
    texts each gets alone."""
    long_requests, short_requests = story("long", 2, 24), story("short", 1, 8)
    alone = LlamaCppBackend(SMALL_MODEL, batch_size=1)
    try:
        expected = {(g.request.question_id, g.request.path_index): g.text
                    for g in [*alone.generate(long_requests), *alone.generate(short_requests)]}
    finally:
        alone.close()
    backend = LlamaCppBackend(SMALL_MODEL, batch_size=1)
    decoder = _BatchingDecoder(backend)
    arrivals: list = []
    try:
        long_call = collect(decoder, long_requests, arrivals)
        while backend.llm is None:
            time.sleep(0.01)
        short_call = collect(decoder, short_requests, arrivals)
        long_call.join(600)
        short_call.join(600)
    finally:
        decoder.close()
    assert {(c, n): text for c, n, text, _ in arrivals} == expected


def test_paths_of_another_shared_prompt_wait_for_the_running_ones(loaded_model):
    """A second shared block (another task's exemplars, another chat's system message) clears the KV cache:
    its paths must not start while paths of the first are still decoding, or those would continue on a
    cleared cache. Greedy paths: the long one's text is the same asked alone or before the other."""
    backend = LlamaCppBackend(SMALL_MODEL, batch_size=4)

    def greedy(shared: str, call: str, max_tokens: int) -> GenerationRequest:
        prompt = Prompt(shared=shared, question=f"Chapter {call}.\n", messages=(), format=PromptFormat.completion)
        return GenerationRequest(call, 0.0, 0, prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens))

    dragon = greedy("Here is a long story about a dragon and a knight.\n\n", "one", 40)
    robot = greedy("A short poem about a robot who learns to paint.\n\n", "two", 8)
    try:
        alone = next(iter(backend.generate([dragon]))).text
        together = {g.request.question_id: g.text for g in backend.generate([dragon, robot])}
    finally:
        backend.close()
    assert together["one"] == alone and together["two"]
