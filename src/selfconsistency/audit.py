"""The audit log: one JSON line per backend call or run event, appended to `audit.jsonl` in the run
directory. Prompt and completion bodies only with `log_prompts`; credentials never (nothing here reads
them, and `scrub` masks anything shaped like a key that a caller might pass in)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
# AWS access key ids, OpenAI-style keys, and bearer tokens.
_SECRET = re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*")
# In a URL: the user:password@ part, and query parameters that carry keys or signatures.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")
_URL_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|auth|sig|signature|credential)"
    r"[a-z0-9_.-]*)=)[^&#\s]*")
REDACTED = "[redacted]"


def redact_urls(text: str) -> str:
    """`text` with every URL's credentials masked: `https://user:key@host/v1?api_key=k` becomes
    `https://[redacted]@host/v1?api_key=[redacted]`. What a URL is kept for (stores, logs, messages)
    never needs them; the client is given the real one."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _URL_SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


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
        self._handle = self.path.open("a", encoding="utf-8", buffering=1)  # a line reaches disk whole

    def event(self, event: str, **fields: Any) -> None:
        if not self.log_prompts:
            fields.pop("prompt", None)
            fields.pop("completion", None)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": self.settings_hash,
                  "event": event, **fields}
        self._handle.write(json.dumps(scrub(record), ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._handle.close()
