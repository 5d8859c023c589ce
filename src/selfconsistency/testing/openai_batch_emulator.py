"""A local emulator of the OpenAI Files and Batch APIs, for tests and dry runs.

It follows the OpenAI API reference for the calls a batch run makes: `POST /v1/files` (multipart, purpose
"batch"), `GET /v1/files[/{id}[/content]]`, `POST /v1/batches`, `GET /v1/batches[/{id}]` (cursor pages,
newest first) and `POST /v1/batches/{id}/cancel`. A batch moves validating -> in_progress -> finalizing ->
completed on its own thread; it validates every input line (JSON, unique custom_id, POST, the batch's
endpoint, a body with a model) and fails with per-line errors as OpenAI does; answered requests go to the
output file and failed ones to the error file, in the documented line formats. Chat and text completions
come from a deterministic generator (reasoning text ending "The answer is N", with log-probabilities and
usage). Faults can be injected: failed request lines, expired, failed or cancelled batches, throttling.

    python -m selfconsistency.testing.openai_batch_emulator --port 8124
    OPENAI_BASE_URL=http://127.0.0.1:8124/v1 OPENAI_API_KEY=any selfconsistency run gsm8k --backend openai-batch ...
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..costs import CHARS_PER_TOKEN
from .bedrock_emulator import generated_text, output_seed

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class Faults:
    """What to break. Batch faults apply to the next batches created, in order."""

    failed_lines: int = 0  # the next N request lines processed are answered with an error (error file)
    expire_batches: int = 0  # the next N batches expire after answering half of their lines
    fail_batches: int = 0  # the next N batches fail validation
    throttle_every: int = 0  # every Nth API call gets a 429 with Retry-After
    bad_input: str | None = None  # request lines whose body contains this text are answered 400 (error file)
    malformed_lines: int = 0  # the next N output lines written are broken (half not JSON, half without a body)
    # every output line speaks another format: one of GARBLES (foreign or list custom_ids, too few or no
    # choices, list contents, or the whole file as one JSON array line)
    garble: str | None = None
    create_reply_delay_s: float = 0.0  # a batch create registers its batch, then waits this long before answering


GARBLES = ("foreign_id", "list_id", "fewer_choices", "no_choices", "list_content", "array_file")


def _garbled(rows: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    rows = json.loads(json.dumps(rows))
    for row in rows:
        choices = row["response"]["body"]["choices"]
        if how == "foreign_id":
            row["custom_id"] += "x"
        elif how == "list_id":
            row["custom_id"] = [row["custom_id"]]
        elif how == "fewer_choices":
            del choices[1:]
        elif how == "no_choices":
            choices.clear()
        elif how == "list_content":
            for choice in choices:
                choice.setdefault("message", {})["content"] = [choice.get("message", {}).get("content")]
    return rows


def completion(body: dict[str, Any], endpoint: str, seed: str) -> dict[str, Any]:
    """A (chat) completion response for a request body: `n` deterministic choices with log-probabilities."""
    n = int(body.get("n") or 1)
    prompt = json.dumps(body.get("messages") or body.get("prompt") or "")
    prompt_tokens = max(1, len(prompt) // CHARS_PER_TOKEN)
    choices, used = [], 0
    for index in range(n):
        text = generated_text(seed, index).strip()
        tokens = text.split(" ")
        logprobs = [-0.05 * (1 + (len(t) + index) % 5) for t in tokens]
        used += len(tokens)
        if endpoint == "/v1/chat/completions":
            choices.append({"index": index, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                            "logprobs": {"content": [{"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                                                     for t, lp in zip(tokens, logprobs, strict=True)]}})
        else:
            choices.append({"index": index, "finish_reason": "stop", "text": text,
                            "logprobs": {"tokens": tokens, "token_logprobs": logprobs}})
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": body.get("model"),
            "object": "chat.completion" if endpoint == "/v1/chat/completions" else "text_completion",
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used,
                                          "total_tokens": prompt_tokens + used}}


def _error(message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@dataclass
class Emulator:
    step_seconds: float = 0.05  # time spent in each status, and per request line in progress
    faults: Faults = field(default_factory=Faults)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    keys_seen: list[str] = field(default_factory=list)  # the bearer key of every call, for tests of where keys go
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- files -------------------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}
        with self.lock:
            self.files[file_id] = meta
            self.contents[file_id] = data
        return meta

    def upload(self, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields, name, data = {}, None, None
        for part in message.iter_parts():
            field_name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                name, data = part.get_filename(), part.get_payload(decode=True)
            else:
                fields[field_name] = part.get_payload(decode=True).decode()
        if data is None:
            return 400, _error("'file' is a required property", param="file")
        if fields.get("purpose") not in ("batch", "fine-tune", "assistants", "user_data", "evals", "vision"):
            return 400, _error(f"invalid purpose {fields.get('purpose')!r}", param="purpose")
        if fields["purpose"] == "batch" and not name.endswith(".jsonl"):
            return 400, _error("a batch input file must be a .jsonl file", param="file")
        return 200, self.add_file(name, data, fields["purpose"])

    # -- batches -----------------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for key in ("input_file_id", "endpoint", "completion_window"):
            if key not in body:
                return 400, _error(f"'{key}' is a required property", param=key)
        if body["endpoint"] not in ENDPOINTS:
            return 400, _error(f"unsupported endpoint {body['endpoint']!r}", param="endpoint")
        if body["completion_window"] != "24h":
            return 400, _error("completion_window must be '24h'", param="completion_window")
        source = self.files.get(body["input_file_id"])
        if source is None or source["purpose"] != "batch":
            return 400, _error(f"no batch input file {body['input_file_id']}", param="input_file_id")
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body["endpoint"],
                 "errors": None, "input_file_id": body["input_file_id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        with self.lock:
            fate = "complete"
            for name in ("fail_batches", "expire_batches"):
                if getattr(self.faults, name) > 0:
                    setattr(self.faults, name, getattr(self.faults, name) - 1)
                    fate = name
                    break
            batch["_fate"] = fate
            batch["_order"] = len(self.batches)
            self.batches[batch["id"]] = batch
        threading.Thread(target=self._run, args=(batch,), daemon=True).start()
        time.sleep(self.faults.create_reply_delay_s)  # the batch exists; its creator has not heard so yet
        return 200, _public(batch)

    def billed(self) -> dict[str, int]:
        """What the batches were billed: the requests answered (output file lines with a 200) and their usage."""
        requests = input_tokens = output_tokens = 0
        for batch in list(self.batches.values()):
            output = self.contents.get(batch["output_file_id"] or "", b"")
            for line in output.decode().splitlines():
                try:
                    response = json.loads(line).get("response") or {}
                except (ValueError, AttributeError):
                    continue
                if response.get("status_code") == 200:
                    usage = (response.get("body") or {}).get("usage") or {}
                    requests += 1
                    input_tokens += usage.get("prompt_tokens", 0)
                    output_tokens += usage.get("completion_tokens", 0)
        return {"records": requests, "input_tokens": input_tokens, "output_tokens": output_tokens}

    def get(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, _error(f"No batch found with id '{batch_id}'.", code="not_found")
        return 200, _public(batch)

    def list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        newest_first = sorted(self.batches.values(), key=lambda b: -b["_order"])
        if "after" in query:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(query["after"]) + 1:] if query["after"] in ids else []
        limit = max(1, min(100, int(query.get("limit", 20))))
        page = [_public(b) for b in newest_first[:limit]]
        return 200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                     "last_id": page[-1]["id"] if page else None, "has_more": len(newest_first) > limit}

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, _error(f"No batch found with id '{batch_id}'.", code="not_found")
        if batch["status"] in _ENDED:
            return 409, _error(f"Cannot cancel a batch with status '{batch['status']}'.")
        self._set(batch, "cancelling")
        return 200, _public(batch)

    # -- a batch's life ----------------------------------------------------------------------------

    def _set(self, batch: dict[str, Any], status: str, **extra: Any) -> None:
        with self.lock:
            if batch["status"] == "cancelling" and status in ("in_progress", "finalizing"):
                return  # a cancel landed first
            batch.update(status=status, **extra)
            batch[f"{status}_at"] = int(time.time())

    def _run(self, batch: dict[str, Any]) -> None:
        time.sleep(self.step_seconds)
        lines, errors = self._validate(batch)
        if batch["status"] == "cancelling" and not errors:  # cancelled while validating: no request ran
            failures = [{"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"], "response": None,
                         "error": {"code": "batch_cancelled", "message": "emulated batch cancelled"}}
                        for line in lines]
            extra = {"error_file_id": self.add_file(f"{batch['id']}_error.jsonl", _jsonl(failures),
                                                    "batch_output")["id"]} if failures else {}
            self._set(batch, "cancelled", **extra)
            return
        if batch["_fate"] == "fail_batches":
            errors = errors or [{"code": "invalid_request", "message": "emulated validation failure",
                                 "param": None, "line": 1}]
        if errors:
            self._set(batch, "failed", errors={"object": "list", "data": errors})
            return
        batch["request_counts"]["total"] = len(lines)
        self._set(batch, "in_progress")
        answered = lines[: len(lines) // 2] if batch["_fate"] == "expire_batches" else lines
        outputs, failures = [], []
        for line in answered:
            if batch["status"] == "cancelling":
                break
            time.sleep(self.step_seconds / 10)
            with self.lock:
                failing = self.faults.failed_lines > 0
                self.faults.failed_lines -= failing
            request_id = f"req_{uuid.uuid4().hex[:16]}"
            if self.faults.bad_input and self.faults.bad_input in json.dumps(line["body"]):
                failures.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"],
                                 "response": {"status_code": 400, "request_id": request_id,
                                              "body": _error("emulated invalid prompt", code="invalid_prompt")},
                                 "error": None})
                batch["request_counts"]["failed"] += 1
                continue
            if failing:
                failures.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"],
                                 "response": {"status_code": 500, "request_id": request_id,
                                              "body": {"error": {"message": "emulated server error",
                                                                 "type": "server_error"}}},
                                 "error": None})
                batch["request_counts"]["failed"] += 1
                continue
            outputs.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"],
                            "response": {"status_code": 200, "request_id": request_id,
                                         "body": completion(line["body"], batch["endpoint"],
                                                          output_seed(line["custom_id"], line["body"]))},
                            "error": None})
            batch["request_counts"]["completed"] += 1
        if batch["status"] != "cancelling" and batch["_fate"] != "expire_batches":
            self._set(batch, "finalizing")
            time.sleep(self.step_seconds)
        # Requests a cancelled or expired batch never ran are documented lines of the error file
        # (BatchRequestOutputError codes batch_cancelled and batch_expired), with no response.
        never_ran = "batch_cancelled" if batch["status"] == "cancelling" else \
            "batch_expired" if batch["_fate"] == "expire_batches" else None
        answered_ids = {row["custom_id"] for row in outputs + failures}
        if never_ran:
            failures += [{"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"], "response": None,
                          "error": {"code": never_ran, "message": f"emulated {never_ran.replace('_', ' ')}"}}
                         for line in lines if line["custom_id"] not in answered_ids]
        random.Random(batch["id"]).shuffle(outputs)  # output order is not input order
        if self.faults.garble:
            outputs = _garbled(outputs, self.faults.garble)
        texts = [json.dumps(row) for row in outputs]
        if self.faults.garble == "array_file":
            texts = [json.dumps(outputs)] if outputs else []
        with self.lock:
            broken = min(self.faults.malformed_lines, len(texts))
            self.faults.malformed_lines -= broken
        for index in range(broken):
            texts[index] = texts[index][: len(texts[index]) // 2] if index % 2 == 0 else \
                json.dumps({**outputs[index], "response": {"status_code": 200, "request_id": "req_broken"}})
        files = {f"{kind}_file_id": self.add_file(f"{batch['id']}_{kind}.jsonl", body, "batch_output")["id"]
                 for kind, body in (("output", "".join(t + "\n" for t in texts).encode()), ("error", _jsonl(failures)))
                 if body}
        final = "cancelled" if batch["status"] == "cancelling" else \
            "expired" if batch["_fate"] == "expire_batches" else "completed"
        self._set(batch, final, **files)

    def _validate(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines, errors, seen = [], [], set()
        text = self.contents[batch["input_file_id"]].decode()
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                               "param": None, "line": number})
                continue
            problem = None
            if line.get("custom_id") in seen or not line.get("custom_id"):
                problem = ("duplicate_custom_id", "The custom_id for this request is a duplicate of another request.")
            elif line.get("method") != "POST":
                problem = ("invalid_method", "The method must be POST.")
            elif line.get("url") != batch["endpoint"]:
                problem = ("mismatched_endpoint", "The url of this request does not match the batch's endpoint.")
            elif not isinstance(line.get("body"), dict) or "model" not in line["body"]:
                problem = ("missing_required_parameter", "The body must name a model.")
            if problem:
                errors.append({"code": problem[0], "message": problem[1], "param": None, "line": number})
                continue
            seen.add(line["custom_id"])
            lines.append(line)
        return lines, errors


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def make_server(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a test killed it)
                pass

        def _admitted(self) -> bool:
            """Checks the bearer key and the throttling fault; replies itself when the call stops here."""
            if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                self._reply(401, _error("You didn't provide an API key.", code="invalid_api_key"))
                return False
            with emulator.lock:
                emulator.keys_seen.append(self.headers["Authorization"].removeprefix("Bearer "))
                emulator.calls += 1
                every = emulator.faults.throttle_every
                throttled = bool(every) and emulator.calls % every == 0
            if throttled:
                self._reply(429, _error("Rate limit reached", code="rate_limit_exceeded"), {"Retry-After": "0"})
            return not throttled

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if not self._admitted():
                return
            path = urllib.parse.urlparse(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path == "/v1/files":
                status, payload = emulator.upload(self.headers.get("Content-Type", ""), body)
            elif path == "/v1/batches":
                status, payload = emulator.create(json.loads(body or b"{}"))
            elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
                status, payload = emulator.cancel(path[len("/v1/batches/"): -len("/cancel")])
            else:
                status, payload = 404, _error(f"Invalid URL (POST {path})")
            self._reply(status, payload)

        def do_GET(self) -> None:  # noqa: N802
            if not self._admitted():
                return
            parsed = urllib.parse.urlparse(self.path)
            path, query = parsed.path, dict(urllib.parse.parse_qsl(parsed.query))
            if path == "/v1/batches":
                status, payload = emulator.list(query)
            elif path.startswith("/v1/batches/"):
                status, payload = emulator.get(path[len("/v1/batches/"):])
            elif path == "/v1/files":
                files = [f for f in emulator.files.values() if query.get("purpose") in (None, f["purpose"])]
                status, payload = 200, {"object": "list", "data": files, "has_more": False}
            elif path.startswith("/v1/files/"):
                file_id, _, rest = path[len("/v1/files/"):].partition("/")
                if file_id not in emulator.files:
                    status, payload = 404, _error(f"No such File object: {file_id}", code="not_found")
                elif rest == "content":
                    status, payload = 200, emulator.contents[file_id]
                else:
                    status, payload = 200, emulator.files[file_id]
            else:
                status, payload = 404, _error(f"Invalid URL (GET {path})")
            self._reply(status, payload)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--failed-lines", type=int, default=0, help="answer the first N request lines with errors")
    args = parser.parse_args()
    emulator = Emulator(step_seconds=args.step_seconds, faults=Faults(failed_lines=args.failed_lines))
    server = make_server(emulator, args.host, args.port)
    print(f"OpenAI Files + Batch API emulator on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
