"""Budget alerts (#15 item 15): e-mail through a real SMTP server (a local aiosmtpd sink) and a webhook (a
local HTTP receiver) when the budget step rises, first at `warn` before the budget is reached; delivered
at least once through the outbox, retried when a channel is down, never for a period that is over."""

from __future__ import annotations

import email
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from usage.alerts import AlertDispatcher, AlertSettings
from usage.budgets import BudgetGuard
from usage.ledger import Ledger, Measurement, utcnow
from usage.profiles import Budget, default_book, save_profiles


@dataclass
class Sink:
    """A local SMTP server (aiosmtpd) that keeps what it receives."""

    port: int
    messages: list[email.message.Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[Sink]:
    from aiosmtpd.controller import Controller

    sink = Sink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/hooks/budget")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if receiver.fail_next:
                receiver.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            receiver.posts.append(json.loads(body))
            receiver.headers.append(dict(self.headers))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()


def settings(smtp: Sink, webhook: Receiver) -> AlertSettings:
    return AlertSettings(
        alert_email_to="ops@example.com, cfo@example.com",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        alert_webhook_url=webhook.url,
        alert_webhook_token="hook-secret",  # type: ignore[arg-type]
    )


def spend(db: Path, requests: int, seconds: float = 1.0) -> None:
    ledger = Ledger(db, heartbeat=False)
    for _ in range(requests):
        rid = ledger.start(conversation_id="c", route="model")
        ledger.finish(rid, measurement=Measurement(decode_s=seconds))
    ledger.close()


def test_an_alert_goes_out_by_mail_and_webhook_before_the_budget_is_reached(
    data_dir: Path, smtp: Sink, webhook: Receiver
) -> None:
    db = data_dir / "firstline.db"
    book = default_book().with_budget("cloud-gpu-per-second", Budget(daily=Decimal("1.00")))
    spend(db, 2, 10.0)  # 2 x (10 s x 0.0373 + 0.0001) = 0.7462 EUR: 75 %, no step yet
    guard = BudgetGuard(db, book, cache_s=0)
    alerts = AlertDispatcher(db, settings(smtp, webhook))
    assert guard.status().step.name == "normal" and alerts.run_once() == 0
    spend(db, 1, 2.0)  # + 0.0747: 82 %, the warn step, still below the budget
    assert guard.status().step.name == "warn"
    assert alerts.run_once() == 2
    [mail] = smtp.messages
    assert "budget warn: day spend at 82% of 1.000000 EUR" in mail["Subject"]
    assert mail["To"] == "ops@example.com, cfo@example.com"
    body = mail.get_payload()
    assert "Spent 0.820900 of 1.000000 EUR" in body and "budget is reached around" in body
    [post] = webhook.posts
    assert post["event"] == "budget_step" and post["step"] == "warn" and post["previous_step"] == "normal"
    assert post["spent"] == "0.820900" and post["limit"] == "1.000000" and post["share"] == pytest.approx(0.8209)
    assert webhook.headers[0]["Authorization"] == "Bearer hook-secret"
    assert alerts.run_once() == 0  # sent once, not again

    spend(db, 10, 10.0)  # far over the budget: the bot escalates everything, another alert
    assert guard.status().step.name == "escalate"
    assert alerts.run_once() == 2 and smtp.messages[-1]["Subject"].startswith("firstline budget escalate")
    statuses = {(r["channel"], r["status"]) for r in alerts.recent()}
    assert statuses == {("email", "sent"), ("webhook", "sent")}
    guard.close()
    alerts.close()


def test_a_channel_that_is_down_is_retried_and_nothing_is_lost(data_dir: Path, smtp: Sink, webhook: Receiver) -> None:
    db = data_dir / "firstline.db"
    book = default_book().with_budget("cloud-gpu-per-second", Budget(daily=Decimal("0.01")))
    down = AlertSettings(alert_email_to="ops@example.com", smtp_host="127.0.0.1", smtp_port=free_port(),
                         alert_webhook_url=webhook.url)  # fmt: skip
    alerts = AlertDispatcher(db, down)
    guard = BudgetGuard(db, book, cache_s=0)
    spend(db, 1, 0.25)  # 0.009425: 94 %
    assert guard.status().step.name == "warn"
    webhook.fail_next = 1
    now = utcnow()
    assert alerts.run_once(now) == 0
    failed = {r["channel"]: r for r in alerts.recent()}
    assert failed["email"]["status"] == "failed" and "Connection refused" in failed["email"]["last_error"]
    assert failed["webhook"]["status"] == "failed" and "503" in failed["webhook"]["last_error"]
    assert alerts.run_once(now + timedelta(seconds=30)) == 0  # not due yet (backoff: 1 minute)
    alerts.settings = settings(smtp, webhook)  # the mail server is back
    assert alerts.run_once(now + timedelta(minutes=2)) == 2
    assert len(smtp.messages) == 1 and len(webhook.posts) == 1
    assert {r["status"] for r in alerts.recent()} == {"sent"}
    guard.close()
    alerts.close()


def test_events_of_a_period_that_is_over_are_not_sent(data_dir: Path, smtp: Sink, webhook: Receiver) -> None:
    db = data_dir / "firstline.db"
    book = default_book().with_budget("cloud-gpu-per-second", Budget(daily=Decimal("0.01")))
    spend(db, 1, 0.25)
    guard = BudgetGuard(db, book, cache_s=0)
    assert guard.status().step.name == "warn"
    alerts = AlertDispatcher(db, settings(smtp, webhook))
    assert alerts.run_once(utcnow() + timedelta(days=1)) == 0  # seen only the next day: yesterday's news
    assert smtp.messages == [] and webhook.posts == [] and alerts.recent() == []
    guard.close()
    alerts.close()


def test_the_guard_wakes_the_running_dispatcher(data_dir: Path, smtp: Sink, webhook: Receiver) -> None:
    db = data_dir / "firstline.db"
    book = default_book().with_budget("cloud-gpu-per-second", Budget(daily=Decimal("0.01")))
    alerts = AlertDispatcher(db, settings(smtp, webhook).model_copy(update={"alert_check_s": 3600}))
    guard = BudgetGuard(db, book, cache_s=0)
    guard.listeners.append(alerts.wake)
    alerts.start()
    spend(db, 1, 0.25)
    guard.status()
    deadline = time.monotonic() + 20
    while len(webhook.posts) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(webhook.posts) == 1 and len(smtp.messages) == 1  # within seconds, not at the hourly check
    guard.close()
    alerts.close()


@pytest.mark.browser
def test_the_dashboard_sends_a_test_alert_and_a_live_server_alerts_on_its_own(
    data_dir: Path,
    live_server_factory: Any,
    browser: Any,
    smtp: Sink,
    webhook: Receiver,
    request: pytest.FixtureRequest,
) -> None:
    from gradio_client import Client
    from playwright.sync_api import expect
    from test_admin_browser import ADMIN, login, seed

    seed(data_dir)  # 30 requests today, about 1.28 EUR, an admin login
    book = default_book().with_budget("cloud-gpu-per-second", Budget(daily=Decimal("1.50")))
    save_profiles(replace(book, path=data_dir / "pricing.toml"))
    env = {"FIRSTLINE_DEMO_KB": "off", "FIRSTLINE_ALERT_EMAIL_TO": "ops@example.com",
           "FIRSTLINE_SMTP_HOST": "127.0.0.1", "FIRSTLINE_SMTP_PORT": str(smtp.port),
           "FIRSTLINE_ALERT_WEBHOOK_URL": webhook.url}  # fmt: skip
    server = live_server_factory(backend="scripted", env=env)
    page = browser.new_page()
    request.node._pages = [page]
    login(page, server.url, ADMIN)
    page.wait_for_url("**/admin/**")
    page.get_by_role("tab", name="Pricing and budgets").click()
    expect(page.locator("#alerts")).to_contain_text("e-mail to ops@example.com", timeout=60_000)
    page.click("#test-alert")
    expect(page.locator("#alerts")).to_contain_text("test alert by email: sent", timeout=30_000)
    expect(page.locator("#alerts")).to_contain_text("test alert by webhook: sent")
    assert smtp.messages and webhook.posts[-1]["event"] == "test"
    # the dashboard's refresh computed the budget: 1.28 of 1.50 EUR is 85 %, the warn step, and the
    # server's own dispatcher mails it without anyone pressing a button
    deadline = time.monotonic() + 30
    while not any(p.get("step") == "warn" and p["event"] == "budget_step" for p in webhook.posts):
        assert time.monotonic() < deadline, webhook.posts
        time.sleep(0.2)
    assert any("budget warn" in m["Subject"] for m in smtp.messages)
    Client(server.url + "/chat/", verbose=False)  # the server still serves customers
