"""Budgets: degradation steps from today's and this month's spend, recorded step changes, caching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import open_db, rows_planted, store_target

from usage.budgets import BudgetGuard, Step, step_for
from usage.ledger import Ledger, iso, utcnow
from usage.pricing import DEFAULT_PROFILE
from usage.profiles import Budget, ProfileBook, Thresholds, default_book

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
NAME = DEFAULT_PROFILE.name

pytestmark = pytest.mark.stores


def book_with(budget: Budget, thresholds: Thresholds | None = None) -> ProfileBook:
    book = default_book().with_budget(NAME, budget)
    if thresholds is not None:
        from dataclasses import replace

        book = replace(book, thresholds=thresholds)
    return book


def add_requests(db: Path, n: int, when: datetime, start: int = 0) -> None:
    """n finished requests of 3 compute-seconds (0.1120 EUR each under the default profile)."""
    rows = [
        {"request_id": f"r{start + i}", "conversation_id": "c", "route": "model", "status": "completed",
         "started_at": iso(when - timedelta(microseconds=i + 1)), "compute_s": 3.0, "prefill_s": 1.0, "decode_s": 2.0,
         "latency_s": 3.2, "cost_micros": 112_000, "owner": "t"}
        for i in range(n)
    ]  # fmt: skip
    open_db(db).table("requests").insert_all(rows)
    rows_planted(db)


@pytest.fixture
def db(data_dir: Path) -> Path:
    path = store_target(data_dir)
    Ledger(path, heartbeat=False).close()
    return path


def events(db: Path) -> list[tuple[str, str, str]]:
    return [(r["period"], r["step"], r["limit"]) for r in open_db(db).query("SELECT * FROM budget_events ORDER BY id")]


def test_steps_follow_the_share_of_the_daily_budget_and_each_change_is_recorded(db: Path) -> None:
    guard = BudgetGuard(db, book_with(Budget("money", daily=Decimal("1.00"), monthly=Decimal("100"))))
    assert guard.status(NOW).step == Step.normal and events(db) == []
    expected = [(8, Step.warn), (9, Step.short_answers), (10, Step.faq_only), (12, Step.escalate)]
    done = 0
    for total, step in expected:  # 8 x 0.112 = 0.896 (>= 0.80), 1.008, 1.12 (>= 1.10), 1.344 (>= 1.25)
        add_requests(db, total - done, NOW, start=done)
        done = total
        status = guard.status(NOW)
        assert status.step == step
        assert status.spent == Decimal("0.112") * total and status.limit == Decimal("1.00")
        guard.status(NOW)  # the same step again: no second event
    assert [(p, s) for p, s, _ in events(db)] == [
        ("day", "warn"),
        ("day", "short_answers"),
        ("day", "faq_only"),
        ("day", "escalate"),
    ]
    row = next(iter(open_db(db).query("SELECT * FROM budget_events ORDER BY id DESC LIMIT 1")))
    assert row["spent"] == "1.344" and row["limit"] == "1.00" and row["at"] == iso(NOW)
    assert row["period_start"] == iso(NOW.replace(hour=0))
    again = BudgetGuard(db, guard.book)  # another process: knows the step is already recorded
    assert again.status(NOW).step == Step.escalate and len(events(db)) == 4
    again.close()
    guard.close()


def test_the_monthly_budget_binds_when_earlier_days_spent_it(db: Path) -> None:
    add_requests(db, 12, NOW - timedelta(days=2))
    add_requests(db, 1, NOW, start=100)
    guard = BudgetGuard(db, book_with(Budget("money", daily=Decimal("5"), monthly=Decimal("1.20"))))
    status = guard.status(NOW)  # month: 13 x 0.112 = 1.456 = 121 % -> faq_only; day: 2 %
    assert status.step == Step.faq_only and status.binding.period == "month"
    assert [p.step for p in status.periods] == [Step.normal, Step.faq_only]
    assert events(db) == [("month", "faq_only", "1.20")]
    next_month = BudgetGuard(db, guard.book).status(NOW.replace(month=4, day=1))
    assert next_month.step == Step.normal
    guard.close()


def test_compute_second_budgets_and_custom_thresholds(db: Path) -> None:
    add_requests(db, 12, NOW)  # 36 compute-seconds
    guard = BudgetGuard(db, book_with(Budget("compute_s", daily=Decimal(30))))
    status = guard.status(NOW)
    assert status.spent == Decimal(36) and status.step == Step.faq_only  # 1.2
    assert status.as_dict()["unit"] == "compute_s" and status.as_dict()["currency"] is None
    strict = Thresholds(
        warn=Decimal("0.5"), short_answers=Decimal("0.6"), faq_only=Decimal("0.7"), escalate=Decimal("1")
    )
    guard.update(book_with(Budget("compute_s", daily=Decimal(30)), strict))
    assert guard.status(NOW).step == Step.escalate
    guard.close()
    assert step_for(None, Thresholds()) == Step.normal
    assert step_for(Decimal("0.79"), Thresholds()) == Step.normal
    assert step_for(Decimal("1.25"), Thresholds()) == Step.escalate
    assert Step.faq_only > Step.short_answers > Step.warn > Step.normal


def test_no_budget_means_normal(db: Path) -> None:
    add_requests(db, 50, NOW)
    guard = BudgetGuard(db, default_book())
    status = guard.status(NOW)
    assert status.step == Step.normal and status.limit is None and status.share is None
    guard.close()


def test_status_is_cached_for_a_few_seconds(db: Path) -> None:
    now = utcnow()
    guard = BudgetGuard(db, book_with(Budget("money", daily=Decimal("1.00"))), cache_s=60)
    first = guard.status()
    assert first.step == Step.normal
    add_requests(db, 12, now)
    assert guard.status() is first  # cached: the hot path does not query
    guard.cache_s = 0
    assert guard.status().step == Step.escalate
    guard.close()


def test_invalid_budgets_are_refused() -> None:
    from usage.pricing import PricingError

    with pytest.raises(PricingError):
        Budget("euros", daily=Decimal(1))
    with pytest.raises(PricingError):
        Budget("money", daily=Decimal(0))
    with pytest.raises(PricingError):
        Thresholds(warn=Decimal("1.2"), short_answers=Decimal("1.0"))
