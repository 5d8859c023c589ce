import numpy as np
import pytest
from pydantic import ValidationError

from selfconsistency.sampling import (
    SamplingParams,
    log_normalizer,
    log_normalizers,
    path_seed,
    sample_token,
    top_candidates,
)


def test_path_seed_depends_on_each_part_only():
    base = path_seed(0, "test-00001", 0.7, 3)
    assert base == path_seed(0, "test-00001", 0.7, 3)
    others = {path_seed(1, "test-00001", 0.7, 3), path_seed(0, "test-00002", 0.7, 3),
              path_seed(0, "test-00001", 0.5, 3), path_seed(0, "test-00001", 0.7, 4)}
    assert base not in others and len(others) == 4
    assert 0 <= base < 2**31


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    token, logprob = sample_token(logits, SamplingParams(temperature=0.0), np.random.default_rng(0))
    assert token == 1
    assert logprob == pytest.approx(np.log(np.exp(3.0) / np.exp(logits.astype(float)).sum()), rel=1e-6)


def test_top_k_and_top_p_cut_the_tail():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    top2 = {sample_token(logits, SamplingParams(temperature=1.0, top_k=2), rng)[0] for _ in range(500)}
    assert top2 == {0, 1}
    nucleus = {sample_token(logits, SamplingParams(temperature=1.0, top_k=0, top_p=0.75), rng)[0]
               for _ in range(500)}
    assert nucleus == {0, 1}


@pytest.mark.parametrize("temperature", [1.0, 0.5, 1.7])
def test_temperature_follows_softmax(temperature):
    p = np.array([0.6, 0.3, 0.1])
    rng = np.random.default_rng(5)
    draws = np.bincount([sample_token(np.log(p), SamplingParams(temperature=temperature, top_k=0), rng)[0]
                         for _ in range(6000)], minlength=3) / 6000
    expected = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
    assert np.allclose(draws, expected, atol=0.03)


def full_sort_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """The definition: every token ordered by (logit descending, id ascending), the first k."""
    ids = np.arange(logits.shape[0])
    ordered = ids[np.lexsort((ids, -logits))]
    return ordered[:top_k] if top_k else ordered


@pytest.mark.parametrize("vocabulary,top_k", [(151_936, 40), (151_936, 1), (5_000, 40), (100, 40),
                                              (64 * 40 - 1, 40), (1000, 999), (1000, 0)])
def test_top_candidates_equal_a_full_sort(vocabulary, top_k):
    rng = np.random.default_rng(vocabulary + top_k)
    for trial in range(5):
        logits = (rng.standard_normal(vocabulary) * 3).astype(np.float32)
        if trial % 2:  # coarse values: many ties, some at the k-th place
            logits = np.round(logits).astype(np.float32)
        if trial == 4:  # a peaked distribution: one clear winner, a flat tail
            logits[:] = -5.0
            logits[rng.integers(vocabulary)] = 20.0
        assert np.array_equal(top_candidates(logits, top_k), full_sort_top_k(logits, top_k))


def test_same_generator_same_tokens():
    logits = np.random.default_rng(1).normal(size=1000)
    params = SamplingParams(temperature=0.7)
    a = [sample_token(logits, params, rng)[0] for rng in [np.random.default_rng(9)] for _ in range(20)]
    b = [sample_token(logits, params, rng)[0] for rng in [np.random.default_rng(9)] for _ in range(20)]
    assert a == b


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"temperature": 0.5, "top_p": 0.0},
                                 {"temperature": 0.5, "max_tokens": 0}, {"temperature": 0.5, "stop": ("",)},
                                 {"temperature": 0.5, "colour": 1}])
def test_invalid_params_rejected(bad):
    with pytest.raises(ValidationError):
        SamplingParams(**bad)


def test_path_decoder_text_is_the_whole_paths_decoding():
    """Pieces are appended one per step; a character split across tokens appears once both arrive, and
    the text is cut at the first stop sequence even when it spans two tokens."""
    from selfconsistency.backends.base import GenerationRequest
    from selfconsistency.backends.llama_cpp import PathDecoder
    from selfconsistency.prompts import Prompt, PromptFormat

    pieces = {1: b"caf", 2: b"\xc3", 3: b"\xa9 is", 4: b" 5.\n", 5: b"Q", 6: b": next"}
    request = GenerationRequest("q", 0.0, 0, Prompt("", "x", (), PromptFormat.completion),
                                SamplingParams(temperature=0.0, stop=("\nQ:",), max_tokens=50))
    decoder = PathDecoder(request, 3, lambda tokens: b"".join(pieces[t] for t in tokens), lambda t: False)
    seen = []
    for token in pieces:
        logits = np.full(10, -10.0, dtype=np.float32)
        logits[token] = 10.0
        if decoder.push(logits) is None:
            break
        seen.append(decoder.text)
    assert seen[:3] == ["caf", "caf", "café is"]
    assert decoder.result().text == "café is 5." and decoder.finish_reason == "stop"


def test_batched_normalizers_equal_the_per_row_ones_bit_for_bit():
    """The engine takes every path's log-sum-exp in one pass; the recorded log-probs must not move."""
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((9, 151_936)) * 4).astype(np.float32)
    rows[2, 17] = 60.0  # one dominant token
    batched = log_normalizers(rows)
    assert batched.tolist() == [log_normalizer(row) for row in rows]
    params = SamplingParams(temperature=0.7, top_k=40, seed=1)
    for row, normalizer in zip(rows, batched, strict=True):
        assert sample_token(row, params, np.random.default_rng(5), float(normalizer)) == \
            sample_token(row, params, np.random.default_rng(5))


def test_a_nan_logit_ranks_last_and_breaks_nothing():
    """A broken model's NaN logits: the finite ones keep their order, the NaN come after them (as the
    full sort puts them), and sampling from an all-NaN row still returns a token instead of raising."""
    logits = np.array([1.0, np.nan, 3.0, 2.0, 0.0], np.float32)
    assert top_candidates(logits, 2).tolist() == [2, 3]
    assert top_candidates(logits, 4).tolist() == [2, 3, 0, 4]
    assert top_candidates(logits, 5).tolist() == full_sort_top_k(logits, 5).tolist() == [2, 3, 0, 4, 1]
    with np.errstate(invalid="ignore"):
        token, _ = sample_token(np.full(5, np.nan, np.float32), SamplingParams(temperature=0.7, top_k=2, seed=1),
                                np.random.default_rng(0))
    assert token in range(5)


def test_normalizers_of_integer_rows_equal_the_per_row_ones():
    rows = np.array([[1, 2, 3], [4, 0, -2]], dtype=np.int32)
    assert log_normalizers(rows).tolist() == [log_normalizer(row) for row in rows]
