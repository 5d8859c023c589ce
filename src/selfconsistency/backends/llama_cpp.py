"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Sampling is ours (numpy, one generator per path seeded from the path's seed), so a path's text depends
only on its seed and the logits it sees. With `batch_size=1` those logits are computed in one canonical
way whatever ran before (the shared exemplar block from an empty cache, the question on top of it in
one batch, then one token at a time in a single-sequence cache), so a resumed run reproduces bit for bit
the paths an uninterrupted run makes. With `batch_size>1` many paths decode together in one llama.cpp
batch (`llama_batched.py`): several times faster, reproducible for the same batch size and work list,
but llama.cpp's batched kernels round differently, so a path's text can differ from the unbatched one.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated

import numpy as np
from pydantic import Field

from ..answer_stop import complete_end
from ..models import DEFAULT_MODEL, check_model_name, resolve_model_path
from ..options import BackendOptions, Cli, Identity
from ..prompts import Prompt, PromptFormat
from ..sampling import sample_token
from .base import BackendConfig, BackendError, BackendSpec, Generation, GenerationRequest, PathFeed

CONTEXT_ROUNDING = 256
_PLAIN_TOKEN_ROUNDS = 4  # a cut text that still forms a special token (one inside another) is cut again


def _cut_inside(data: bytes, markers: set[bytes]) -> list[bytes]:
    """`data` cut after the first character of every occurrence of each marker text."""
    cuts = set()
    for marker in markers:
        if not marker:
            continue
        first = len(marker.decode("utf-8", errors="ignore")[:1].encode()) or 1  # whole UTF-8 character
        start = data.find(marker)
        while start >= 0:
            cuts.add(start + first)
            start = data.find(marker, start + 1)
    bounds = [0, *sorted(cuts), len(data)]
    return [data[begin:end] for begin, end in zip(bounds, bounds[1:], strict=False) if end > begin]


class PathDecoder:
    """One path being generated: samples its tokens, watches for stops, and builds its Generation."""

    def __init__(self, request: GenerationRequest, prompt_tokens: int,
                 detokenize: Callable[[list[int]], bytes], is_end: Callable[[int], bool]):
        self.request = request
        self.prompt_tokens = prompt_tokens
        self._detokenize = detokenize
        self._is_end = is_end
        self._rng = np.random.default_rng(request.params.seed)
        self._longest_stop = max((len(s) for s in request.params.stop), default=0)
        self.tokens: list[int] = []
        self._bytes = b""  # the tokens' pieces so far: one piece per step, not the whole path again
        self.text = ""
        self._ends: list[int] = []  # where each token ends in the text (thinking tokens are counted by it)
        self.logprob_sum = 0.0
        self.finish_reason: str | None = None
        self.seconds = 0.0  # this path's share of the measured generation time

    def push(self, logits: np.ndarray, normalizer: float | None = None) -> int | None:
        """Sample the next token from `logits` (`normalizer`: their log-sum-exp, if known); the token to
        feed back, or None once the path ended."""
        params = self.request.params
        token, logprob = sample_token(logits, params, self._rng, normalizer)
        if self._is_end(token):
            self.finish_reason = "stop"
            return None
        self.tokens.append(token)
        self.logprob_sum += logprob
        previous_length = len(self.text)
        self._bytes += self._detokenize([token])
        self.text = self._bytes.decode("utf-8", errors="ignore")
        self._ends.append(len(self.text))
        start = max(0, previous_length - self._longest_stop)
        hits = [p for p in (self.text.find(s, start) for s in params.stop) if p >= 0]
        complete = complete_end(self.text, params.complete) if params.complete else None
        if complete is not None and (not hits or complete < min(hits)):
            self.text, self.finish_reason = self.text[:complete], "answer"
            return None
        if hits:
            self.text, self.finish_reason = self.text[: min(hits)], "stop"
            return None
        if len(self.tokens) >= params.max_tokens:
            self.finish_reason = "length"
            return None
        return token

    def result(self) -> Generation:
        return Generation(request=self.request, text=self.text, prompt_tokens=self.prompt_tokens,
                          completion_tokens=len(self.tokens), latency_s=self.seconds,
                          finish_reason=self.finish_reason or "length", logprob_sum=self.logprob_sum,
                          token_ends=tuple(min(end, len(self.text)) for end in self._ends))


