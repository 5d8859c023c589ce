"""An OpenAI-compatible endpoint that answers with self-consistency.

POST /v1/chat/completions and /v1/completions sample paths through the configured backend, vote (or pick
with Universal Self-Consistency for free-form answers) and return a normal completion: the content is
the winning path, `usage` sums every path (and the USC request), and a `self_consistency` object holds
the answer, agreement, votes ({answer: paths}; under USC the selection: {"selected_path", "candidates",
"parsed"}), paths used and the stopping rule. GET /v1/models and GET /health too.

The question is the last message, a user's (or the prompt). On a server started with `--prompt-format
chat`, a system message (first) is the system prompt and earlier user/assistant turns come after the
task's exemplars, before the question; a completion-format server refuses them with a 400 rather than
drop them silently.
A client that disconnects stops its paths (at the next path; on the embedded model, its batch stops
once no caller in it is still listening).
Per request: `n` is the number of paths (unless `self_consistency.paths` is given), `temperature`,
`top_p`, `top_k`, `max_tokens` and `seed` are honoured, and the body's `self_consistency` object overrides
`paths`, `stop`, `answer_type`, `method` and `min_agreement`. The body's `model` is not used to choose a
model: the server answers with the one it was started with and names it in the response.

One request cannot order unbounded work: its paths in total (prompts x paths), its `max_tokens`, its
text (question and earlier turns) and its body size have ceilings; over one is a 400 (413 for the body)
naming it. The API key is checked before the body is read.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .answers import Answer, MinAgreement
from .api import Cancelled, Question, SelfConsistency
from .backends.base import BackendError
from .prompts import PromptFormat
from .runlock import RunDirError, prepare_run_dir
from .settings import SamplingSettings, StoppingSettings, Temperature, request_field
from .store import StoreMismatch
from .tasks import DataError

DISCONNECT_POLL_SECONDS = 0.25  # how often a request being answered checks that its client is still there
MAX_REQUEST_PATHS = 256  # default ceiling on one request's paths, over all its prompts
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I)
MAX_BODY_BYTES = 4 * 1024 * 1024  # 256 prompts of 8,000 characters fit, with JSON's escapes
MAX_SETTINGS_STORES = 16  # stores a --run-dir server keeps for requests whose settings change the paths' text
# OpenAI fields that would change what comes back but that this server does not apply: refused when set
# (a client's null, 0 or false asks for nothing), never accepted and ignored
UNSUPPORTED = ("stop", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
               "response_format", "tools", "tool_choice", "functions", "function_call", "best_of", "echo",
               "suffix", "min_p", "repeat_penalty")
log = logging.getLogger(__name__)


class ServeError(Exception):
    """The server cannot start as asked (an empty API key, a port in use): a user's error."""


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


class Overrides(BaseModel):
    """The body's `self_consistency` object: settings, each with the declared setting's bounds (the answer
    type, method and stop rule are checked as the Python API checks them)."""

    model_config = ConfigDict(extra="forbid")

    paths: request_field(SamplingSettings, "paths") = None
    stop: request_field(StoppingSettings, "stop") = None
    answer_type: str | None = None  # a registered answer type
    method: str | None = None
    min_agreement: Annotated[MinAgreement | None, Field(strict=True)] = None


class _Sampling(BaseModel):
    """The OpenAI sampling fields this server honours, each bounded as the setting it sets; strict: a
    number, not "0.7" (ints are still numbers: pydantic's strict float takes them)."""

    model_config = ConfigDict(extra="allow")  # other OpenAI fields (user, metadata, ...): UNSUPPORTED are refused

    model: str | None = None
    n: request_field(SamplingSettings, "paths") = None
    temperature: Annotated[Temperature | None, Field(strict=True)] = None
    top_p: request_field(SamplingSettings, "top_p") = None
    top_k: request_field(SamplingSettings, "top_k") = None  # not OpenAI's: llama.cpp's and vLLM's servers take it
    max_tokens: request_field(SamplingSettings, "max_tokens") = None
    max_completion_tokens: request_field(SamplingSettings, "max_tokens") = None
    seed: request_field(SamplingSettings, "seed") = None
    stream: bool = Field(default=False, strict=True)
    self_consistency: Overrides | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: Any) -> Any:
        """Text parts only: an image or audio part has no place in a text prompt, and dropping it would
        answer another question."""
        if isinstance(content, list):
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError('content parts must be {"type": "text", "text": "..."}; '
                                     f"not {json.dumps(part)[:80]}")
        return content


