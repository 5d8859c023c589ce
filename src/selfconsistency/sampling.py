"""Sampling settings and token sampling. Pure: no I/O, randomness only from the generator passed in.

Each path's seed derives from (run seed, question id, temperature, path index) alone, so a path is
reproducible by itself whatever order, batch or resumed session it is generated in.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class SamplingParams(BaseModel):
    """Everything that shapes one path's tokens. Frozen; validated when built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)  # 0: no top-k cut
    max_tokens: int = Field(default=256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int = Field(default=0, ge=0)
    # A regular expression: the path ends once its text matches (its answer statement is complete,
    # `answer_stop`); the text keeps what the match spans. Only the embedded backend applies it.
    complete: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @model_validator(mode="after")
    def _stops_not_empty(self) -> SamplingParams:
        if any(s == "" for s in self.stop):
            raise ValueError("stop sequences must be non-empty")
        if self.complete is not None:
            try:  # a bad pattern fails here, not in the middle of a path
                re.compile(self.complete)
            except re.error as exc:
                raise ValueError(f"completion pattern {self.complete!r}: {exc}") from None
        return self


def path_seed(run_seed: int, question_id: str, temperature: float, path_index: int) -> int:
    """A 31-bit seed (fits every API's seed field) unique to one path of one run."""
    key = f"{run_seed}\x1f{question_id}\x1f{temperature!r}\x1f{path_index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & 0x7FFF_FFFF


def log_normalizer(logits: np.ndarray) -> float:
    """log(sum(exp(logits))), stably; float32 work on the full vocabulary keeps this cheap per token."""
    peak = float(np.max(logits))
    return peak + float(np.log(np.exp(logits - np.float32(peak)).sum(dtype=np.float64)))


def log_normalizers(rows: np.ndarray) -> np.ndarray:
    """`log_normalizer` of each row of a (sequences x vocabulary) array in one pass, bit for bit the same."""
    peaks = rows.max(axis=1)
    shifted = rows - peaks[:, None]
    if np.issubdtype(shifted.dtype, np.inexact):
        np.exp(shifted, out=shifted)  # in place: one (sequences x vocabulary) temporary per step, not two
    else:  # integers have no room for exp's result
        shifted = np.exp(shifted)
    return peaks.astype(np.float64) + np.log(shifted.sum(axis=1, dtype=np.float64))


_SUBSAMPLE_STRIDE = 64  # top-k threshold from every 64th logit: ~k x 64 survivors, a tiny sort


def top_candidates(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Token ids of the `top_k` highest logits (all of them when top_k is 0), highest first, ties by
    token id, so the set and its order are defined whatever the vocabulary's layout.

    A full-vocabulary argpartition costs ~1.5 ms per token (151,936 logits), which is a quarter of a
    batched decode step on 2 cores. The k-th largest of a strided subsample is a threshold that at
    least k logits reach (the subsample's own top k do), so one comparison over the vocabulary leaves
    a few thousand candidates to sort exactly.
    """
    vocabulary = logits.shape[0]
    if 0 < top_k < vocabulary:
        sample = logits[::_SUBSAMPLE_STRIDE]
        if top_k <= sample.shape[0]:
            threshold = np.partition(sample, sample.shape[0] - top_k)[sample.shape[0] - top_k]
            candidates = np.flatnonzero(logits >= threshold)
        else:
            candidates = np.arange(vocabulary)
        # The exact k-th largest among the candidates keeps only the top k and their ties for the sort
        # (~k instead of ~k x 64: the sort was most of this function's time).
        values = logits[candidates]
        # NaN logits (a broken model) make fewer candidates, and partition puts NaN above every number:
        # then the exact sort alone, as before the cut
        if values.shape[0] >= top_k and not np.isnan(values).any():
            kth = np.partition(values, values.shape[0] - top_k)[values.shape[0] - top_k]
            candidates = candidates[values >= kth]
        order = np.lexsort((candidates, -logits[candidates]))[:top_k]
        return candidates[order]
    candidates = np.arange(vocabulary)
    return candidates[np.lexsort((candidates, -logits))]


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
                 normalizer: float | None = None) -> tuple[int, float]:
    """Pick the next token: argmax when greedy, else temperature -> top-k -> top-p sampling.

    Returns the token and its log-probability under the model's own (T=1, uncut) distribution,
    the quantity weighted voting uses. `normalizer`: `log_normalizer(logits)` if already computed.
    """
    if normalizer is None:
        normalizer = log_normalizer(logits)
    if params.greedy:
        token = int(np.argmax(logits))
        return token, float(logits[token]) - normalizer
    candidates = top_candidates(logits, params.top_k)
    scaled = logits[candidates].astype(np.float64) / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1
        probs = probs[:keep] / probs[:keep].sum()
        candidates = candidates[:keep]
    index = min(int(np.searchsorted(np.cumsum(probs), rng.random(), side="right")), len(probs) - 1)
    token = int(candidates[index])
    return token, float(logits[token]) - normalizer
