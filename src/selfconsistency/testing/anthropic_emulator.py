"""A local emulator of Anthropic's Messages, Message Batches and Models APIs, for tests and dry runs.

Written from Anthropic's API reference and guides (batch processing, prompt caching, errors, versions), not
from this tool's client: `POST /v1/messages`, `POST /v1/messages/batches`, `GET /v1/messages/batches[/{id}
[/results]]` (pages newest first, `after_id`), `POST /v1/messages/batches/{id}/cancel`, `GET /v1/models[/{id}]`.

- Every call needs the key (`x-api-key`, or `Authorization: Bearer` as SDK 2.x sends it) and an
  `anthropic-version` (2023-06-01 or 2026-10-21); errors are `{"type": "error", "error": {type, message}}`
  with the documented statuses (401, 400, 404, 413, 429 with retry-after, 500, 529).
- Requests are checked as the docs describe: a known model, max_tokens, turns, no temperature / top_p /
  top_k under 2026-10-21 nor for models that removed them, not temperature and top_p together where a
  model takes one of them, at most 4 cache breakpoints with ttl 5m or 1h. In a batch, a request that fails
  these checks is an `errored` result (invalid_request_error); the batch itself checks custom_ids
  (`^[a-zA-Z0-9_-]{1,64}$`, unique), 1 to 100,000 requests and 256 MB.
- Tokens are counted as the other emulators count them (characters / CHARS_PER_TOKEN per text block).
  Prompt caching: the prompt up to the last breakpoint, when at least the model's documented minimum, is
  written to the cache the first time it is seen within its TTL (5m or 1h) and read afterwards; in a batch
  the requests run one after another, so the first writes and the rest read (the real service only does
  its best). Usage reports input_tokens, cache_creation_input_tokens (with the 5m / 1h split),
  cache_read_input_tokens and output_tokens.
- A batch is `in_progress` on its own thread, then `ended` with a `results_url`; its JSONL results come in
  shuffled order. `billed` lists every request the service charged for (batch or not), for tests that
  check each is collected and counted once.

Faults (`Faults`): errored results (overloaded_error, api_error: retryable; invalid_request_error for
requests holding a text), expired batches (half processed), results streams cut mid-line, unreadable or
foreign result lines, 429s with retry-after, a cap on batches in progress (create answers 429), 529s on
the Messages API, and slow Messages answers (billed first, answered later: a kill lands in between).

    python -m selfconsistency.testing.anthropic_emulator --port 8125 --key sk-ant-test
    ANTHROPIC_BASE_URL=http://127.0.0.1:8125 ANTHROPIC_API_KEY=sk-ant-test selfconsistency run gsm8k \\
        --backend anthropic-batch --model claude-haiku-4-5 ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..costs import CHARS_PER_TOKEN
from .bedrock_emulator import generated_text

VERSIONS = ("2023-06-01", "2026-10-21")
SAMPLING = ("temperature", "top_p", "top_k")
TTL_SECONDS = {"5m": 300, "1h": 3600}
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS, MAX_BATCH_BYTES = 100_000, 256 * 1024 * 1024
FIELDS = {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences",
          "metadata", "stream", "thinking", "tools", "tool_choice", "cache_control", "service_tier"}


@dataclass(frozen=True)
class Card:
    """A model as its overview page and the migration guides describe it."""

    sampling: str  # "all", "one" (temperature or top_p, not both) or "none" (removed)
    min_cacheable: int  # tokens
    max_tokens: int
    context: int


MODELS = {  # ids and their aliases
    "claude-haiku-4-5-20251001": Card("one", 4096, 64_000, 200_000),
    "claude-sonnet-4-5-20250929": Card("one", 1024, 64_000, 200_000),
    "claude-3-5-haiku-20241022": Card("all", 2048, 8_192, 200_000),
    "claude-haiku-5-5": Card("none", 4096, 128_000, 1_000_000),
    "claude-opus-4-7": Card("none", 2048, 128_000, 1_000_000),
}
ALIASES = {"claude-haiku-4-5": "claude-haiku-4-5-20251001", "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
           "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022"}


@dataclass
class Faults:
    """What to break; counters apply to the next requests, batches or downloads."""

    overloaded: int = 0  # the next N batch requests processed end errored, overloaded_error
    api_errors: int = 0  # the next N batch requests processed end errored, api_error
    bad_input: str | None = None  # requests holding this text end errored, invalid_request_error
    expire_batches: int = 0  # the next N batches end with half their requests expired
    cut_results: int = 0  # the next N results downloads end in the middle of a line
    malformed_lines: int = 0  # per batch, so many result lines are broken (half not JSON, half another shape)
    garble: str | None = None  # every result line's custom_id is another: "foreign_id" (id + "x") or "list_id"
    throttle_every: int = 0  # every Nth call gets a 429 rate_limit_error with retry-after
    retry_after: float = 0.0
    max_batches_in_progress: int | None = None  # creates beyond it get a 429
    overloaded_calls: int = 0  # the next N Messages API calls get a 529 overloaded_error
    create_reply_delay_s: float = 0.0  # a batch create registers its batch, then waits this long before answering
    message_delay_s: float = 0.0  # a Messages API call is billed, then answered this much later (a slow model)


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.kind, "message": self.message},
                "request_id": f"req_{uuid.uuid4().hex[:20]}"}


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) and b.get("type") == "text"
                                                and isinstance(b.get("text"), str) for b in content):
        raise _invalid("content: expected a string or a list of text blocks")
    return content


def card(model: Any) -> tuple[str, Card]:
    name = ALIASES.get(model, model)
    if name not in MODELS:
        raise ApiError(404, "not_found_error", f"model: {model}")
    return name, MODELS[name]


def check(params: Any, version: str) -> tuple[Card, list[dict[str, Any]]]:
    """A Messages request as the API checks it; returns the model's card and the prompt's blocks in order
    (system first), or raises the documented error."""
    if not isinstance(params, dict):
        raise _invalid("request: expected an object")
    extra = sorted(set(params) - FIELDS)
    if extra:
        raise _invalid(f"{extra[0]}: Extra inputs are not permitted")
    _, model = card(params.get("model"))
    tokens = params.get("max_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= model.max_tokens:
        raise _invalid(f"max_tokens: must be an integer from 1 to {model.max_tokens}")
    given = [name for name in SAMPLING if name in params]
    if given and version == "2026-10-21":
        raise _invalid(f"`{given[0]}` is not supported in API version 2026-10-21")
    if given and model.sampling == "none":
        raise _invalid(f"`{given[0]}` is deprecated for this model.")
    if model.sampling == "one" and "temperature" in params and "top_p" in params:
        raise _invalid("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
    if not 0 <= params.get("temperature", 1) <= 1 or not 0 <= params.get("top_p", 1) <= 1:
        raise _invalid("temperature and top_p must be between 0 and 1")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        raise _invalid("messages: the first message must use the user role")
    blocks = _blocks(params["system"]) if "system" in params else []
    for message in messages:
        if message.get("role") not in ("user", "assistant"):
            raise _invalid("messages: roles must be user or assistant")
        blocks += _blocks(message.get("content"))
    marks = [b["cache_control"] for b in blocks if "cache_control" in b]
    if len(marks) > 4 or any(m.get("type") != "ephemeral" or m.get("ttl", "5m") not in TTL_SECONDS for m in marks):
        raise _invalid("cache_control: at most 4 breakpoints, type ephemeral, ttl 5m or 1h")
    return model, blocks


@dataclass
class Emulator:
    api_key: str = "sk-ant-emulated"
    step_seconds: float = 0.05  # a batch's time before processing, and per request / 10
    faults: Faults = field(default_factory=Faults)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    billed: list[dict[str, Any]] = field(default_factory=list)  # every charged request, batch or not
    message_calls: int = 0  # Messages API calls answered
    versions_seen: list[str] = field(default_factory=list)
    calls: int = 0
    cache: dict[str, float] = field(default_factory=dict)  # prefix digest -> expiry (time.time())
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- one Messages request ------------------------------------------------------------------------

    def answer(self, params: dict[str, Any], version: str, seed: str, batch_id: str | None = None,
               custom_id: str | None = None) -> dict[str, Any]:
        """The Message for a request (checked first), its cache use and its billing entry."""
        model, blocks = check(params, version)
        total = sum(_tokens(b["text"]) for b in blocks)
        usage = {"input_tokens": total, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}
        marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
        if marked:
            prefix = blocks[: marked[-1] + 1]
            length = sum(_tokens(b["text"]) for b in prefix)
            ttl = blocks[marked[-1]]["cache_control"].get("ttl", "5m")
            key = hashlib.sha256(json.dumps([params["model"], [b["text"] for b in prefix]]).encode()).hexdigest()
            if length >= model.min_cacheable:
                with self.lock:
                    now = time.time()
                    hit = self.cache.get(key, 0) > now
                    self.cache[key] = max(self.cache.get(key, 0), now + TTL_SECONDS[ttl])  # a read refreshes it
                usage["input_tokens"] = total - length
                if hit:
                    usage["cache_read_input_tokens"] = length
                else:
                    usage["cache_creation_input_tokens"] = length
                    usage["cache_creation"][f"ephemeral_{ttl}_input_tokens"] = length
        text = generated_text(seed, 0).strip()
        usage["output_tokens"] = _tokens(text)
        with self.lock:
            self.billed.append({"batch_id": batch_id, "custom_id": custom_id, "model": params["model"],
                                "input": usage["input_tokens"], "cache_write": usage["cache_creation_input_tokens"],
                                "cache_read": usage["cache_read_input_tokens"], "output": usage["output_tokens"]})
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": params["model"], "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": usage}

    def message(self, params: dict[str, Any], version: str) -> dict[str, Any]:
        with self.lock:
            overloaded = self.faults.overloaded_calls > 0
            self.faults.overloaded_calls -= overloaded
        if overloaded:
            raise ApiError(529, "overloaded_error", "Overloaded")
        seed = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        answered = self.answer(params, version, seed)
        with self.lock:
            self.message_calls += 1
        time.sleep(self.faults.message_delay_s)  # billed already: a client killed meanwhile paid for nothing stored
        return answered

    # -- batches -------------------------------------------------------------------------------------

    def create(self, body: Any, size: int, version: str) -> dict[str, Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if size > MAX_BATCH_BYTES:
            raise ApiError(413, "request_too_large", "a batch is at most 256 MB")
        if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_BATCH_REQUESTS:
            raise _invalid("requests: 1 to 100,000 requests")
        seen = set()
        for request in requests:
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise _invalid(f"requests: custom_id {custom_id!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$")
            if custom_id in seen:
                raise _invalid(f"requests: custom_id {custom_id!r} is not unique")
            seen.add(custom_id)
        with self.lock:
            cap = self.faults.max_batches_in_progress
            if cap is not None and sum(b["processing_status"] != "ended" for b in self.batches.values()) >= cap:
                raise ApiError(429, "rate_limit_error", "Too many batches in progress",
                               {"retry-after": f"{self.faults.retry_after:g}"})
            expire = self.faults.expire_batches > 0
            self.faults.expire_batches -= expire
            batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
            batch = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                     "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                        "expired": 0},
                     "ended_at": None, "created_at": _now(), "expires_at": None, "archived_at": None,
                     "cancel_initiated_at": None, "results_url": None,
                     "_requests": requests, "_version": version, "_expire": expire, "_results": [],
                     "_order": len(self.batches)}
            self.batches[batch_id] = batch
        threading.Thread(target=self._run, args=(batch,), daemon=True).start()
        time.sleep(self.faults.create_reply_delay_s)  # the batch exists; its creator has not heard so yet
        return batch

    def _run(self, batch: dict[str, Any]) -> None:
        time.sleep(self.step_seconds)
        requests = batch["_requests"]
        runs = len(requests) // 2 if batch["_expire"] else len(requests)
        for position, request in enumerate(requests):
            if batch["processing_status"] == "canceling" or position >= runs:
                kind = "canceled" if batch["processing_status"] == "canceling" else "expired"
                self._result(batch, request["custom_id"], {"type": kind}, kind)
                continue
            time.sleep(self.step_seconds / 10)
            self._result(batch, request["custom_id"], *self._process(batch, request))
        with self.lock:
            batch.update(processing_status="ended", ended_at=_now())

    def _process(self, batch: dict[str, Any], request: dict[str, Any]) -> tuple[dict[str, Any], str]:
        with self.lock:
            kind = "overloaded_error" if self.faults.overloaded > 0 else "api_error" if self.faults.api_errors > 0 \
                else None
            if kind == "overloaded_error":
                self.faults.overloaded -= 1
            elif kind == "api_error":
                self.faults.api_errors -= 1
        params = request.get("params")
        if kind is None and self.faults.bad_input and self.faults.bad_input in json.dumps(params):
            kind, message = "invalid_request_error", "emulated: the prompt is refused"
        else:
            message = "emulated server error"
        if kind is None:
            digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
            seed = f"{request['custom_id']}:{digest}"
            try:
                return {"type": "succeeded", "message": self.answer(params, batch["_version"], seed, batch["id"],
                                                                    request["custom_id"])}, "succeeded"
            except ApiError as exc:  # a request the API refuses fails alone
                kind, message = exc.kind, exc.message
        return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}, "errored"

    def _result(self, batch: dict[str, Any], custom_id: str, result: dict[str, Any], kind: str) -> None:
        with self.lock:
            batch["_results"].append({"custom_id": custom_id, "result": result})
            batch["request_counts"]["processing"] -= 1
            batch["request_counts"][kind] += 1

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.get(batch_id)
        if batch["processing_status"] == "ended":
            raise _invalid(f"batch {batch_id} has ended and cannot be canceled")
        with self.lock:
            batch.update(processing_status="canceling", cancel_initiated_at=_now())
        return batch

    def get(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"batch {batch_id} not found")
        return batch

    def results(self, batch_id: str) -> bytes:
        batch = self.get(batch_id)
        if batch["processing_status"] != "ended":
            raise _invalid(f"batch {batch_id} has not ended: its results are not available yet")
        rows = json.loads(json.dumps(batch["_results"]))
        random.Random(batch_id).shuffle(rows)  # results are not in request order
        for row in rows if self.faults.garble else ():
            row["custom_id"] = [row["custom_id"]] if self.faults.garble == "list_id" else row["custom_id"] + "x"
        texts = [json.dumps(row) for row in rows]
        for index in range(min(self.faults.malformed_lines, len(texts))):
            texts[index] = texts[index][: len(texts[index]) // 2] if index % 2 == 0 else \
                json.dumps({"custom_id": rows[index]["custom_id"], "result": {"type": "succeeded"}})
        data = "".join(text + "\n" for text in texts).encode()
        with self.lock:
            cut = self.faults.cut_results > 0 and len(texts) > 1
            self.faults.cut_results -= cut
        if cut:  # a stream that stops in the middle of its last line but one
            data = data[: len(data) - len(texts[-1]) - 1 - len(texts[-2]) // 2]
        return data

    def page(self, query: dict[str, str], host: str) -> dict[str, Any]:
        ordered = sorted(self.batches.values(), key=lambda b: -b["_order"])
        ids = [b["id"] for b in ordered]
        if query.get("after_id") in ids:
            ordered = ordered[ids.index(query["after_id"]) + 1:]
        limit = max(1, min(1000, int(query.get("limit", 20))))
        data = [public(b, host) for b in ordered[:limit]]
        return {"data": data, "has_more": len(ordered) > limit, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}


def public(batch: dict[str, Any], host: str) -> dict[str, Any]:
    shown = {k: v for k, v in batch.items() if not k.startswith("_")}
    if batch["processing_status"] == "ended":
        shown["results_url"] = f"http://{host}/v1/messages/batches/{batch['id']}/results"
    return shown


def model_info(name: str, model: Card) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-10-01T00:00:00Z",
            "lifecycle": "active", "max_input_tokens": model.context, "max_tokens": model.max_tokens}


def make_server(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/binary" if isinstance(payload, bytes)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a test killed it)
                pass

        def _serve(self, method: str) -> None:
            parsed = urllib.parse.urlparse(self.path)
            path, query = parsed.path, dict(urllib.parse.parse_qsl(parsed.query))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            try:
                status, payload = self._route(method, path, query, raw)
            except ApiError as exc:
                self._reply(exc.status, exc.body(), exc.headers)
                return
            self._reply(status, payload)

        def _route(self, method: str, path: str, query: dict[str, str], raw: bytes):
            given = self.headers.get("x-api-key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if given != emulator.api_key:
                raise ApiError(401, "authentication_error", "invalid x-api-key")
            version = self.headers.get("anthropic-version")
            if version not in VERSIONS:
                raise _invalid(f"anthropic-version: {version!r} is not a known version (header required)")
            with emulator.lock:
                emulator.versions_seen.append(version)
                emulator.calls += 1
                every = emulator.faults.throttle_every
                throttled = bool(every) and emulator.calls % every == 0
            if throttled:
                raise ApiError(429, "rate_limit_error", "Number of requests has exceeded your rate limit",
                               {"retry-after": f"{emulator.faults.retry_after:g}"})
            host = self.headers.get("Host", "127.0.0.1")
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise _invalid("the body is not JSON") from None
            batch = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", path)
            if method == "POST" and path == "/v1/messages":
                return 200, emulator.message(body, version)
            if method == "POST" and path == "/v1/messages/batches":
                return 200, public(emulator.create(body, len(raw), version), host)
            if method == "GET" and path == "/v1/messages/batches":
                return 200, emulator.page(query, host)
            if batch and method == "POST" and batch.group(2) == "/cancel":
                return 200, public(emulator.cancel(batch.group(1)), host)
            if batch and method == "GET" and batch.group(2) == "/results":
                return 200, emulator.results(batch.group(1))
            if batch and method == "GET" and not batch.group(2):
                return 200, public(emulator.get(batch.group(1)), host)
            if method == "GET" and path.startswith("/v1/models/"):
                name, model = card(urllib.parse.unquote(path[len("/v1/models/"):]))
                return 200, model_info(name, model)
            if method == "GET" and path == "/v1/models":
                data = [model_info(name, model) for name, model in MODELS.items()]
                return 200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
            raise ApiError(404, "not_found_error", f"no route {method} {path}")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("POST")

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--key", default="sk-ant-emulated", help="the API key it accepts")
    parser.add_argument("--step-seconds", type=float, default=1.0)
    args = parser.parse_args()
    server = make_server(Emulator(api_key=args.key, step_seconds=args.step_seconds), args.host, args.port)
    print(f"Anthropic API emulator on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