class ChatBody(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Sampling):
    prompt: str | list[str]


def _text(message: ChatMessage) -> str:
    """A message's text (text parts joined)."""
    content = message.content
    if isinstance(content, list):
        content = "\n".join(part["text"] for part in content)
    return content or ""


def _conversation(messages: list[ChatMessage], prompt_format: PromptFormat) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last message, a user's) and the turns before it, (role, text): a system
    (or developer) message first, then user and assistant turns. Anything else is refused, and so is
    any turn before the question when the prompt format has no place for it."""
    *before, last = messages
    if last.role != "user" or not _text(last).strip():
        raise OpenAIError(400, "the last message must be the user's question, with text", param="messages")
    context = []
    for index, message in enumerate(before):
        role = "system" if message.role in ("system", "developer") else message.role
        if role not in ("system", "user", "assistant") or (role == "system" and index > 0):
            raise OpenAIError(400, f"messages[{index}]: only a system message (first), then user and assistant "
                              f"turns can precede the question, not {message.role!r} here", param="messages")
        if _text(message).strip():
            context.append((role, _text(message)))
    if context and prompt_format is not PromptFormat.chat:
        raise OpenAIError(400, "this server builds completion prompts, which have no place for a system message "
                          "or earlier turns: send the question alone, or start the server with "
                          "--prompt-format chat", param="messages")
    return _text(last), context


def _engine(base: SelfConsistency, body: _Sampling, max_tokens_ceiling: int) -> SelfConsistency:
    """The instance for this request: the server's, with the body's settings applied. On a server with a
    run directory, a request whose settings change the paths' text keeps them in a subdirectory of its
    own (settings-HASH), as a store holds paths of one set of settings."""
    for name in UNSUPPORTED:
        if (body.model_extra or {}).get(name) not in (None, 0, False, [], {}):
            raise OpenAIError(400, f"{name} is not supported by this self-consistency server; the stop rule "
                              "and sampling settings are self_consistency.stop, temperature, top_p and top_k",
                              param=name)
    changes: dict[str, Any] = {}
    overrides = body.self_consistency or Overrides()
    if overrides.paths is not None or body.n is not None:
        changes["paths"] = overrides.paths or body.n
    if body.temperature is not None:
        changes["temperature"] = body.temperature
    if body.max_tokens or body.max_completion_tokens:
        changes["max_tokens"] = body.max_completion_tokens or body.max_tokens
        if changes["max_tokens"] > max_tokens_ceiling:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise OpenAIError(400, f"{param} {changes['max_tokens']} is over this server's limit of "
                              f"{max_tokens_ceiling} tokens per path", param=param)
    for name in ("top_p", "top_k", "seed"):
        if getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    changes.update({k: v for k, v in overrides.model_dump(exclude={"paths"}).items() if v is not None})
    if not changes:
        return base
    try:
        engine = base.with_options(**changes)
        if base.run_dir is not None:
            own, server = (settings.settings_hash(task) for settings, task in (engine.settings(), base.settings()))
            if own != server:
                kept = base.run_dir / f"settings-{own}"
                # Clients that send a new seed or top_p each time would fill the disk with stores: past a few,
                # a new setting's paths are answered in a temporary directory and not kept.
                if kept.is_dir() or len(list(base.run_dir.glob("settings-*"))) < MAX_SETTINGS_STORES:
                    engine = engine.with_options(run_dir=kept)
                else:
                    engine = engine.with_options(run_dir=None)
        return engine
    except (ValueError, DataError) as exc:
        raise OpenAIError(400, str(exc), param="self_consistency") from None


def _openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return OpenAIError(status, message, kind=kind, code=code).response()


class _Gate:
    """ASGI middleware in front of /v1: the API key is checked before any of the body is read, and a
    body over `max_body_bytes` is refused (by its Content-Length, or as it streams in when chunked)
    without being held; an accepted body is handed on to the app."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if not self._authorized(headers):
            return await _openai_error(401, "missing or incorrect API key (Authorization: Bearer KEY)",
                                       code="invalid_api_key")(scope, receive, send)
        too_large = _openai_error(413, f"the request body is over this server's limit of {self.max_body_bytes} "
                                       "bytes", code="request_too_large")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _summary(answer: Answer) -> dict[str, Any]:
    summary = {"answer": answer.answer, "agreement": answer.agreement, "votes": answer.votes,
               "paths_used": answer.paths_used, "abstained": answer.abstained, "stopped_by": answer.stopped_by,
               "method": answer.method,
               "paths": [{"index": p.index, "answer": p.answer, "completion_tokens": p.completion_tokens,
                          "finish_reason": p.finish_reason} for p in answer.paths]}
    if answer.low_confidence is not None:
        summary["low_confidence"] = answer.low_confidence
    return summary


