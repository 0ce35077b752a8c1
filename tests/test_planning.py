"""The planning calculator (the planning example's figures exactly), projections and break-even points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from usage.ledger import Ledger, iso
from usage.planning import HOURS_PER_YEAR, break_even_points, estimate, project
from usage.pricing import YEAR_S, CloudPerSecond, OnPremises, PeriodUsage
from usage.profiles import default_book
from usage.provisioning import ProvisioningRecorder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (
    "--requests-per-hour", "100", "--seconds-per-request", "3", "--price-per-second", "0.0373",
    "--price-per-request", "0.0001", "--hours-per-day", "12", "--days-per-year", "250",
)  # fmt: skip


def test_the_planning_example_exactly() -> None:
    e = estimate(100, 3, Decimal("0.0373"), Decimal("0.0001"), 12, 250)
    assert e.compute_cost_per_hour == Decimal("11.19")
    assert e.transfer_cost_per_hour == Decimal("0.01")
    assert e.cost_per_hour == Decimal("11.20")
    assert e.cost_per_day == Decimal("134.40")
    assert e.cost_per_year == Decimal("33600.00")
    assert e.utilization == Decimal(300) / Decimal(3600) and e.instances_needed == 1


def test_the_thousand_requests_reading_of_the_example() -> None:
    e = estimate(1000, 3, Decimal("0.0373"), Decimal("0.0001"), 12, 250)
    assert e.cost_per_hour == Decimal("112.00") and e.transfer_cost_per_hour == Decimal("0.10")
    assert e.cost_per_year == Decimal("336000.00")


def test_utilisation_above_one_says_how_many_instances() -> None:
    e = estimate(2500, 3)
    assert e.utilization == Decimal("2.083333333333333333333333333")
    assert e.instances_needed == 3
    assert "cannot serve" in e.as_dict()["note"] and "3 instances" in e.as_dict()["note"]
    with pytest.raises(ValueError):
        estimate(-1, 3)
    with pytest.raises(ValueError):
        estimate(1, 3, hours_per_day=25)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True
    )


def test_cost_estimate_cli_json_gives_the_example_figures() -> None:
    res = run_cli("cost", "estimate", *EXAMPLE, "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    for key in ("cost_per_hour", "compute_cost_per_hour", "transfer_cost_per_hour", "cost_per_day", "cost_per_year"):
        assert isinstance(payload[key], str)  # money as decimal strings
    assert Decimal(payload["cost_per_hour"]) == Decimal("11.20")
    assert Decimal(payload["compute_cost_per_hour"]) == Decimal("11.19")
    assert Decimal(payload["transfer_cost_per_hour"]) == Decimal("0.01")
    assert Decimal(payload["cost_per_year"]) == Decimal("33600")
    assert payload["utilization"] == pytest.approx(300 / 3600)
    table = run_cli("cost", "estimate", *EXAMPLE)
    assert "33,600.00" in table.stdout and "11.20" in table.stdout
    bad = run_cli("cost", "estimate", "--requests-per-hour", "lots", "--seconds-per-request", "3")
    assert bad.returncode == 2 and "not a number" in bad.stderr


def test_break_even_is_where_both_yearly_costs_meet() -> None:
    cloud, onprem = CloudPerSecond(), OnPremises()
    (point,) = break_even_points([cloud, onprem], Decimal(3))
    assert point.requests_per_year is not None
    r = point.requests_per_year
    cloud_cost = cloud.period_cost(PeriodUsage(0, Decimal(0))) + r * cloud.request_cost(3.0)
    onprem_cost = (
        onprem.period_cost(PeriodUsage(0, Decimal(0), YEAR_S, YEAR_S))
        + r * Decimal(3) * (onprem.power_watts - onprem.idle_watts) / Decimal(3_600_000) * onprem.electricity_per_kwh
    )
    assert abs(cloud_cost - onprem_cost) < Decimal("0.000001")
    data = point.as_dict()
    assert data["requests_per_hour"] == pytest.approx(float(r / HOURS_PER_YEAR), rel=1e-3)
    assert data["reachable_with_one_machine"] is True
    free = CloudPerSecond(name="free", price_per_second=Decimal(0), price_per_request=Decimal(0))
    assert break_even_points([free, onprem], Decimal(3))[0].requests_per_year is None  # never cheaper


def test_projection_scales_measured_traffic_to_a_year(data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    now = datetime(2025, 6, 11, tzinfo=UTC)
    ledger = Ledger(db, heartbeat=False)
    ledger.close()
    from sqlite_utils import Database

    rows = []
    for i in range(100):  # 100 requests of 3 s over the last 10 days
        started = now - timedelta(days=10) + timedelta(hours=2.4 * i)
        rows.append({"request_id": f"r{i}", "conversation_id": "c", "route": "model", "status": "completed",
                     "started_at": iso(started), "compute_s": 3.0, "prefill_s": 0.5, "decode_s": 2.5,
                     "latency_s": 3.1, "owner": "t"})  # fmt: skip
    Database(db).table("requests").insert_all(rows)
    recorder = ProvisioningRecorder(db, owner="t")
    recorder("load_start", now - timedelta(days=10), 0.0)
    recorder("unload", now - timedelta(days=5), 5 * 86400.0)  # provisioned half the time
    recorder.close()
    result = project(db, default_book(), days=30, now=now)
    data = result.as_dict()
    assert data["measured"]["days"] == pytest.approx(10, abs=0.01)  # the ledger covers only 10 days
    assert data["per_year"]["requests"] == pytest.approx(100 * 36.5, abs=1)
    assert data["per_year"]["provisioned_s"] == pytest.approx(float(YEAR_S) / 2, rel=1e-3)
    costs = {p["profile"]: Decimal(p["cost_per_year"]) for p in data["profiles"]}
    assert costs["cloud-gpu-per-second"] == pytest.approx(Decimal("0.1120") * 3650, abs=Decimal("0.01"))
    assert costs["cloud-gpu-per-hour"] == pytest.approx(Decimal("2.50") * 8760 / 2, abs=Decimal("1"))
    assert data["cheapest"] == "cloud-gpu-per-second"
    assert {b["profile"] for b in data["break_even"]} == {"cloud-gpu-per-hour", "on-premises-gpu"}
    res = run_cli("cost", "project", "--days", "30", "--json", "--data-dir", str(data_dir))
    assert res.returncode == 0, res.stderr
    assert {"profiles", "break_even", "per_year", "cheapest"} <= set(json.loads(res.stdout))