class TokenFeed:
    """A PathFeed as the batched engine sees it: each path with its (shared, rest) prompt tokens."""

    def __init__(self, feed: PathFeed, tokens: Callable[[Prompt], tuple[list[int], list[int]]]):
        self.wants = feed.wants
        self._feed, self._tokens = feed, tokens

    def more(self, fits: Callable[[list[tuple[GenerationRequest, tuple[list[int], list[int]]]]], bool]
             ) -> list[tuple[GenerationRequest, tuple[list[int], list[int]]]]:
        split: dict[int, tuple[GenerationRequest, tuple[list[int], list[int]]]] = {}

        def tokens_fit(requests: Sequence[GenerationRequest]) -> bool:
            joining = [(request, self._tokens(request.prompt)) for request in requests]
            split.update((id(request), pair) for request, pair in zip(requests, joining, strict=True))
            return fits(joining)

        return [split[id(request)] for request in self._feed.more(tokens_fit)]


def usable_cores() -> int:
    """The cores this process may run on (taskset, a container's cpuset), not the machine's: llama.cpp's
    threads wait for each other at every layer, so one thread more than the cores it gets runs several
    times slower."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LlamaCppBackend:
    name = "local"

    def __init__(self, model: str = DEFAULT_MODEL, threads: int | None = None, batch_size: int = 1,
                 n_ctx: int | None = None, verbose: bool = False):
        if batch_size < 1:
            raise BackendError("batch size must be at least 1")
        self.model = model
        self.model_path = resolve_model_path(model)
        self.threads = threads or usable_cores()
        self.batch_size = batch_size
        self._n_ctx_request = n_ctx
        self.verbose = verbose
        self.llm = None
        self._batched = None
        self._shared_tokens: list[int] | None = None  # what positions 0.. of the cache hold
        self._prompt_tokens: list[int] | None = None
        self._prompt_logits: np.ndarray | None = None

    # -- model and prompt ------------------------------------------------------------------------

    def _load(self, n_ctx: int) -> None:
        import llama_cpp

        if self.llm is not None and self.llm.n_ctx() >= n_ctx:
            return
        from llama_cpp._utils import suppress_stdout_stderr

        self.close()
        try:
            # llama.cpp logs warnings past verbose=False while it sets up (Gemma 3's SWA cache); failures
            # still surface as the exception below.
            with suppress_stdout_stderr(disable=self.verbose):
                self.llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_batch=512,
                                           n_threads=self.threads, n_threads_batch=self.threads,
                                           logits_all=False, verbose=self.verbose)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from None

    def _render_chat(self, prompt: Prompt) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
        """(shared, rest) of the chat prompt rendered with the model's own template, each a list of
        (text, is_data) pieces: message contents are data, everything else is the template's."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model} has no chat template: use --prompt-format completion")
        vocab = self.llm._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm.detokenize([vocab.token_eos()], special=True).decode(errors="ignore"),
            bos_token=self.llm.detokenize([vocab.token_bos()], special=True).decode(errors="ignore"),
        )
        messages = prompt.chat_messages
        # Render once with a numbered slot for each message's content: what lies between the slots is
        # the template's own text (special tokens allowed), what fills them is data (never special).
        slots = [{"role": m["role"], "content": f"\x00{i}\x00"} for i, m in enumerate(messages)]
        parts = re.split(r"\x00(\d+)\x00", formatter(messages=slots).prompt)
        if [int(i) for i in parts[1::2]] != list(range(len(messages))):
            raise BackendError(f"{self.model}'s chat template repeats or drops message text: use "
                               "--prompt-format completion")
        full = formatter(messages=messages).prompt
        for fill in (lambda text: text, str.strip):  # templates that trim contents
            contents = [fill(m["content"]) for m in messages]
            pieces = [(parts[0], False)]
            for content, after in zip(contents, parts[2::2], strict=True):
                pieces += [(content, True), (after, False)]
            if "".join(text for text, _ in pieces) == full:
                break
        else:
            raise BackendError(f"{self.model}'s chat template rewrites message text: use "
                               "--prompt-format completion")
        # The shared part ends where the last user turn's content begins.
        return pieces[:-2], pieces[-2:]

    def rendered_prompt(self, prompt: Prompt) -> str:
        """The text the model reads (chat prompts in the model's template), for --log-prompts and
        --show-prompt; loads the model's vocabulary and template if nothing has yet."""
        if self.llm is None:
            self._load(512)
        if prompt.format is PromptFormat.chat:
            shared, rest = self._render_chat(prompt)
            return "".join(text for text, _ in shared + rest)
        return prompt.text

    def _tokenize_pieces(self, pieces: list[tuple[str, bool]], add_bos: bool) -> list[int]:
        tokens: list[int] = []
        for text, is_data in pieces:
            if text and is_data:
                tokens += self._plain_tokens(text.encode(), add_bos=add_bos and not tokens)
            elif text:
                tokens += self.llm.tokenize(text.encode(), add_bos=add_bos and not tokens, special=True)
        return tokens

    def _is_marker_token(self, token: int) -> bool:
        import llama_cpp

        attributes = llama_cpp.llama_vocab_get_attr(self.llm._model.vocab, token)
        return bool(attributes & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED))

    def _plain_tokens(self, data: bytes, add_bos: bool) -> list[int]:
        """Data as ordinary tokens only. `special=False` still matches "user-defined" added tokens whole
        (Qwen's `<tool_call>`, `<think>`): the text is cut inside each such token's text, after its first
        character, so that the pieces tokenise as ordinary text."""
        bos = self.llm.tokenize(b"", add_bos=True, special=False) if add_bos else []
        segments = [data]
        for _ in range(_PLAIN_TOKEN_ROUNDS):
            tokens = [token for segment in segments if segment
                      for token in self.llm.tokenize(segment, add_bos=False, special=False)]
            markers = {self.llm.detokenize([token], special=True) for token in tokens if self._is_marker_token(token)}
            if not markers:
                return bos + tokens
            segments = [part for segment in segments for part in _cut_inside(segment, markers)]
        raise BackendError("data text keeps tokenising into the model's special tokens; neutralise it first")

    def tokens(self, prompt: Prompt) -> tuple[list[int], list[int]]:
        """(shared exemplar tokens, question tokens) of a prompt. Question and exemplar text is always
        tokenised as plain text: `<|im_start|>` in data is never the control token."""
        if prompt.format is PromptFormat.chat:
            shared, rest = self._render_chat(prompt)
            return self._tokenize_pieces(shared, add_bos=True), self._tokenize_pieces(rest, add_bos=False)
        shared_tokens = self._plain_tokens(prompt.shared.encode(), add_bos=True)
        rest_tokens = self._plain_tokens(prompt.question.encode(), add_bos=False)
        return shared_tokens, rest_tokens

    def path_decoder(self, request: GenerationRequest, prompt_tokens: int) -> PathDecoder:
        import llama_cpp

        vocab = self.llm._model.vocab
        return PathDecoder(request, prompt_tokens, self.llm.detokenize,
                           lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)))

    # -- generation ------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], feed: PathFeed | None = None) -> Iterator[Generation]:
        """`feed`: paths of later callers join free slots of the running batch if they fit it (batch_size > 1);
        paths it no longer wants are dropped."""
        if not requests:
            return
        if self.llm is None:
            self._load(self._n_ctx_request or 4096)
        split = [self.tokens(r.prompt) for r in requests]
        max_new = max(r.params.max_tokens for r in requests)
        if self.batch_size > 1:
            from .llama_batched import BatchedDecoder

            if self._batched is None:
                self._batched = BatchedDecoder(self, self.batch_size)
            yield from self._batched.generate(requests, split, feed and TokenFeed(feed, self.tokens))
            return
        longest = max(len(shared) + len(rest) for shared, rest in split)
        needed = self._n_ctx_request or -(-(longest + max_new) // CONTEXT_ROUNDING) * CONTEXT_ROUNDING
        if needed > self.llm.n_ctx():
            self._load(needed)
        for request, (shared, rest) in zip(requests, split, strict=True):
            if feed is None or feed.wants(request):
                yield self._generate_one(request, shared, rest)

    def _logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).copy()

    def _prepare(self, shared: list[int], rest: list[int]) -> None:
        """Leave the cache holding shared + rest, computed canonically, and keep the last logits."""
        tokens = shared + rest
        if tokens == self._prompt_tokens:
            return
        if shared != self._shared_tokens:
            self.llm.reset()
            self.llm.eval(shared)
            self._shared_tokens = shared
        self.llm.n_tokens = len(shared)  # the next eval drops every cell past the shared block
        self.llm.eval(rest)
        self._prompt_tokens = tokens
        self._prompt_logits = self._logits()

    def _generate_one(self, request: GenerationRequest, shared: list[int], rest: list[int]) -> Generation:
        started = time.perf_counter()
        self._prepare(shared, rest)
        self.llm.n_tokens = len(shared) + len(rest)
        path = self.path_decoder(request, len(shared) + len(rest))
        token = path.push(self._prompt_logits)
        while token is not None:
            self.llm.eval([token])
            token = path.push(self._logits())
        path.seconds = time.perf_counter() - started
        return path.result()

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
            self._batched = None
        if self.llm is not None:
            self.llm.close()
            self.llm = None
        self._shared_tokens = self._prompt_tokens = None


