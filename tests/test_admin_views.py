"""The admin dashboard's figures (#15 item 14), from real ledger rows: a bar for every bucket of the period
(one request is a bar, not a blank plot; two requests days apart draw no trend), money to the cent, date
presets, and a projection that says what it rests on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ui.web.admin_views import (
    bucket_labels,
    fmt_money,
    preset_range,
    projection_markdown,
    table_frame,
    time_frame,
    time_unit,
)
from usage.planning import project
from usage.pricing import DEFAULT_PROFILE
from usage.profiles import default_book
from usage.reports import build_report, synthetic_ledger

MARCH = datetime(2025, 3, 1, tzinfo=UTC)


def test_one_request_is_one_bar_among_empty_hours(tmp_path: Path) -> None:
    db = tmp_path / "firstline.db"
    synthetic_ledger(db, 1, days=1, start=MARCH)
    until = datetime(2025, 3, 2, tzinfo=UTC)
    unit = time_unit(MARCH, until)
    assert unit == "hour"
    frame = time_frame(build_report(db, DEFAULT_PROFILE, by=unit, since=MARCH, until=until), unit)
    assert len(frame) == 24  # every hour of the day, not a single (invisible) point
    assert frame["requests"].tolist().count(1) == 1 and frame["requests"].sum() == 1
    assert frame["time"].is_unique and frame["time"].iloc[0] == "03-01 00h"


def test_two_requests_days_apart_keep_the_empty_days_between_them(tmp_path: Path) -> None:
    db = tmp_path / "firstline.db"
    synthetic_ledger(db, 2, days=6, start=MARCH)  # one in the first three days, one in the last three
    until = datetime(2025, 3, 7, tzinfo=UTC)
    frame = time_frame(build_report(db, DEFAULT_PROFILE, by="day", since=MARCH, until=until), "day")
    assert frame["bucket"].tolist() == [f"2025-03-0{d}" for d in range(1, 7)]
    assert frame["requests"].sum() == 2 and (frame["requests"] == 0).sum() == 4  # zeros, not a trend line
    total = build_report(db, DEFAULT_PROFILE, by="day", since=MARCH, until=until).totals
    assert Decimal(str(round(frame["cost"].sum(), 6))) == total.cost.quantize(Decimal("0.000001"))


def test_long_periods_fall_back_to_a_coarser_unit() -> None:
    assert time_unit(MARCH, datetime(2025, 3, 5, tzinfo=UTC)) == "hour"
    assert time_unit(MARCH, datetime(2025, 5, 1, tzinfo=UTC)) == "day"
    assert time_unit(MARCH, datetime(2026, 3, 1, tzinfo=UTC)) == "month"
    assert bucket_labels("month", MARCH, datetime(2025, 6, 15, tzinfo=UTC)) == ["2025-03", "2025-04", "2025-05",
                                                                                "2025-06"]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("1234.5678"), "1,234.57"), (Decimal("0.5612"), "0.561"), (Decimal("0.011234"), "0.0112"),
     (Decimal("0.000137"), "0.000137"), (Decimal("0"), "0.00"), (Decimal("0.5"), "0.50"), (None, "-")],
)  # fmt: skip
def test_money_is_for_reading_never_six_decimals_of_zeros(value: Decimal | None, shown: str) -> None:
    assert fmt_money(value) == shown
    if value is not None:
        assert fmt_money(value, "EUR") == f"{shown} EUR"


def test_report_table_shows_rounded_money_and_every_column(tmp_path: Path) -> None:
    db = tmp_path / "firstline.db"
    synthetic_ledger(db, 40, days=2, start=MARCH)
    report = build_report(db, DEFAULT_PROFILE, by="day", since=MARCH, until=datetime(2025, 3, 3, tzinfo=UTC))
    frame = table_frame(report)
    assert list(frame.columns)[:3] == ["Day", "Requests", "Failed"] and "Failed cost" in frame.columns
    for cost in frame["Cost"]:
        assert len(cost.split(".")[1]) <= 6 and not cost.endswith("0000")


def test_date_presets() -> None:
    now = datetime(2025, 3, 15, 10, tzinfo=UTC)
    assert preset_range("Today", now) == ("2025-03-15", "")
    assert preset_range("Last 7 days", now) == ("2025-03-09", "")
    assert preset_range("Last 30 days", now) == ("2025-02-14", "")
    assert preset_range("This month", now) == ("2025-03-01", "")
    assert preset_range("Last month", now) == ("2025-02-01", "2025-02-28")
    assert preset_range("All time", now) == ("", "")


def test_a_projection_from_minutes_of_traffic_says_so(tmp_path: Path) -> None:
    db = tmp_path / "firstline.db"
    synthetic_ledger(db, 12, days=22 / 1440, start=MARCH)  # type: ignore[arg-type]  # 12 requests in 22 minutes
    text = projection_markdown(project(db, default_book(), days=30, now=datetime(2025, 3, 1, 0, 30, tzinfo=UTC)))
    assert 'id="projection-warning"' in text and "Rough guess" in text
    assert "Rests on 12 requests over 29 minutes" in text
    assert "{" not in text  # sentences and a table, not raw JSON


def test_a_projection_without_traffic_ranks_no_profile(tmp_path: Path) -> None:
    """With no requests measured, the per-second profile costs 0.00 a year and was shown as "(cheapest)"
    beside the standing cost of the period-billed ones: a ranking of nothing against a fixed cost."""
    db = tmp_path / "firstline.db"
    projection = project(db, default_book(), days=30, now=datetime(2025, 3, 1, tzinfo=UTC))
    text = projection_markdown(projection)
    assert projection.as_dict()["cheapest"] is None
    assert "(cheapest)" not in text
    assert 'id="projection-warning"' in text and "no profile is ranked" in text
    assert "every yearly figure is zero" not in text  # the period-billed profiles are not zero
