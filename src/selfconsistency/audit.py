"""The audit log: one JSON line per backend call or run event, appended to `audit.jsonl` in the run
directory. Prompt and completion bodies only with `log_prompts`; credentials never (nothing here reads
them, and `scrub` masks anything shaped like a key that a caller might pass in)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .safe_files import open_no_follow

AUDIT_FILE = "audit.jsonl"
# AWS access key ids, OpenAI-style keys, and bearer tokens.
_SECRET = re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*")
# A URL in free text; what follows its host (path, query, fragment) is parsed from the match. A query or
# fragment after a no-break or ideographic space still belongs to it (it is dropped with the query).
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+(?:[\u00a0\u2000-\u200b\u202f\u205f\u3000\ufeff]+[?#][^\s'\"<>`]*)?")
_ODD_SPACE = re.compile(r"[\u00a0\u2000-\u200b\u202f\u205f\u3000\ufeff]")
_ENCODED_QUERY = re.compile(r"(?i)%3F|%23")  # an escaped ? or #: a server may decode it to a query
# A path segment that looks like a key: a known key prefix, a long unbroken run mixing letters and
# digits, or a long hex id (a UUID). Names such as `gpt-4o-2024-08-06` have dashes and stay.
_SECRET_SEGMENT = re.compile(r"(?i)^(?:sk-|pk-|rk-|key-|ghp_|gho_|github_pat_|xox[abp]-|AKIA|ASIA|AIza|hf_|nvapi-"
                             r"|pplx-|gsk_|r8_|eyJ).{6,}$"
                             r"|^(?=.*[a-z])(?=.*\d)[A-Za-z0-9_+=]{16,}$|^(?=.*\d)(?=(?:-*[0-9a-f]){16})[0-9a-f-]{16,}$")
_SEGMENT_PARTS = re.compile(r"[.~-]")  # a key may sit in a dotted (JWT) or dashed (`nvapi-...`) segment
# An S3 URI (s3://bucket/key) carries no credentials: access is signed apart from it. Its key's segments are
# names a tool chose, often a content hash (a batch job's key: 40 lowercase hex digits), kept. A key's
# segment shaped like a credential (a known key prefix, a run of mixed-case letters and digits) is masked
# as in any URL.
_CONTENT_HASH = re.compile(r"^[0-9a-f]{16,64}$")
REDACTED = "[redacted]"


def _is_secret(segment: str, scheme: str = "") -> bool:
    segment = unquote(segment)
    if scheme.lower() == "s3" and _CONTENT_HASH.match(segment):
        return False
    return bool(_SECRET_SEGMENT.match(segment)) or any(
        _SECRET_SEGMENT.match(part) for part in _SEGMENT_PARTS.split(segment))


def _parts(url: str) -> tuple[str, str, str, list[str], str]:
    """(scheme, host, slash, path segments, trailing punctuation) of a URL found in text."""
    trailing = len(url) - len(url.rstrip(".,;:)]}!?"))  # sentence punctuation after a URL is not the URL's
    url, tail = (url[:-trailing], url[-trailing:]) if trailing else (url, "")
    scheme, rest = url.split("://", 1)
    rest = _ENCODED_QUERY.sub(lambda m: "?" if m.group(0) in ("%3F", "%3f") else "#", rest)
    rest = _ODD_SPACE.split(rest)[0]
    authority, slash, path = rest.partition("/")
    authority = authority.split("?")[0].split("#")[0].split(";")[0]
    host = authority.rpartition("@")[2]  # no user:password@
    path = path.split("?")[0].split("#")[0]  # no query, no fragment
    return scheme, host, slash, [segment.split(";")[0] for segment in path.split("/")], tail  # no ;params


def _redact_url(url: str) -> str:
    scheme, host, slash, segments, tail = _parts(url)
    path = "/".join(REDACTED if _is_secret(segment, scheme) else segment for segment in segments)
    return f"{scheme}://{host}{slash}{path}{tail}"


def redact_urls(text: str) -> str:
    """`text` with every URL cut to scheme, host, port and path: user:password@, ;params, the query and
    the fragment are dropped (`https://u:k@host/v1?api_key=k#t` becomes `https://host/v1`), and path
    segments that look like keys are masked. What a URL is kept for (stores, logs, messages) never needs
    more; the client is given the real one."""
    return _URL.sub(lambda m: _redact_url(m.group(0)), text)


def redact_message(message: str, url: str | None) -> str:
    """A server's error `message` about `url`, safe to show: its URLs redacted, and the text of each of
    `url`'s masked path segments masked wherever the server echoed it (`Invalid URL (POST /t/<key>/v1)`)."""
    message = redact_urls(message)
    for segment in _parts(url)[3] if url and "://" in url else ():
        if _is_secret(segment):
            for text in {segment, unquote(segment)}:
                message = message.replace(text, REDACTED)
    return message


def scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET.sub(REDACTED, redact_urls(value))
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


class AuditLog:
    def __init__(self, run_dir: Path, settings_hash: str, log_prompts: bool = False):
        self.path = Path(run_dir) / AUDIT_FILE
        self.settings_hash = settings_hash
        self.log_prompts = log_prompts
        self._handle = open_no_follow(self.path, "a", encoding="utf-8", buffering=1)  # a line reaches disk whole

    def event(self, event: str, **fields: Any) -> None:
        if not self.log_prompts:
            fields.pop("prompt", None)
            fields.pop("completion", None)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": self.settings_hash,
                  "event": event, **fields}
        self._handle.write(json.dumps(scrub(record), ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._handle.close()
