"""Budget alerts: e-mail (SMTP) and/or a webhook when the budget step rises, before the budget is spent.

The budget guard records each change of step in `budget_events` (usage/budgets.py); the first step,
`warn`, comes at 80 % of a daily or monthly budget by default (`[budget_steps]` in pricing.toml), so the
first alert arrives before the budget is reached, and each further step (short answers, FAQ only,
escalate) sends another. Alerts go through an outbox, the `budget_alerts` table: one row per rising event
and channel, inserted once (unique), claimed by one process, sent, and marked `sent`, or `failed` with
the error and retried with backoff (1, 2, 4, 8 minutes; then `gave_up`). A crash between claiming and
sending leaves a `sending` row that is retried after 10 minutes: an alert may then come twice, never not
at all. Events of a period that is already over when the dispatcher sees them are marked `skipped`.

Channels (settings, FIRSTLINE_ prefix): `ALERT_EMAIL_TO` with `SMTP_HOST` (and optional port, STARTTLS,
login) sends a plain-text mail; `ALERT_WEBHOOK_URL` receives a JSON POST (optional bearer token).
`firstline serve` runs the dispatcher on a thread, woken by the guard at each step change.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.budgets import Step
from usage.budgets import migrations as budget_migrations
from usage.db import Store
from usage.ledger import iso, parse_iso, utcnow
from usage.pricing import money
from usage.smtp import SmtpSettings, deliver

log = logging.getLogger(__name__)
migrations = Migrations("firstline.alerts")
BACKOFF_MIN = (1, 2, 4, 8)
STALE_SENDING = timedelta(minutes=10)
STEP_MEANING = {
    "warn": "the bot still answers normally; this is the early warning",
    "short_answers": "the budget is spent: answers are shortened",
    "faq_only": "answers come from the FAQ only; everything else goes to staff",
    "escalate": "every conversation goes to staff",
}


class AlertSettings(SmtpSettings):
    """Where budget alerts go: e-mail through the SMTP server above (`SmtpSettings`), a webhook, or both."""

    alert_email_to: str = Field("", description="Comma-separated addresses that receive budget alerts by e-mail.")
    alert_email_from: str = Field("firstline@localhost", description="Sender address of alert e-mails.")
    alert_webhook_url: str = Field("", description="URL that receives budget alerts as a JSON POST (empty: none).")
    alert_webhook_token: SecretStr | None = Field(None, description="Sent as `Authorization: Bearer ...`.")
    alert_check_s: float = Field(60.0, gt=0, description="How often the alert dispatcher looks for due alerts.")

    @property
    def channels(self) -> list[str]:
        out = []
        if self.smtp_host and self.alert_email_to.strip():
            out.append("email")
        if self.alert_webhook_url:
            out.append("webhook")
        return out

    def describe(self) -> str:
        parts = []
        if "email" in self.channels:
            parts.append(f"e-mail to {self.alert_email_to} via {self.smtp_host}:{self.smtp_port}")
        if "webhook" in self.channels:
            parts.append(f"webhook {self.alert_webhook_url}")
        return (
            "; ".join(parts)
            or "none configured (FIRSTLINE_ALERT_EMAIL_TO + FIRSTLINE_SMTP_HOST, FIRSTLINE_ALERT_WEBHOOK_URL)"
        )


@migrations()
def m001_budget_alerts(db: Database) -> None:
    db.table("budget_alerts").create(
        {
            "id": int,
            "event_id": int,
            "channel": str,
            "status": str,
            "attempts": int,
            "next_attempt_at": str,
            "claimed_by": str,
            "claimed_at": str,
            "last_error": str,
            "sent_at": str,
            "created_at": str,
            "payload": str,
        },
        pk="id",
        not_null={"event_id", "channel", "status", "created_at"},
        defaults={"attempts": 0},
    )
    db.table("budget_alerts").create_index(["event_id", "channel"], unique=True)
    db.table("budget_alerts").create_index(["status", "next_attempt_at"])


@dataclass(frozen=True)
class Alert:
    """What is sent: one rising budget step."""

    payload: dict[str, Any]

    @property
    def subject(self) -> str:
        p = self.payload
        share = f"{p['share']:.0%}" if p["share"] is not None else "-"
        return (
            f"firstline budget {p['step'].replace('_', ' ')}: {p['period']} spend at {share} of "
            f"{p['limit']} {p['unit_label']} ({p['profile']})"
        )

    @property
    def text(self) -> str:
        p = self.payload
        lines = [
            self.subject,
            "",
            f"Spent {p['spent']} of {p['limit']} {p['unit_label']} this {p['period']} "
            f"(since {p['period_start'][:10]}), profile {p['profile']}.",
            f"Step now: {p['step']} (before: {p['previous_step']}): {STEP_MEANING.get(p['step'], '')}.",
        ]
        if p.get("reaches_limit_at"):
            lines.append(f"At this {p['period']}'s rate the budget is reached around {p['reaches_limit_at']} UTC.")
        lines += ["", "Raise the budget or lower the load in the admin dashboard (Pricing and budgets)."]
        return "\n".join(lines)


def alert_for(event: dict[str, Any], previous: str, currency: str) -> Alert:
    """The alert for a recorded budget event (spent and limit as stored, with the time the limit is reached
    at the period's rate so far)."""
    spent = Decimal(event["spent"])
    limit = Decimal(event["limit"]) if event["limit"] is not None else None
    money_unit = (event.get("unit") or "money") == "money"
    at, start = parse_iso(event["at"]), parse_iso(event["period_start"])
    reaches = None
    if limit is not None and spent < limit and spent > 0 and at > start:
        rate = spent / Decimal((at - start).total_seconds())
        reaches = iso(at + timedelta(seconds=float((limit - spent) / rate)))[:16].replace("T", " ")
    payload = {
        "event": "budget_step",
        "event_id": event["id"],
        "at": event["at"],
        "profile": event["profile"],
        "period": event["period"],
        "period_start": event["period_start"],
        "step": event["step"],
        "previous_step": previous,
        "unit": event.get("unit") or "money",
        "unit_label": currency if money_unit else "compute-seconds",
        "currency": currency if money_unit else None,
        "spent": money(spent) if money_unit else str(spent),
        "limit": (money(limit) if money_unit else str(limit)) if limit is not None else None,
        "share": event["share"],
        "reaches_limit_at": reaches,
    }
    return Alert(payload)


def send_email(settings: AlertSettings, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(a.strip() for a in settings.alert_email_to.split(",") if a.strip())
    message.set_content(alert.text)
    deliver(settings, message)


def send_webhook(settings: AlertSettings, alert: Alert) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "firstline-alerts"}
    if settings.alert_webhook_token:
        headers["Authorization"] = f"Bearer {settings.alert_webhook_token.get_secret_value()}"
    body = json.dumps(alert.payload | {"message": alert.subject, "text": alert.text}, ensure_ascii=False)
    response = httpx.post(settings.alert_webhook_url, content=body, headers=headers, timeout=15)
    response.raise_for_status()


SENDERS = {"email": send_email, "webhook": send_webhook}


class AlertDispatcher(Store):
    """The outbox: turns rising budget events into alerts and delivers them, at least once."""

    def __init__(self, db_path: Path | str, settings: AlertSettings | None = None, currency: str = "EUR") -> None:
        Store(db_path, budget_migrations).close()  # budget_events exists before we read it
        super().__init__(db_path, migrations)
        self.settings = settings or AlertSettings()
        self.currency = currency
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None and self.settings.channels:
            self._thread = threading.Thread(target=self._loop, name="budget-alerts", daemon=True)
            self._thread.start()

    def wake(self, *_: Any) -> None:
        """Look for new alerts now (the budget guard calls this when a step changes)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=20)
        super().close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must survive a locked database or a bug in one send
                log.exception("budget alert dispatch failed")
            self._wake.wait(self.settings.alert_check_s)
            self._wake.clear()

    def run_once(self, now: datetime | None = None) -> int:
        """Queue alerts for new rising events and send what is due; returns how many were sent."""
        now = now or utcnow()
        self.enqueue(now)
        return self.deliver(now)

    # -- outbox --------------------------------------------------------------------------------------
    def enqueue(self, now: datetime) -> int:
        """One outbox row per configured channel for each budget event that raised the step."""
        channels = self.settings.channels
        if not channels:
            return 0
        added = 0
        with self.write() as db:
            last = db.execute("SELECT coalesce(max(event_id), 0) FROM budget_alerts").fetchone()[0]
            events = list(db.query("SELECT * FROM budget_events WHERE id > ? ORDER BY id", [last]))
            for event in events:
                previous = db.execute(
                    "SELECT step FROM budget_events WHERE profile = ? AND period = ? AND period_start = ? AND id < ? "
                    "ORDER BY id DESC LIMIT 1",
                    [event["profile"], event["period"], event["period_start"], event["id"]],
                ).fetchone()
                before = previous[0] if previous else Step.normal.name
                rising = Step[event["step"]] > Step[before]
                current = _period_current(event["period"], parse_iso(event["period_start"]), now)
                status = "pending" if rising and current else "skipped"
                payload = alert_for(event, before, self.currency).payload if rising else {}
                for channel in channels:
                    db.execute(
                        "INSERT INTO budget_alerts (event_id, channel, status, attempts, next_attempt_at, "
                        "created_at, payload) VALUES (?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [event["id"], channel, status, iso(now), iso(now), json.dumps(payload)],
                    )
                    added += status == "pending"
        return added

    def deliver(self, now: datetime) -> int:
        """Send every due alert this process can claim; failures are kept for a retry."""
        sent = 0
        stale = iso(now - STALE_SENDING)
        with self.read() as db:
            due = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM budget_alerts WHERE (status IN ('pending', 'failed') AND next_attempt_at <= ?) "
                    "OR (status = 'sending' AND claimed_at < ?) ORDER BY id",
                    [iso(now), stale],
                ).fetchall()
            ]
        for alert_id in due:
            with self.write() as db:
                claimed = db.execute(
                    "UPDATE budget_alerts SET status = 'sending', claimed_by = ?, claimed_at = ? WHERE id = ? AND "
                    "((status IN ('pending', 'failed') AND next_attempt_at <= ?) OR (status = 'sending' AND "
                    "claimed_at < ?))",
                    [self.owner, iso(now), alert_id, iso(now), stale],
                ).rowcount
                row = db.execute(
                    "SELECT channel, attempts, payload FROM budget_alerts WHERE id = ?", [alert_id]
                ).fetchone()
            if claimed != 1:
                continue  # another process took it
            channel, attempts, payload = row
            error = self._send(channel, Alert(json.loads(payload)))
            with self.write() as db:
                if error is None:
                    db.execute("UPDATE budget_alerts SET status = 'sent', sent_at = ?, attempts = ?, last_error = NULL "
                               "WHERE id = ?", [iso(utcnow()), attempts + 1, alert_id])  # fmt: skip
                    sent += 1
                else:
                    gave_up = attempts + 1 > len(BACKOFF_MIN)
                    retry = now + timedelta(minutes=BACKOFF_MIN[min(attempts, len(BACKOFF_MIN) - 1)])
                    db.execute(
                        "UPDATE budget_alerts SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ? "
                        "WHERE id = ?",
                        ["gave_up" if gave_up else "failed", attempts + 1, error[:500], iso(retry), alert_id],
                    )
        return sent

    def _send(self, channel: str, alert: Alert) -> str | None:
        try:
            SENDERS[channel](self.settings, alert)
        except Exception as exc:  # a down mail server or webhook is retried, never fatal
            log.warning("budget alert by %s failed: %s", channel, exc)
            return f"{type(exc).__name__}: {exc}"
        log.info("budget alert sent by %s: %s", channel, alert.subject)
        return None

    def send_test(self) -> list[tuple[str, str | None]]:
        """Send a test alert on every channel now: (channel, error or None)."""
        now = utcnow()
        event = {"id": 0, "at": iso(now), "profile": "test", "period": "day", "step": "warn", "unit": "money",
                 "period_start": iso(now.replace(hour=0, minute=0, second=0, microsecond=0)),
                 "spent": "8", "limit": "10", "share": 0.8}  # fmt: skip
        alert = alert_for(event, Step.normal.name, self.currency)
        alert = Alert(alert.payload | {"event": "test", "profile": "test (not a real budget event)"})
        return [(channel, self._send(channel, alert)) for channel in self.settings.channels]

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest outbox rows (skipped ones left out)."""
        with self.read() as db:
            return list(
                db.query(
                    "SELECT id, event_id, channel, status, attempts, last_error, sent_at, created_at, payload "
                    "FROM budget_alerts WHERE status != 'skipped' ORDER BY id DESC LIMIT ?",
                    [limit],
                )
            )


def _period_current(period: str, start: datetime, now: datetime) -> bool:
    if period == "day":
        return now < start + timedelta(days=1)
    return now < (start + timedelta(days=32)).replace(day=1)
