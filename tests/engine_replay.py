"""A replay server for engine contract tests: answers like a recorded llama-server or vLLM, on a free port.

Recordings live in tests/data/engines/<flavour>/*.json, one exchange each: `{"method", "path", "request",
"status", "content_type", "body"}` (`body` is the raw response text; for a streamed answer the SSE events
exactly as the server sent them). llama-server's were recorded from the pinned build
(scripts/record_engine_responses.py); vLLM's are documented in tests/data/engines/vllm/README.md.

The server answers over real HTTP/1.1 with chunked transfer encoding, as both servers do, so the client code
under test reads real sockets. Knobs for failure tests: `event_delay_s` (pace of the SSE events),
`die_after_events` (the connection is cut after N events, without the final chunk: a killed server),
`health_status` / `chat_status` (e.g. 503), `hold` (an Event chat answers wait for: full slots). It
counts requests in flight (`active`, `max_active`) and keeps every request body (`requests`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "engines"


def load_recordings(flavour: str) -> dict[str, dict[str, Any]]:
    """name -> exchange, for tests/data/engines/<flavour>/*.json."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((DATA / flavour).glob("*.json"))}


def sse_events(body: str) -> list[str]:
    """The events of an SSE body, each with its terminating blank line."""
    return [e + "\n\n" for e in body.split("\n\n") if e.strip()]


class ReplayServer:
    """Serves one flavour's recordings; start() picks a free port; stop() closes it."""

    def __init__(self, flavour: str, *, chat: str | None = None) -> None:
        self.flavour = flavour
        self.recordings = load_recordings(flavour)
        self.chat_stream = chat or "chat_stream"
        self.event_delay_s = 0.0
        self.die_after_events: int | None = None
        self.health_status: int | None = None
        self.chat_status: int | None = None
        self.chat_error_body = '{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}'
        self.hold: threading.Event | None = None
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("_path") == "/v1/chat/completions"]

    # -- routing ---------------------------------------------------------------------------------------
    def exchange_for(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if path == "/v1/chat/completions":
            name = self.chat_stream if body.get("stream") else "chat"
            if body.get("grammar") or body.get("structured_outputs") or body.get("guided_grammar"):
                name = "chat_grammar_stream" if body.get("stream") else "chat_grammar"
            return self.recordings.get(name) or self.recordings.get(self.chat_stream)
        for exchange in self.recordings.values():
            if exchange["method"] == method and exchange["path"] == path:
                return exchange
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._answer("GET", {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                self._answer("POST", json.loads(raw or b"{}"))

            def _answer(self, method: str, body: dict[str, Any]) -> None:
                path = self.path.split("?")[0]
                with server._lock:
                    server.requests.append({**body, "_path": path, "_method": method})
                if path == "/health" and server.health_status not in (None, 200):
                    self._send(server.health_status, "application/json", server.chat_error_body)
                    return
                if path == "/v1/chat/completions":
                    self._chat(method, path, body)
                    return
                exchange = server.exchange_for(method, path, body)
                if exchange is None:
                    self._send(404, "application/json", '{"error": {"code": 404, "message": "File Not Found"}}')
                    return
                self._send(exchange["status"], exchange["content_type"], exchange["body"])

            def _chat(self, method: str, path: str, body: dict[str, Any]) -> None:
                with server._lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    if server.hold is not None:
                        server.hold.wait(timeout=60)
                    if server.chat_status not in (None, 200):
                        self._send(server.chat_status, "application/json", server.chat_error_body)
                        return
                    exchange = server.exchange_for(method, path, body)
                    assert exchange is not None, "no chat recording"
                    if not body.get("stream") or exchange["status"] != 200:
                        self._send(exchange["status"], exchange["content_type"], exchange["body"])
                        return
                    self._stream(exchange)
                finally:
                    with server._lock:
                        server.active -= 1

            def _stream(self, exchange: dict[str, Any]) -> None:
                self.send_response(exchange["status"])
                self.send_header("Content-Type", exchange["content_type"])
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for n, event in enumerate(sse_events(exchange["body"])):
                    if server.die_after_events is not None and n >= server.die_after_events:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)  # cut, no final chunk: a killed server
                        self.close_connection = True
                        return
                    data = event.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    if server.event_delay_s:
                        time.sleep(server.event_delay_s)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