def _winner(answer: Answer) -> tuple[str, str]:
    """The content and finish reason to return: the chosen (USC) or first winning path's; the first
    path's when every path abstained."""
    if answer.method == "usc":  # votes holds the selection
        chosen = next((p for p in answer.paths if p.index == answer.votes["selected_path"]), None)
    else:
        chosen = next((p for p in answer.paths if answer.answer is not None and p.answer == answer.answer), None)
    chosen = chosen or (answer.paths[0] if answer.paths else None)
    return (chosen.text, chosen.finish_reason) if chosen else ("", "stop")


def _usage(answers: list[Answer]) -> dict[str, int]:
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _stream(chunk: dict[str, Any]) -> StreamingResponse:
    """The whole answer as one server-sent event, then [DONE]."""
    async def events():
        yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def create_app(engine: SelfConsistency, *, api_key: str | None = None, max_concurrent: int = 4,
               model_name: str | None = None, max_request_paths: int = MAX_REQUEST_PATHS,
               max_tokens_ceiling: int | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app answering with `engine`. `api_key`: requests must carry `Authorization: Bearer KEY`
    (compared in constant time, before the body is read; never logged). At most `max_concurrent` requests
    are answered at once; the others wait their turn. Per request: at most `max_request_paths` paths over
    all its prompts, `max_tokens` up to `max_tokens_ceiling` (default: the engine's max_tokens), its text
    up to the engine's max_question_chars, and a body of at most `max_body_bytes`."""
    if api_key is not None and not api_key.strip():
        raise ServeError("the API key is empty: give a key, or none to serve without one")
    if api_key is not None and api_key != api_key.strip():
        raise ServeError("the API key starts or ends with white space, which a bearer token cannot carry")
    if engine.run_dir is not None:  # a file, or a folder of other files, would fail every request later
        try:
            prepare_run_dir(engine.run_dir)
        except RunDirError as exc:
            raise ServeError(str(exc)) from None
    served = model_name or engine.model
    prompt_format = engine.prompt_format
    settings, _ = engine.settings()
    if max_tokens_ceiling is not None and max_tokens_ceiling < settings.sampling.max_tokens:
        raise ServeError(f"--max-tokens-limit {max_tokens_ceiling} is below the server's own --max-tokens "
                         f"{settings.sampling.max_tokens}, which requests without max_tokens use")
    max_tokens_ceiling = max_tokens_ceiling or settings.sampling.max_tokens
    max_chars = settings.experiment.max_question_chars
    slots = asyncio.Semaphore(max_concurrent)
    app = FastAPI(title="selfconsistency", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(OpenAIError)
    async def _openai_error_response(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid body"}
        if first.get("type") == "json_invalid":
            return OpenAIError(400, "the body is not valid JSON").response()
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = first["msg"].removeprefix("Value error, ")
        return OpenAIError(400, f"{where + ': ' if where else ''}{message}", param=where or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return OpenAIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
                           ).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the server's log has the traceback (uvicorn logs it); the client gets no internals
        return _openai_error(500, "the server failed to answer this request")

    def within_limits(texts: list[str], paths: int, param: str) -> None:
        if len(texts) * paths > max_request_paths:
            raise OpenAIError(400, f"{len(texts)} prompt(s) x {paths} paths is over this server's limit of "
                              f"{max_request_paths} paths per request", param=param)

    async def answered(request: Request, request_engine: SelfConsistency, questions: list[Question]) -> list[Answer]:
        """The answers, computed in a worker thread; a client that disconnects meanwhile stops its paths."""
        async with slots:
            if await request.is_disconnected():  # gone while waiting for a slot: buy nothing for it
                raise OpenAIError(499, "the client disconnected", code="client_closed_request")
            cancel = threading.Event()
            work = asyncio.ensure_future(run_in_threadpool(request_engine.answer_many, questions, None, None, cancel))
            try:
                while not (await asyncio.wait({work}, timeout=DISCONNECT_POLL_SECONDS))[0]:
                    if await request.is_disconnected():
                        cancel.set()
                return await work
            except Cancelled:
                raise OpenAIError(499, "the client disconnected", code="client_closed_request") from None
            except BackendError as exc:
                log.error("upstream failure: %s", exc)
                # the cause, without the upstream's address (an internal host is not the client's business)
                cause = _URL.sub("the upstream", str(exc))
                raise OpenAIError(502, f"upstream failure: {cause}", kind="upstream_error") from None
            except (DataError, ValueError) as exc:
                raise OpenAIError(400, str(exc)) from None
            except (StoreMismatch, RunDirError) as exc:
                log.error("the run directory refused a request: %s", exc)  # names server paths: not sent
                raise OpenAIError(500, "the server's run directory cannot take this request",
                                  kind="server_error") from None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": 0,
                                            "owned_by": "selfconsistency"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        question, context = _conversation(body.messages, prompt_format)
        if len(question) + sum(len(text) for _, text in context) > max_chars:
            raise OpenAIError(400, f"the messages hold over this server's limit of {max_chars} characters "
                              "(question and earlier turns)", param="messages", code="context_length_exceeded")
        request_engine = _engine(engine, body, max_tokens_ceiling)
        within_limits([question], request_engine._options["paths"], "n")
        asked = request_engine.chat_question(question, context) if context else question
        answer = (await answered(request, request_engine, [asked]))[0]
        content, finish = _winner(answer)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served,
                "self_consistency": _summary(answer)}
        if body.stream:
            return _stream({**base, "object": "chat.completion.chunk", "usage": _usage([answer]), "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}]})
        return {**base, "object": "chat.completion", "usage": _usage([answer]), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish,
             "logprobs": None}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or not all(p.strip() for p in prompts):
            raise OpenAIError(400, "prompt must be non-empty text (or a list of texts)", param="prompt")
        if any(len(p) > max_chars for p in prompts):
            raise OpenAIError(400, f"a prompt is over this server's limit of {max_chars} characters",
                              param="prompt", code="context_length_exceeded")
        request_engine = _engine(engine, body, max_tokens_ceiling)
        within_limits(prompts, request_engine._options["paths"], "prompt" if len(prompts) > 1 else "n")
        answers = await answered(request, request_engine, prompts)
        choices = []
        for index, answer in enumerate(answers):
            text, finish = _winner(answer)
            choices.append({"index": index, "text": text, "finish_reason": finish, "logprobs": None})
        summaries = [_summary(a) for a in answers]
        response = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                    "model": served, "choices": choices, "usage": _usage(answers),
                    "self_consistency": summaries[0] if isinstance(body.prompt, str) else summaries}
        return _stream(response) if body.stream else response

    return app


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """A port that cannot be bound is a one-line error before the model loads, not uvicorn's log lines."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class QueryRedacted(logging.Filter):
    """uvicorn's access log without query strings: `GET /v1/models?api_key=KEY` is logged as
    `GET /v1/models?[redacted]` (clients put keys there; the server never needs the log to keep them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def access_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with QueryRedacted on the access log."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": QueryRedacted}
    config["handlers"]["access"]["filters"] = ["no_query"]
    return config


def serve(engine: SelfConsistency, host: str = "127.0.0.1", port: int = 8000, *, api_key: str | None = None,
          max_concurrent: int = 4, model_name: str | None = None, max_request_paths: int = MAX_REQUEST_PATHS,
          max_tokens_ceiling: int | None = None) -> None:
    """Run the endpoint with uvicorn until interrupted (what `selfconsistency serve` does). uvicorn's
    access log names method, path and status, never headers nor query strings: no API key is logged.
    ServeError: an empty API key, or a port that cannot be bound."""
    import uvicorn

    try:
        app = create_app(engine, api_key=api_key, max_concurrent=max_concurrent, model_name=model_name,
                         max_request_paths=max_request_paths, max_tokens_ceiling=max_tokens_ceiling)
        _check_port(host, port)
        if api_key is None and not _loopback(host):
            print(f"warning: serving on {host} without an API key: anyone who can reach it can use the model "
                  "(set --api-key or SELFCONSISTENCY_API_KEY)", file=sys.stderr)
        uvicorn.run(app, host=host, port=port, log_level="info", log_config=access_log_config())
    finally:
        engine.close()
