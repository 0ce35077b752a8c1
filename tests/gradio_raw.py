"""Test helper: speak Gradio's queue protocol directly (what the browser does), without gradio_client.

gradio_client only calls public endpoints; the browser also calls private ones (the chat timer, the
staff console's buttons) by `fn_index`. These helpers call any event as an arbitrary client could, with
any data in any input slot, so tests can prove what the server does with it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# gradio_client reports telemetry to the internet unless this is set (tests only talk to 127.0.0.1)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


@dataclass
class Outcome:
    """What one event call produced: HTTP status of the join, the SSE messages, the final output."""

    join_status: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    join_body: str = ""

    @property
    def completed(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("msg") == "process_completed"), None)

    @property
    def success(self) -> bool:
        done = self.completed
        return bool(done and done.get("success"))

    @property
    def output(self) -> list[Any]:
        done = self.completed
        return list((done or {}).get("output", {}).get("data") or [])

    @property
    def error(self) -> str | None:
        done = self.completed
        if done is None:
            return self.join_body or "no result"
        return None if done.get("success") else str(done.get("output", {}).get("error"))

    def text(self) -> str:
        """Everything the server sent back, as one string (for "does X appear anywhere" checks)."""
        return self.join_body + json.dumps(self.messages, ensure_ascii=False)


def config(base: str, cookies: dict[str, str] | None = None) -> dict[str, Any]:
    """The app's config (components and dependencies)."""
    r = httpx.get(base.rstrip("/") + "/config", cookies=cookies, timeout=30)
    r.raise_for_status()
    return dict(r.json())


def fn_index(cfg: dict[str, Any], *, api_name: str | None = None, trigger: str | None = None) -> int:
    """The index of the dependency with this api_name, or the first whose trigger event is `trigger`."""
    for dep in cfg["dependencies"]:
        if api_name is not None and dep.get("api_name") == api_name:
            return int(dep["id"])
        if trigger is not None and any(t[1] == trigger for t in dep.get("targets", [])):
            return int(dep["id"])
    raise KeyError(api_name or trigger)


def call(
    base: str,
    index: int,
    data: list[Any],
    *,
    session_hash: str | None = None,
    cookies: dict[str, str] | None = None,
    timeout: float = 60.0,
    event_data: dict[str, Any] | None = None,
) -> Outcome:
    """Join the queue for event `index` with `data` (and the browser's event data, e.g. a table click) and
    read the session's event stream to the end."""
    base = base.rstrip("/")
    session_hash = session_hash or secrets.token_hex(6)
    body = {"data": data, "fn_index": index, "session_hash": session_hash, "event_data": event_data,
            "trigger_id": None}  # fmt: skip
    with httpx.Client(cookies=cookies, timeout=timeout) as client:
        # json.dumps escapes lone surrogates as \\udXXX (httpx's json= cannot encode them at all)
        r = client.post(
            base + "/gradio_api/queue/join", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        out = Outcome(r.status_code, join_body=r.text)
        if r.status_code != 200:
            return out
        deadline = time.monotonic() + timeout
        with client.stream("GET", base + "/gradio_api/queue/data", params={"session_hash": session_hash}) as sse:
            if sse.status_code != 200:
                out.join_body += f" [queue/data {sse.status_code}]"
                return out
            for line in sse.iter_lines():
                if time.monotonic() > deadline:
                    break
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                out.messages.append(msg)
                if msg.get("msg") in ("process_completed", "close_stream", "unexpected_error"):
                    break
    return out
