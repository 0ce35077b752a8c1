"""Operations endpoints for load balancers, orchestrators and monitoring: /health, /ready and /metrics.

- `GET /health` (liveness): 200 while the process serves requests. `/healthz` is the same, kept for scripts.
- `GET /ready` (readiness): 200 when the database opens and the model answers, else 503; the JSON body
  lists each check. "Answers" means: the model reported itself ready (a model with a `ready()` method,
  such as a supervised worker), and it produced a token recently: a customer answer finished within
  FIRSTLINE_READY_CHECK_S, or else a one-token canary ("Say OK.") got its token within
  FIRSTLINE_READY_TIMEOUT_S. The canary runs at most once per interval, only when no answer proved the
  model recently, never for a model that is unloaded on demand (that one loads on the next request and
  counts as ready), and runs on its own thread so a probe never waits longer than the timeout. A model
  busy answering customers counts as ready while its last answer is recent.
- `GET /metrics` (Prometheus text format, prometheus-client): requests by route and status, compute
  seconds, tokens, cost, latency / time-to-first-token / queue-wait histograms, queue depth, requests in
  flight, tickets by status and the model's state. Counters are this process's since it started (the
  ledger holds the durable figures). Access: from the addresses in FIRSTLINE_METRICS_ALLOW (default
  127.0.0.1 and ::1: a scraper on the same host or a sidecar), or from anywhere with
  `Authorization: Bearer $FIRSTLINE_METRICS_TOKEN`; everyone else gets 403 (401 with a wrong token).
  Behind a reverse proxy the client address is the forwarded one (FIRSTLINE_FORWARDED_ALLOW_IPS), so
  public traffic through the proxy is refused unless it carries the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models.types import ChatMessage
from ui.app import Services
from usage.db import connect, is_postgres
from usage.pg import redact
from usage.reports import LATENCY_EDGES

log = logging.getLogger(__name__)
CANARY = [ChatMessage("user", "Say OK.")]
BUSY_GRACE_S = 300.0  # a model busy with customers counts as answering while its last answer is this recent
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)


class Readiness:
    """Whether this process can answer customers: the database opens and the model produces tokens."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.server_settings
        self.last_answer = 0.0  # monotonic time the model last produced an answer (customer or canary)
        self._canary: threading.Thread | None = None
        self._canary_error: str | None = None
        self._mutex = threading.Lock()
        services.ledger.listeners.append(self._on_finished)

    def _on_finished(self, row: dict[str, Any]) -> None:
        if row.get("status") == "completed" and (row.get("completion_tokens") or 0) > 0:
            self.last_answer = time.monotonic()

    def check(self) -> tuple[bool, list[dict[str, Any]]]:
        checks = [self._database(), self._model()]
        return all(c["ok"] for c in checks), checks

    def _database(self) -> dict[str, Any]:
        target = self.services.bot_settings.database  # SQLite file or PostgreSQL URL
        path = redact(str(target)) if is_postgres(target) else target
        try:
            db = connect(target, readonly=True)
            try:
                tables = len(db.table_names())
            finally:
                db.close()
        except Exception as exc:  # any failure to open or read is "not ready", with the cause
            return {"name": "database", "ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        if not tables:
            return {"name": "database", "ok": False, "detail": f"{path} has no tables"}
        return {"name": "database", "ok": True, "detail": f"{path} opens ({tables} tables)"}

    def _model(self) -> dict[str, Any]:
        model = self.services.model
        name = {"name": "model"}
        reported = getattr(model, "ready", None)
        if callable(reported):  # a model that knows its own state (e.g. a supervised worker process)
            ok, detail = reported()
            if not ok:
                return name | {"ok": False, "detail": str(detail)}
        if getattr(model, "loaded", True) is False:
            return name | {"ok": True, "detail": "unloaded while idle: loads on the next request"}
        now = time.monotonic()
        since = now - self.last_answer
        if since < self.settings.ready_check_s:
            return name | {"ok": True, "detail": f"answered {since:.1f} s ago"}
        if self.services.ledger.in_flight and since < BUSY_GRACE_S:
            return name | {"ok": True, "detail": f"busy answering; last answer {since:.0f} s ago"}
        return name | self._run_canary()

    def _run_canary(self) -> dict[str, Any]:
        with self._mutex:
            if self._canary is None or not self._canary.is_alive():
                self._canary_error = "no token yet"
                self._canary = threading.Thread(target=self._canary_call, name="ready-canary", daemon=True)
                self._canary.start()
            canary = self._canary
        canary.join(self.settings.ready_timeout_s)
        if canary.is_alive():
            return {"ok": False, "detail": f"no token within {self.settings.ready_timeout_s:.0f} s"}
        if self._canary_error is not None:
            return {"ok": False, "detail": self._canary_error}
        return {"ok": True, "detail": "answered a one-token check"}

    def _canary_call(self) -> None:
        started = time.monotonic()
        try:
            generation = self.services.model.stream(CANARY, max_tokens=1, temperature=0.0)
            try:
                token = next(iter(generation), None)
            finally:
                generation.close()
            if token is None:
                self._canary_error = "the model returned no token"
                return
            self._canary_error = None
            self.last_answer = time.monotonic()
            log.debug("readiness canary answered in %.2fs", self.last_answer - started)
        except Exception as exc:  # a failing model is "not ready", with the cause
            self._canary_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("readiness check: the model did not answer: %s", self._canary_error)


class Metrics:
    """This process's Prometheus metrics: counters from finished ledger rows, gauges read at scrape time."""

    def __init__(self, services: Services, readiness: Readiness, queues: dict[str, Any]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("firstline_requests", "Finished requests by route and status.", ["route", "status"],
                                registry=r)  # fmt: skip
        self.compute = Counter("firstline_compute_seconds", "Billed compute seconds (retrieval + prefill + decode).",
                               ["route"], registry=r)  # fmt: skip
        self.tokens = Counter("firstline_tokens", "Tokens processed by the model.", ["kind"], registry=r)
        self.cost = Counter("firstline_cost", "Cost of finished requests under the active pricing profile.",
                            ["currency"], registry=r)  # fmt: skip
        self.latency = Histogram("firstline_request_latency_seconds", "Request latency, start to finish.",
                                 ["route"], buckets=LATENCY_EDGES, registry=r)  # fmt: skip
        self.ttft = Histogram("firstline_time_to_first_token_seconds",
                              "Model answers: retrieval, queue wait and prefill before the first token.",
                              buckets=TTFT_BUCKETS, registry=r)  # fmt: skip
        self.queue_wait = Histogram("firstline_queue_wait_seconds", "Time requests waited for the model.",
                                    buckets=TTFT_BUCKETS, registry=r)  # fmt: skip
        r.register(_StateCollector(services, readiness, queues))
        services.ledger.listeners.append(self.observe)

    def observe(self, row: dict[str, Any]) -> None:
        route, status = str(row.get("route") or ""), str(row.get("status") or "")
        self.requests.labels(route, status).inc()
        self.compute.labels(route).inc(max(0.0, row.get("compute_s") or 0.0))
        self.tokens.labels("prompt").inc(row.get("prompt_tokens") or 0)
        self.tokens.labels("completion").inc(row.get("completion_tokens") or 0)
        self.cost.labels(str(row.get("currency") or "")).inc((row.get("cost_micros") or 0) / 1_000_000)
        if row.get("latency_s") is not None:
            self.latency.labels(route).observe(row["latency_s"])
        if row.get("queue_wait_s") is not None:
            self.queue_wait.observe(row["queue_wait_s"])
        if route == "model" and (row.get("completion_tokens") or 0) > 0:
            first = (row.get("retrieval_s") or 0) + (row.get("queue_wait_s") or 0) + (row.get("prefill_s") or 0)
            self.ttft.observe(first)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read when Prometheus scrapes: queue depth, in flight, tickets by status, the model."""

    def __init__(self, services: Services, readiness: Readiness, queues: dict[str, Any]) -> None:
        self.services, self.readiness, self.queues = services, readiness, queues

    def collect(self) -> Any:
        depth = GaugeMetricFamily("firstline_queue_depth", "Events waiting in the app's queue.", labels=["app"])
        for app, blocks in self.queues.items():
            queue = getattr(blocks, "_queue", None)
            depth.add_metric([app], len(queue) if queue is not None else 0)
        yield depth
        yield GaugeMetricFamily("firstline_requests_in_flight", "Requests started and not finished yet.",
                                value=self.services.ledger.in_flight)  # fmt: skip
        tickets = GaugeMetricFamily("firstline_tickets", "Tickets by status.", labels=["status"])
        try:
            for status, n in self.services.tickets.counts().items():
                tickets.add_metric([status], n)
        except Exception as exc:  # the database may be gone: the scrape still answers
            log.warning("metrics: ticket counts unavailable: %s", exc)
        yield tickets
        model = self.services.model
        loaded = getattr(model, "loaded", True)
        info = GaugeMetricFamily("firstline_model_loaded", "1 while the model is loaded.", labels=["model", "device"])
        info.add_metric([model.model_id, model.device], 1 if loaded else 0)
        yield info
        since = time.monotonic() - self.readiness.last_answer if self.readiness.last_answer else -1
        help_text = "Seconds since the model last produced an answer (-1: not yet)."
        yield GaugeMetricFamily("firstline_model_last_answer_age_seconds", help_text, value=since)


def _networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def add_ops_routes(app: FastAPI, services: Services, queues: dict[str, Any]) -> None:
    """Register /health, /ready and /metrics on the app (queues: app name -> its Gradio Blocks)."""
    settings = services.server_settings
    readiness = Readiness(services)
    metrics = Metrics(services, readiness, queues)
    allow = _networks(settings.metrics_allow)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.state.readiness, app.state.metrics = readiness, metrics

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        ok, checks = readiness.check()
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        given = request.headers.get("authorization", "")
        if given:
            scheme, _, value = given.partition(" ")
            if token is None or scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
                return JSONResponse({"error": "wrong metrics token"}, status_code=401)
        elif not _client_allowed(request, allow):
            return JSONResponse({"error": "metrics are for internal addresses or need the token"}, status_code=403)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _client_allowed(request: Request, allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in allow)
