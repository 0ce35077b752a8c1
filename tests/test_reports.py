"""Cost reports: rollups of a hand-made ledger, exact totals, re-pricing, outcomes and the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import open_db, rows_planted, store_target

from usage.db import Store, connect
from usage.ledger import Ledger, Measurement, iso
from usage.pricing import (
    DEFAULT_PROFILE,
    YEAR_S,
    CloudPerInstanceHour,
    CloudPerSecond,
    OnPremises,
    PeriodUsage,
    money,
    to_micros,
)
from usage.profiles import Assumptions, load_profiles, pricing_path
from usage.provisioning import ProvisioningRecorder
from usage.reports import build_report, outcomes, period_spend, prepare, synthetic_ledger
from usage.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, tzinfo=UTC)
NOW = datetime(2025, 5, 1, tzinfo=UTC)

pytestmark = pytest.mark.stores


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours, minutes=minutes)


# (route, status, started, prefill, decode, latency, model_id, device) -- compute = prefill + decode
ROWS: list[tuple[str, str, datetime, float, float, float | None, str | None, str]] = [
    ("model", "completed", at(0, 10), 0.2, 1.3, 1.6, "m-a", "CUDA"),
    ("model", "completed", at(0, 11, 30), 0.000123, 2.5, 2.7, "m-a", "CUDA"),
    ("faq", "completed", at(0, 12), 0.0, 0.0, 0.02, "", ""),
    ("human", "completed", at(1, 9), 0.0, 0.0, 0.01, "", ""),
    ("model", "error", at(1, 10), 0.25, 0.5, 0.8, "m-b", "CPU"),
    ("model", "cancelled", at(1, 10, 5), 0.1, 0.2000004, 0.35, "m-b", "CPU"),
    ("model", "interrupted", at(1, 11), 0.0, 0.0, 4.25, "m-b", "CPU"),  # compute unknown: counts its 4.25 s
    ("model", "started", at(1, 12), 0.0, 0.0, None, "m-b", "CPU"),  # in flight: left out
    ("model", "completed", at(31, 8), 1.0, 2.0, 3.1, None, "CPU"),
]


def make_ledger(path: Path, rows: list[Any] = ROWS) -> list[dict[str, Any]]:
    """A fresh ledger database with rows inserted directly (as the ledger would have finished them)."""
    Ledger(path, heartbeat=False).close()
    records = []
    for i, (route, status, started, prefill, decode, latency, model_id, device) in enumerate(rows):
        finished = status != "started"
        compute = None if status in ("interrupted", "started") else prefill + decode
        records.append(
            {
                "request_id": f"r{i}",
                "conversation_id": f"c{i // 2}",
                "route": route,
                "status": status,
                "model_id": model_id,
                "device": device,
                "started_at": iso(started),
                "finished_at": iso(started + timedelta(seconds=latency or 0)) if finished else None,
                "queue_wait_s": 0.01 * i if finished else None,
                "prefill_s": prefill if compute is not None else None,
                "decode_s": decode if compute is not None else None,
                "compute_s": compute,
                "latency_s": latency,
                "prompt_tokens": 100 if compute is not None else None,
                "completion_tokens": 20 * i if compute is not None else None,
                "cost_micros": DEFAULT_PROFILE.request_cost_micros(compute) if compute is not None else None,
                "profile": DEFAULT_PROFILE.name,
                "profile_version": 1,
                "currency": "EUR",
                "owner": "test",
            }
        )
    open_db(path).table("requests").insert_all(records)
    rows_planted(path)
    return records


def billed_seconds(row: dict[str, Any]) -> float:
    return row["compute_s"] if row["compute_s"] is not None else row["latency_s"]


def finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] != "started"]


def test_totals_are_the_sum_of_per_request_costs(data_dir: Path) -> None:
    db = store_target(data_dir)
    records = make_ledger(db)
    report = build_report(db, DEFAULT_PROFILE, by="route", now=NOW)
    expected = sum(DEFAULT_PROFILE.request_cost_micros(billed_seconds(r)) for r in finished(records))
    assert report.totals.cost_micros == expected
    assert sum(r.cost_micros for r in report.rows) == expected
    assert {r.key: r.requests for r in report.rows} == {"faq": 1, "human": 1, "model": 6}
    assert report.totals.requests == 8 and report.totals.interrupted == 1 and report.totals.errors == 1
    data = report.to_json()
    assert data["totals"]["cost"] == money(Decimal(expected) / 1_000_000)
    assert data["currency"] == "EUR" and data["profile"] == "cloud-gpu-per-second"
    model = next(r for r in data["rows"] if r["route"] == "model")
    assert model["compute_s"] == pytest.approx(1.5 + 2.500123 + 0.75 + 0.3000004 + 4.25 + 3.0, abs=1e-6)
    assert model["prefill_s"] == pytest.approx(0.2 + 0.000123 + 0.25 + 0.1 + 1.0)


def test_report_under_the_recording_profile_equals_the_stored_costs(data_dir: Path) -> None:
    db = store_target(data_dir)
    ledger = Ledger(db, heartbeat=False)
    rng = random.Random(11)
    for i in range(60):
        rid = ledger.start(conversation_id=f"c{i % 7}", route=rng.choice(["model", "faq"]))
        m = Measurement(prefill_s=rng.random() * 0.01, decode_s=rng.random() ** 3, queue_wait_s=rng.random() / 50)
        ledger.finish(rid, status=rng.choice(["completed", "completed", "error"]), measurement=m)
    ledger.close()
    stored = sum(r["cost_micros"] for r in open_db(db).query("SELECT cost_micros FROM requests"))
    for by in ("route", "day", "hour", "conversation", "model"):
        assert build_report(db, DEFAULT_PROFILE, by=by).totals.cost_micros == stored


def test_rollups_by_time_model_and_device(data_dir: Path) -> None:
    db = store_target(data_dir)
    make_ledger(db)
    prepare(db)  # with the report indexes: one index range per group
    days = build_report(db, DEFAULT_PROFILE, by="day", now=NOW)
    assert [(r.key, r.requests) for r in days.rows] == [("2025-03-01", 3), ("2025-03-02", 4), ("2025-04-01", 1)]
    months = build_report(db, DEFAULT_PROFILE, by="month", now=NOW)
    assert [(r.key, r.requests) for r in months.rows] == [("2025-03", 7), ("2025-04", 1)]
    hours = build_report(db, DEFAULT_PROFILE, by="hour", since=at(0), until=at(1), now=NOW)
    assert [r.key for r in hours.rows] == ["2025-03-01T10:00Z", "2025-03-01T11:00Z", "2025-03-01T12:00Z"]
    models = build_report(db, DEFAULT_PROFILE, by="model", now=NOW)
    assert {r.key: r.requests for r in models.rows} == {"": 3, "m-a": 2, "m-b": 3}  # NULL and '' merge
    devices = build_report(db, DEFAULT_PROFILE, by="device", now=NOW)
    assert {r.key: r.requests for r in devices.rows} == {"": 2, "CPU": 4, "CUDA": 2}
    for report in (days, months, models, devices):
        assert report.totals.cost_micros == sum(r.cost_micros for r in report.rows)
        assert report.totals.cost_micros == days.totals.cost_micros


def test_rollups_without_the_report_indexes_give_the_same_figures(data_dir: Path) -> None:
    db = store_target(data_dir)
    make_ledger(db)
    before = build_report(db, DEFAULT_PROFILE, by="model", now=NOW).to_json()
    prepare(db)
    after = build_report(db, DEFAULT_PROFILE, by="model", now=NOW).to_json()
    assert before["rows"] == after["rows"] and before["totals"] == after["totals"]


def test_repricing_under_another_per_second_profile(data_dir: Path) -> None:
    db = store_target(data_dir)
    records = make_ledger(db)
    dearer = CloudPerSecond(name="dear", price_per_second=Decimal("0.05"), price_per_request=Decimal("0.0002"))
    report = build_report(db, dearer, by="conversation", now=NOW)
    expected = sum(dearer.request_cost_micros(billed_seconds(r)) for r in finished(records))
    assert report.totals.cost_micros == expected
    assert report.to_json()["profile"] == "dear"
    assert sum(r.cost_micros for r in report.rows) == expected


def test_repricing_under_instance_hours_and_on_premises(data_dir: Path) -> None:
    db = store_target(data_dir)
    make_ledger(db)
    recorder = ProvisioningRecorder(db, owner="test-owner")
    recorder("load_start", at(0, 8), 0.0)
    recorder("load_end", at(0, 8, 1), 60.0)
    recorder("unload", at(0, 18), 36000.0)  # ten hours provisioned on the first day
    recorder.close()
    since, until = at(0), at(2)
    hourly = CloudPerInstanceHour(price_per_hour=Decimal("2.50"))
    report = build_report(db, hourly, by="route", since=since, until=until, now=NOW)
    assert report.provisioned.seconds == Decimal(36000) and report.provisioned.source == "provisioning"
    assert report.totals.cost == Decimal("25.00")
    assert sum(r.cost_micros for r in report.rows) == 25_000_000
    shares = {r.key: r.cost_micros for r in report.rows}
    assert shares["faq"] == 0 and shares["human"] == 0 and shares["model"] == 25_000_000  # by compute share
    assert report.utilization == pytest.approx(float(report.totals.compute_s) / 36000)

    onprem = OnPremises()
    on = build_report(db, onprem, by="day", since=since, until=until, now=NOW)
    wall = Decimal(2 * 86400)
    expected = onprem.period_cost(PeriodUsage(on.totals.requests, on.totals.compute_s, wall, Decimal(36000)))
    assert on.totals.cost_micros == to_micros(expected)
    assert sum(r.cost_micros for r in on.rows) == on.totals.cost_micros
    assert expected > onprem.fixed_per_year * wall / YEAR_S  # plus electricity


def test_percentiles_are_nearest_rank_and_sampled_for_big_periods(data_dir: Path) -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50, nearest=True) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95, nearest=True) == 19.0
    assert percentile([], 50, nearest=True) is None
    db = store_target(data_dir)
    rows = [("model", "completed", at(0, 0, i), 0.1, float(i), float(i + 1), "m", "CPU") for i in range(20)]
    make_ledger(db, rows)
    exact = build_report(db, DEFAULT_PROFILE, by="route", now=NOW)
    assert exact.rows[0].latency_p50_s == 10.0 and exact.rows[0].latency_p95_s == 19.0
    assert exact.sample_every == 1 and not exact.notes
    sampled = build_report(db, DEFAULT_PROFILE, by="route", now=NOW, percentile_sample=5)
    assert sampled.sample_every == 4 and "estimated" in sampled.notes[0]
    assert sampled.rows[0].latency_p50_s is not None
    assert sampled.totals.cost_micros == exact.totals.cost_micros  # sums never sample


def test_missing_database_or_tables_give_an_empty_report(data_dir: Path) -> None:
    empty = build_report(data_dir / "nope.db", DEFAULT_PROFILE)
    assert empty.rows == [] and empty.totals.cost_micros == 0 and empty.to_json()["totals"]["cost"] == "0.000000"
    Store(data_dir / "other.db").close()
    connect(data_dir / "other.db").execute("CREATE TABLE x (a)")
    assert build_report(data_dir / "other.db", DEFAULT_PROFILE).rows == []


def test_reports_read_while_a_writer_holds_the_database(data_dir: Path) -> None:
    db = store_target(data_dir)
    make_ledger(db)
    writer = connect(db)
    writer.execute("BEGIN IMMEDIATE" if writer.dialect == "sqlite" else "BEGIN")
    writer.execute("UPDATE requests SET owner = 'busy'")
    try:
        assert build_report(db, DEFAULT_PROFILE, by="route", now=NOW).totals.requests == 8
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_outcomes_degrade_gracefully_without_conversation_tables(data_dir: Path) -> None:
    db = store_target(data_dir)
    make_ledger(db)
    result = outcomes(db, at(0), at(40))
    assert result is not None and result.source == "ledger"
    assert result.conversations == 5 and result.escalated == 1  # c1 holds the human-routed row
    assert result.tickets_handled is None and result.minutes_source == "assumed"


def test_deflection_staff_time_and_savings_from_conversations_and_tickets(data_dir: Path) -> None:
    from bot.conversation_store import ConversationStore
    from bot.outcomes import ConversationOutcomes
    from bot.tickets import migrations as ticket_migrations

    db = store_target(data_dir)
    make_ledger(db)
    ConversationStore(db).close()
    Store(db, ticket_migrations).close()
    d = open_db(db)
    d.table("conversations").insert_all(
        [
            {"id": "a", "created_at": iso(at(0, 9)), "status": "bot"},
            {"id": "b", "created_at": iso(at(0, 9)), "status": "bot"},  # ticket resolved: back to the bot
            {"id": "c", "created_at": iso(at(0, 9)), "status": "human"},
            {"id": "d", "created_at": iso(at(0, 9)), "status": "bot"},
        ]
    )
    d.table("tickets").insert_all(
        [
            {"id": "T1", "conversation_id": "b", "status": "resolved", "reason": "x", "created_at": iso(at(0, 9)),
             "claimed_at": iso(at(0, 10)), "resolved_at": iso(at(0, 10, 30))},
            {"id": "T2", "conversation_id": "c", "status": "open", "reason": "x", "created_at": iso(at(0, 9))},
        ]
    )  # fmt: skip
    d.table("ticket_events").insert_all(
        [
            {"ticket_id": "T1", "kind": "opened", "actor": "bot", "created_at": iso(at(0, 9))},
            {"ticket_id": "T1", "kind": "claimed", "actor": "sam", "created_at": iso(at(0, 10))},
            {"ticket_id": "T1", "kind": "resolved", "actor": "sam", "created_at": iso(at(0, 10, 30))},
            {"ticket_id": "T2", "kind": "opened", "actor": "bot", "created_at": iso(at(0, 9))},
        ]
    )
    measured = Assumptions(staff_hourly_cost=Decimal(45), min_measured_tickets=1)
    facts = ConversationOutcomes.open(db)
    result = outcomes(db, at(0), at(1), measured, facts)
    assert result is not None and result.source == "conversations"
    assert (result.conversations, result.escalated, result.deflected, result.resolved) == (4, 2, 2, 3)
    assert result.tickets_handled == 1 and result.staff_s == Decimal(1800)
    data = result.priced(Decimal("1.00")).as_dict()
    assert data["deflection_rate"] == 0.5 and data["staff_minutes_source"] == "measured"
    assert data["staff_cost_avoided"] == "45.000000"  # 2 deflected x 30 min x 45/h
    assert data["net_saving"] == "44.000000" and data["cost_per_resolved_conversation"] == "0.333333"
    assumed = outcomes(db, at(0), at(1), facts=facts)
    assert assumed is not None and assumed.minutes_source == "assumed" and assumed.minutes_per_ticket == 12
    facts.close()


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env={**os.environ, "FIRSTLINE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_report_by_route_json_totals_equal_the_ledger(data_dir: Path) -> None:
    records = make_ledger(store_target(data_dir))
    res = run_cli("report", "--by", "route", "--json", data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    for key in ("rows", "totals", "currency", "profile"):
        assert key in payload
    expected = sum(DEFAULT_PROFILE.request_cost_micros(billed_seconds(r)) for r in finished(records))
    assert Decimal(payload["totals"]["cost"]) == Decimal(expected) / 1_000_000
    assert sum(Decimal(r["cost"]) for r in payload["rows"]) == Decimal(payload["totals"]["cost"])
    assert {r["route"] for r in payload["rows"]} == {"faq", "human", "model"}
    assert all({"requests", "compute_s", "cost"} <= set(r) for r in payload["rows"])
    assert payload["totals"]["requests"] == sum(r["requests"] for r in payload["rows"]) == 8

    csv_out = run_cli("report", "--by", "day", "--format", "csv", "--since", "2025-03-01", data_dir=data_dir)
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0].startswith("day,requests,compute_s") and len(lines) == 4
    one_day = run_cli("report", "--since", "2025-03-02", "--until", "2025-03-02", "--json", data_dir=data_dir)
    assert json.loads(one_day.stdout)["totals"]["requests"] == 4
    table = run_cli("report", "--by", "model", data_dir=data_dir)
    assert table.returncode == 0 and "TOTAL" in table.stdout and "m-b" in table.stdout
    bad = run_cli("report", "--since", "yesterday-ish", data_dir=data_dir)
    assert bad.returncode == 2 and "not a date" in bad.stderr and not bad.stdout


def test_cli_report_can_price_under_an_earlier_profile_version(data_dir: Path) -> None:
    records = make_ledger(store_target(data_dir))
    load_profiles(data_dir)  # pricing.toml as `serve` writes it (a report only reads it)
    assert run_cli("report", "--json", data_dir=data_dir).returncode == 0  # records v1
    path = pricing_path(data_dir)
    path.write_text(path.read_text().replace("price_per_second = 0.0373", "price_per_second = 0.1"))
    now = json.loads(run_cli("report", "--json", data_dir=data_dir).stdout)
    old = json.loads(run_cli("report", "--json", "--profile", "cloud-gpu-per-second@1", data_dir=data_dir).stdout)
    assert (now["profile_version"], old["profile_version"]) == (2, 1)
    expected_old = sum(DEFAULT_PROFILE.request_cost_micros(billed_seconds(r)) for r in finished(records))
    assert Decimal(old["totals"]["cost"]) == Decimal(expected_old) / 1_000_000
    assert Decimal(now["totals"]["cost"]) > Decimal(old["totals"]["cost"])
    missing = run_cli("report", "--profile", "cloud-gpu-per-second@7", data_dir=data_dir)
    assert missing.returncode == 2 and "no recorded version 7" in missing.stderr


def test_synthetic_ledger_and_period_spend_agree_with_reports(data_dir: Path) -> None:
    db = store_target(data_dir)
    synthetic_ledger(db, 3000, days=20, start=T0)
    stored = open_db(db).execute("SELECT sum(cost_micros), count(*) FROM requests").fetchone()
    assert stored[1] == 3000
    report = build_report(db, DEFAULT_PROFILE, by="day", now=NOW)
    assert report.totals.cost_micros == stored[0] and len(report.rows) == 20
    spend = period_spend(db, DEFAULT_PROFILE, report.since, report.until, NOW)
    assert (spend.requests, spend.cost_micros) == (3000, stored[0])