LOCAL = "Local model (--backend local)"


class LocalOptions(BackendOptions):
    identity_defaults = {}  # the local backend never recorded a server

    threads: Annotated[int | None, Field(ge=1, le=1024), Cli("CPU threads for the local model.", LOCAL,
                                                    default_shown="the cores this process may use")] = None
    batch_size: Annotated[int, Field(ge=1, le=128), Cli(
        "Paths the local model decodes together (continuous batching). 1 decodes one path at a time: "
        "slower, but a resumed run then reproduces an uninterrupted one bit for bit.", LOCAL)] = 8
    # Changes paths' texts: in the identity, recorded only when on so stores made before it resume.
    stop_at_answer: Annotated[bool, Identity(only_if_set=True), Cli(
        "End a path as soon as its answer statement is complete ('The answer is 72.'), instead of at the "
        "end of its line; its finish reason is then 'answer'. Numeric, letter and yes/no tasks.", LOCAL)] = False


def _start(config: BackendConfig) -> LlamaCppBackend:
    options = config.options_as(LocalOptions)
    return LlamaCppBackend(config.model, threads=options.threads, batch_size=options.batch_size)


def _preview(config: BackendConfig, request: GenerationRequest) -> str:
    """The text the model reads: chat prompts through the model's own template (loads its vocabulary)."""
    if request.prompt.format is not PromptFormat.chat:
        return request.prompt.text
    backend = LlamaCppBackend(config.model, threads=config.options_as(LocalOptions).threads)
    try:
        return backend.rendered_prompt(request.prompt)
    finally:
        backend.close()


BACKEND = BackendSpec(_start, LocalOptions, summary="the embedded llama.cpp model", preview=_preview,
                      check_model=check_model_name, shared_decoder=True,
                      stops_at_answer=lambda options: options.stop_at_answer)
