"""Budgets: a daily and a monthly limit per pricing profile, and the degradation step they imply.

The spend of the current UTC day and month (in money under the profile, or in compute-seconds) is
compared with the limits in pricing.toml. The share of the tighter period picks the step, in order:

    normal < warn (share >= 0.80) < short_answers (>= 1.00) < faq_only (>= 1.10) < escalate (>= 1.25)

(thresholds configurable in `[budget_steps]`). The bot asks `guard.status().step` before each answer:
`warn` only logs and shows on the dashboard, `short_answers` lowers max_tokens, `faq_only` answers
from the knowledge base without generating, `escalate` hands conversations to staff.

Each change of step, per period, is recorded in `budget_events` (at, profile, period, period_start,
step, spent, limit, share), once even with several processes: the check and the insert share one
write transaction. `status()` is cached for `cache_s` seconds, and the spend of earlier days of the
month for a minute, so the hot path costs a dictionary lookup almost always.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import IntEnum
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.db import Store, Target
from usage.ledger import iso, utcnow
from usage.pricing import money
from usage.profiles import Budget, ProfileBook, Thresholds
from usage.reports import period_spend, prepare

log = logging.getLogger(__name__)

migrations = Migrations("firstline.budgets")


@migrations()
def m001_budget_events(db: Database) -> None:
    db.table("budget_events").create(
        {
            "id": int,
            "at": str,
            "profile": str,
            "period": str,
            "period_start": str,
            "step": str,
            "spent": str,
            "limit": str,
            "share": float,
            "unit": str,
        },
        pk="id",
        not_null={"at", "profile", "period", "period_start", "step"},
    )
    db.table("budget_events").create_index(["profile", "period", "period_start", "id"])


class Step(IntEnum):
    """How far the bot degrades; ordered, so `step >= Step.faq_only` reads naturally."""

    normal = 0
    warn = 1
    short_answers = 2
    faq_only = 3
    escalate = 4


def step_for(share: Decimal | None, thresholds: Thresholds) -> Step:
    """The step a spent share of the budget implies."""
    if share is None:
        return Step.normal
    for step in (Step.escalate, Step.faq_only, Step.short_answers, Step.warn):
        if share >= getattr(thresholds, step.name):
            return step
    return Step.normal


@dataclass(frozen=True)
class PeriodStatus:
    """Spend against the limit of one period (day or month)."""

    period: str
    start: datetime
    spent: Decimal
    limit: Decimal | None
    step: Step

    @property
    def share(self) -> Decimal | None:
        return self.spent / self.limit if self.limit else None


@dataclass(frozen=True)
class BudgetStatus:
    """The budget step now, with the period that decided it."""

    profile: str
    unit: str
    currency: str
    at: datetime
    periods: tuple[PeriodStatus, ...]

    @property
    def binding(self) -> PeriodStatus:
        """The period with the highest step (then the highest share)."""
        return max(self.periods, key=lambda p: (p.step, p.share or Decimal(-1)))

    @property
    def step(self) -> Step:
        return self.binding.step

    @property
    def spent(self) -> Decimal:
        return self.binding.spent

    @property
    def limit(self) -> Decimal | None:
        return self.binding.limit

    @property
    def share(self) -> Decimal | None:
        return self.binding.share

    def as_dict(self) -> dict[str, Any]:
        def amount(value: Decimal | None) -> str | None:
            if value is None:
                return None
            return money(value) if self.unit == "money" else str(round(value, 6))

        return {
            "profile": self.profile,
            "unit": self.unit,
            "currency": self.currency if self.unit == "money" else None,
            "at": iso(self.at),
            "step": self.step.name,
            "periods": [
                {
                    "period": p.period,
                    "start": iso(p.start),
                    "spent": amount(p.spent),
                    "limit": amount(p.limit),
                    "share": float(round(p.share, 6)) if p.share is not None else None,
                    "step": p.step.name,
                }
                for p in self.periods
            ],
        }


def unspent_status(book: ProfileBook, profile: str | None = None, now: datetime | None = None) -> BudgetStatus:
    """The budget status before anything was spent (no ledger yet): read without creating a database."""
    name = profile or book.active
    budget, currency = book.budget(name), book.get(name).currency
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    periods = tuple(
        PeriodStatus(period, start, Decimal(0), limit, Step.normal)
        for period, start, limit in (("day", day, budget.daily), ("month", day.replace(day=1), budget.monthly))
    )
    return BudgetStatus(name, budget.unit, currency, now, periods)


class BudgetGuard(Store):
    """Tells the bot how far to degrade, from the spend of today and this month against the budget."""

    def __init__(
        self, ledger_db_path: Target, profile_book: ProfileBook, *, profile: str | None = None, cache_s: float = 5.0
    ) -> None:
        prepare(ledger_db_path)
        super().__init__(ledger_db_path, migrations)
        self.book = profile_book
        self.profile_name = profile or profile_book.active
        profile_book.get(self.profile_name)
        self.cache_s = cache_s
        self._cached: tuple[float, BudgetStatus] | None = None
        self._earlier: dict[tuple[str, str], tuple[float, Decimal]] = {}
        self._known: dict[tuple[str, str, str], str] = {}  # (profile, period, start) -> last recorded step
        self._mutex = threading.Lock()
        self.listeners: list[Callable[[BudgetStatus], None]] = []  # told after a step change is recorded

    @property
    def budget(self) -> Budget:
        return self.book.budget(self.profile_name)

    def status(self, now: datetime | None = None) -> BudgetStatus:
        """The current step (cached for `cache_s` seconds unless `now` is given)."""
        with self._mutex:
            if now is None and self._cached and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            result = self._compute(now or utcnow())
            changed = self._record(result)
            if now is None:
                self._cached = (time.monotonic(), result)
        if changed:
            for listener in self.listeners:
                try:
                    listener(result)
                except Exception:  # an alert hook must never fail an answer
                    log.exception("budget listener failed")
        return result

    def update(self, book: ProfileBook) -> None:
        """Use new limits or thresholds (e.g. after the admin edited them) from the next status on."""
        with self._mutex:
            book.get(self.profile_name)
            self.book, self._cached = book, None

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent recorded step changes, newest first."""
        with self.read() as db:
            return list(db.query("SELECT * FROM budget_events ORDER BY id DESC LIMIT ?", [limit]))

    # -- internals ---------------------------------------------------------------------------------
    def _compute(self, now: datetime) -> BudgetStatus:
        budget, profile = self.budget, self.book.get(self.profile_name)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        end = now + timedelta(microseconds=1)  # up to and including now
        today = self._spent(day, end, end)
        before_today = self._earlier_spend(month, day, now) if day > month else Decimal(0)
        periods = []
        for period, start, spent, limit in (
            ("day", day, today, budget.daily),
            ("month", month, before_today + today, budget.monthly),
        ):
            share = spent / limit if limit else None
            periods.append(PeriodStatus(period, start, spent, limit, step_for(share, self.book.thresholds)))
        return BudgetStatus(self.profile_name, budget.unit, profile.currency, now, tuple(periods))

    def _spent(self, since: datetime, until: datetime, now: datetime) -> Decimal:
        spend = period_spend(self.path, self.book.get(self.profile_name), since, until, now, serving_only=True)
        return spend.cost if self.budget.unit == "money" else spend.compute_s

    def _earlier_spend(self, month: datetime, day: datetime, now: datetime) -> Decimal:
        key = (iso(month), iso(day))
        hit = self._earlier.get(key)
        if hit and time.monotonic() - hit[0] < 60:
            return hit[1]
        value = self._spent(month, day, now)
        self._earlier = {key: (time.monotonic(), value)}
        return value

    def _record(self, status: BudgetStatus) -> bool:
        """Record step changes; returns whether one was recorded."""
        keys = {p: (status.profile, p.period, iso(p.start)) for p in status.periods}
        if all(self._known.get(keys[p]) == p.step.name for p in status.periods):
            return False  # nothing changed since we last looked: no write transaction on the hot path
        recorded = False
        with self.write() as db:
            db.lock("budget_events")  # several processes see the same change: it is recorded once
            for p in status.periods:
                self._known[keys[p]] = p.step.name
                last = db.execute(
                    "SELECT step FROM budget_events WHERE profile = ? AND period = ? AND period_start = ? "
                    "ORDER BY id DESC LIMIT 1",
                    [status.profile, p.period, iso(p.start)],
                ).fetchone()
                previous = last[0] if last else Step.normal.name
                if previous == p.step.name:
                    continue
                db.table("budget_events").insert(
                    {
                        "at": iso(status.at),
                        "profile": status.profile,
                        "period": p.period,
                        "period_start": iso(p.start),
                        "step": p.step.name,
                        "spent": str(p.spent),
                        "limit": str(p.limit) if p.limit is not None else None,
                        "share": float(p.share) if p.share is not None else None,
                        "unit": status.unit,
                    }
                )
                recorded = True
                level = logging.WARNING if p.step > Step[previous] else logging.INFO
                log.log(level, "budget %s %s: %s -> %s", status.profile, p.period, previous, p.step.name)
        return recorded
