"""Operations (#15 item 17): /health, /ready (database and a model that answers, else 503), Prometheus
/metrics for internal addresses or a token, and JSON log lines."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gradio_client import Client

from models.errors import GenerationError
from models.fake import ScriptedChatModel


@pytest.fixture
def app_client(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Any]]:
    from ui.app import build_services
    from ui.web.server import build_app

    monkeypatch.setenv("FIRSTLINE_METRICS_TOKEN", "s3cret-token")
    monkeypatch.setenv("FIRSTLINE_READY_TIMEOUT_S", "2")
    services = build_services(data_dir, model=ScriptedChatModel(default_answer="OK"), demo_kb=False)
    try:
        with TestClient(build_app(services)) as client:
            yield client, services
    finally:
        services.close()


def test_health_and_ready_with_a_model_that_answers(app_client: tuple[TestClient, Any]) -> None:
    client, services = app_client
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/healthz").json() == {"status": "ok"}  # kept for existing scripts
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["database"]["ok"] and checks["model"]["ok"]
    assert checks["model"]["detail"] == "answered a one-token check"
    call = services.model.history[-1]
    assert call.max_tokens == 1 and call.messages[0].content == "Say OK."
    assert client.get("/ready").json()["checks"][1]["detail"].startswith("answered")  # no second canary
    assert len(services.model.history) == 1


def test_ready_is_503_when_the_model_fails_or_the_database_is_gone(app_client: tuple[TestClient, Any]) -> None:
    client, services = app_client
    services.model.enqueue(GenerationError("llama.cpp crashed"))
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    model = next(c for c in r.json()["checks"] if c["name"] == "model")
    assert not model["ok"] and "llama.cpp crashed" in model["detail"]
    assert client.get("/health").status_code == 200  # alive, just not ready
    assert client.get("/ready").status_code == 200  # the next canary answers: ready again

    services.model.seconds_per_token = 5.0  # hangs longer than FIRSTLINE_READY_TIMEOUT_S (2 s)
    services.model.enqueue("slow answer")
    readiness = client.app.state.readiness  # type: ignore[attr-defined]
    readiness.last_answer = 0.0
    r = client.get("/ready")
    assert r.status_code == 503 and "no token within 2 s" in r.text
    services.model.seconds_per_token = 0.0

    db = services.bot_settings.database_path
    moved = db.with_suffix(".moved")
    db.rename(moved)
    try:
        r = client.get("/ready")
        database = next(c for c in r.json()["checks"] if c["name"] == "database")
        assert r.status_code == 503 and not database["ok"]
    finally:
        moved.rename(db)


def test_a_model_that_reports_itself_down_is_not_ready(app_client: tuple[TestClient, Any]) -> None:
    client, services = app_client
    services.model.ready = lambda: (False, "worker process exited (SIGSEGV); restarting")  # a supervised worker
    r = client.get("/ready")
    assert r.status_code == 503 and "SIGSEGV" in r.text


def test_metrics_need_an_internal_address_or_the_token(app_client: tuple[TestClient, Any]) -> None:
    client, _ = app_client  # TestClient's address is "testclient": not an internal address
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "firstline_model_loaded" in r.text


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics:\n{text}")


def test_metrics_over_http_count_requests_tickets_and_the_model(data_dir: Path, live_server_factory: Any) -> None:
    server = live_server_factory(backend="scripted", env={"FIRSTLINE_DEMO_KB": "off"})
    client = Client(server.url + "/chat/", verbose=False)
    client.predict("How do I restart my router?", [], "auto", api_name="/chat")
    client.predict("auto", api_name="/talk_to_person")
    text = httpx.get(server.url + "/metrics", timeout=30).text  # from 127.0.0.1: allowed without a token
    assert _sample(text, "firstline_requests_total", route="human", status="completed") >= 1
    finished = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("firstline_requests_total{")
    )
    conn = sqlite3.connect(data_dir / "firstline.db")
    in_ledger = conn.execute("SELECT count(*) FROM requests WHERE status != 'started'").fetchone()[0]
    conn.close()
    assert finished == in_ledger  # one count per finished ledger row of this process
    assert _sample(text, "firstline_tickets", status="open") == 1
    assert _sample(text, "firstline_model_loaded", model="scripted-fake") == 1
    assert _sample(text, "firstline_queue_depth", app="chat") == 0
    for family in ("firstline_request_latency_seconds_bucket", "firstline_time_to_first_token_seconds_count",
                   "firstline_compute_seconds_total", "firstline_tokens_total", "firstline_cost_total",
                   "firstline_requests_in_flight"):  # fmt: skip
        assert family in text, family
    # a client behind the reverse proxy (a forwarded public address) is refused without the token
    outside = httpx.get(server.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
    assert outside.status_code == 403
    assert httpx.get(server.url + "/ready", timeout=30).status_code == 200


def test_metrics_token_opens_metrics_to_outside_addresses(data_dir: Path, live_server_factory: Any) -> None:
    env = {"FIRSTLINE_DEMO_KB": "off", "FIRSTLINE_METRICS_TOKEN": "tok-123", "FIRSTLINE_METRICS_ALLOW": ""}
    server = live_server_factory(backend="scripted", env=env)
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(server.url + "/metrics", timeout=30).status_code == 403  # not even localhost without it
    r = httpx.get(server.url + "/metrics", headers={**outside, "Authorization": "Bearer tok-123"}, timeout=30)
    assert r.status_code == 200 and "firstline_requests_in_flight" in r.text
    bad = httpx.get(server.url + "/metrics", headers={**outside, "Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from ui.cli.main import configure_logging

    try:
        configure_logging(logging.INFO, "json")
        logging.getLogger("firstline.test").warning("budget %s reached", "daily", extra={"profile": "cloud"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["level"] == "WARNING" and record["logger"] == "firstline.test"
        assert record["message"] == "budget daily reached" and record["profile"] == "cloud" and record["time"]
    finally:
        configure_logging(logging.WARNING, "text")


def test_serve_writes_json_logs_when_asked(data_dir: Path, live_server_factory: Any) -> None:
    server = live_server_factory(backend="scripted", env={"FIRSTLINE_LOG_FORMAT": "json"})  # demo KB: a warning
    httpx.get(server.url + "/health", timeout=30)
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r["level"] == "WARNING" and "demo help centre" in r["message"] for r in records), lines
    text_logs = [line for line in lines if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING|ERROR)", line)]
    assert text_logs == []


def test_ready_follows_the_model_worker_process(data_dir: Path) -> None:
    """With the supervised worker (#11), /ready is 503 while the worker is down and 200 once it is back."""
    import os
    import signal
    import time

    from models.remote import WorkerChatModel
    from models.settings import ModelSettings
    from ui.app import build_services
    from ui.web.server import build_app

    model = WorkerChatModel(ModelSettings(worker_restart_backoff_s=1.0), backend="scripted")
    services = build_services(data_dir, model=model, demo_kb=False)
    try:
        with TestClient(build_app(services)) as client:
            assert client.get("/ready").status_code == 200
            worker = model.supervisor.current
            assert worker is not None
            os.kill(worker.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while worker.alive and time.monotonic() < deadline:
                time.sleep(0.02)
            r = client.get("/ready")
            assert r.status_code == 503 and "worker is down" in r.text, r.text
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the worker did not come back"
                time.sleep(0.1)
    finally:
        services.close()
        model.close()
