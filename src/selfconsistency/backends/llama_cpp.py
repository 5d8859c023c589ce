"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Sampling is ours (numpy, one generator per path seeded from the path's seed), so a path's text depends
only on its seed and the prompt's logits. Those logits are computed in one canonical way, whatever
ran before: the shared exemplar block is evaluated from an empty cache, the question on top of it in
one batch, and every path decodes one token at a time on top of that. So a resumed run reproduces the
paths an uninterrupted run would have made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..models import DEFAULT_MODEL, resolve_model_path
from ..prompts import Prompt, PromptFormat
from ..sampling import sample_token
from .base import BackendError, Generation, GenerationRequest

_CONTEXT_ROUNDING = 256


class LlamaCppBackend:
    name = "local"

    def __init__(self, model: str = DEFAULT_MODEL, threads: int | None = None, n_ctx: int | None = None,
                 verbose: bool = False):
        self.model = model
        self.model_path = resolve_model_path(model)
        self.threads = threads or os.cpu_count() or 1
        self._n_ctx_request = n_ctx
        self._verbose = verbose
        self._llm = None
        self._shared_tokens: list[int] | None = None  # what positions 0.. of the cache hold
        self._prompt_tokens: list[int] | None = None
        self._prompt_logits: np.ndarray | None = None

    # -- model and prompt ------------------------------------------------------------------------

    def _load(self, n_ctx: int) -> None:
        import llama_cpp

        if self._llm is not None and self._llm.n_ctx() >= n_ctx:
            return
        self.close()
        try:
            self._llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_batch=512,
                                        n_threads=self.threads, n_threads_batch=self.threads,
                                        logits_all=False, verbose=self._verbose)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from None

    def _render_chat(self, prompt: Prompt) -> tuple[str, str]:
        """(shared, rest) of the chat prompt rendered with the model's own template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model} has no chat template: use --prompt-format completion")
        vocab = self._llm._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._llm.detokenize([vocab.token_eos()], special=True).decode(errors="ignore"),
            bos_token=self._llm.detokenize([vocab.token_bos()], special=True).decode(errors="ignore"),
        )
        messages = prompt.chat_messages
        full = formatter(messages=messages).prompt
        # The shared part ends where the last user turn's content begins: render once more with other
        # content there and keep the common prefix.
        probe = formatter(messages=messages[:-1] + [{"role": "user", "content": "\x00"}]).prompt
        cut = 0
        while cut < min(len(full), len(probe)) and full[cut] == probe[cut]:
            cut += 1
        return full[:cut], full[cut:]

    def _tokens(self, prompt: Prompt) -> tuple[list[int], list[int]]:
        if prompt.format is PromptFormat.chat:
            shared, rest = self._render_chat(prompt)
            special = True
        else:
            shared, rest = prompt.shared, prompt.question
            special = False  # question text can never become a control token
        shared_tokens = self._llm.tokenize(shared.encode(), add_bos=True, special=special)
        rest_tokens = self._llm.tokenize(rest.encode(), add_bos=False, special=special)
        return shared_tokens, rest_tokens

    def _logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),)).copy()

    def _prepare(self, shared: list[int], rest: list[int]) -> None:
        """Leave the cache holding shared + rest, computed canonically, and keep the last logits."""
        tokens = shared + rest
        if tokens == self._prompt_tokens:
            return
        if shared != self._shared_tokens:
            self._llm.reset()
            self._llm.eval(shared)
            self._shared_tokens = shared
        self._llm.n_tokens = len(shared)  # the next eval drops every cell past the shared block
        self._llm.eval(rest)
        self._prompt_tokens = tokens
        self._prompt_logits = self._logits()

    # -- generation ------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[Generation]:
        if not requests:
            return
        max_new = max(r.params.max_tokens for r in requests)
        if self._llm is None:
            self._load(self._n_ctx_request or 4096)
        longest = max(len(sum(self._tokens(r.prompt), [])) for r in requests)
        needed = self._n_ctx_request or -(-(longest + max_new) // _CONTEXT_ROUNDING) * _CONTEXT_ROUNDING
        if needed > self._llm.n_ctx():
            self._load(needed)
            self._shared_tokens = self._prompt_tokens = None
        for request in requests:
            yield self._generate_one(request)

    def _generate_one(self, request: GenerationRequest) -> Generation:
        import llama_cpp

        started = time.perf_counter()
        shared, rest = self._tokens(request.prompt)
        self._prepare(shared, rest)
        n_prompt = len(shared) + len(rest)
        params = request.params
        rng = np.random.default_rng(params.seed)
        vocab = self._llm._model.vocab
        logits = self._prompt_logits
        self._llm.n_tokens = n_prompt
        tokens: list[int] = []
        logprob_sum = 0.0
        text, finish = "", "length"
        longest_stop = max((len(s) for s in params.stop), default=0)
        while len(tokens) < params.max_tokens:
            token, logprob = sample_token(logits, params, rng)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            tokens.append(token)
            logprob_sum += logprob
            previous_length = len(text)
            text = self._llm.detokenize(tokens).decode("utf-8", errors="ignore")
            hit = _find_stop(text, params.stop, max(0, previous_length - longest_stop))
            if hit is not None:
                text, finish = text[:hit], "stop"
                break
            if len(tokens) == params.max_tokens:
                break
            self._llm.eval([token])
            logits = self._logits()
        return Generation(request=request, text=text, prompt_tokens=n_prompt,
                          completion_tokens=len(tokens), latency_s=time.perf_counter() - started,
                          finish_reason=finish, logprob_sum=logprob_sum)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._shared_tokens = self._prompt_tokens = None


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    positions = [p for p in (text.find(s, start) for s in stops) if p >= 0]
    return min(positions) if positions else None
