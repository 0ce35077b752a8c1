"""Pricing profiles: exact money, the three billing models, the TOML file, versions and the ledger."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import open_db, store_target

from usage.ledger import Ledger, Measurement
from usage.pricing import (
    DEFAULT_PROFILE,
    YEAR_S,
    CloudPerInstanceHour,
    CloudPerSecond,
    OnPremises,
    PeriodUsage,
    PricingError,
    allocate,
    from_micros,
    micro_seconds,
    money,
    to_micros,
)
from usage.profiles import (
    Budget,
    active_profile,
    default_book,
    dumps,
    load_profiles,
    parse,
    pricing_path,
    profile_version,
)
from usage.reports import _sql


def test_default_profile_reproduces_the_planning_example_per_request() -> None:
    assert DEFAULT_PROFILE.name == "cloud-gpu-per-second"
    assert DEFAULT_PROFILE.price_per_second == Decimal("0.0373")
    assert DEFAULT_PROFILE.price_per_request == Decimal("0.0001")
    # 3 s x 0.0373 + 0.0001 = 0.1120 EUR, exactly
    assert DEFAULT_PROFILE.request_cost(3.0) == Decimal("0.1120")
    assert DEFAULT_PROFILE.request_cost_micros(3.0) == 112_000
    usage = PeriodUsage(requests=100, compute_s=Decimal(300))
    assert DEFAULT_PROFILE.period_cost(usage) == Decimal("11.20")


def test_money_helpers_are_exact() -> None:
    assert to_micros(Decimal("0.0000005")) == 0  # half to even
    assert to_micros(Decimal("0.0000015")) == 2
    assert from_micros(112_000) == Decimal("0.112")
    assert money(Decimal("11.2")) == "11.200000"
    assert money(Decimal("0.00000049")) == "0.000000"


@pytest.mark.stores
def test_python_and_sql_agree_on_every_rows_microseconds(data_dir: Path) -> None:
    rng = random.Random(5)
    values = [rng.uniform(0, 5) for _ in range(3000)] + [rng.random() * 1e-5 for _ in range(500)]
    values += [0.0, -0.25, 5e-7, 4.999999e-7, 2.0000005, 1e-6, 123.4567895]
    db = open_db(store_target(data_dir))
    try:
        db.execute("CREATE TABLE requests (n INTEGER, compute_s DOUBLE PRECISION, latency_s DOUBLE PRECISION)")
        for n, v in enumerate(values):
            db.execute("INSERT INTO requests VALUES (?, ?, NULL)", [n, v])
        sql_values = [row[0] for row in db.execute(f"SELECT {_sql(db)['micro_s']} FROM requests ORDER BY n")]
    finally:
        db.close()
    assert sql_values == [micro_seconds(v) for v in values]


def test_sql_terms_reproduce_half_even_rounding() -> None:
    profile = CloudPerSecond(price_per_second=Decimal("0.0000123"), price_per_request=Decimal("0.00000025"))
    scale, mult, fee = profile.sql_terms()
    assert scale >= 10
    for mu in (0, 1, 7, 40_650, 123_456_789, 2_000_000_000):
        a = mu * mult + fee
        half_even = (a + scale // 2) // scale - (a % (2 * scale) == scale // 2)
        assert half_even == to_micros(Decimal(mu) / 1_000_000 * profile.price_per_second + profile.price_per_request)


def test_prices_are_validated() -> None:
    with pytest.raises(PricingError):
        CloudPerSecond(price_per_second=Decimal("-1"))
    with pytest.raises(PricingError):
        CloudPerSecond(price_per_second=Decimal("123.456789012345"))
    with pytest.raises(PricingError):
        OnPremises(depreciation_years=Decimal(0))
    with pytest.raises(PricingError):
        OnPremises(staff_hours_per="week")


def test_instance_hour_bills_provisioned_time_busy_or_idle() -> None:
    profile = CloudPerInstanceHour(price_per_hour=Decimal("2.50"), price_per_request=Decimal("0.001"))
    idle_day = PeriodUsage(requests=0, compute_s=Decimal(0), wall_s=Decimal(86400), provisioned_s=Decimal(36000))
    assert profile.period_cost(idle_day) == Decimal("25.00")
    busy = replace(idle_day, requests=1000, compute_s=Decimal(3000))
    assert profile.period_cost(busy) == Decimal("26.000")
    # marginal cost at full utilisation: 3600 s of compute cost one instance-hour
    assert profile.request_cost(3600.0) == Decimal("2.501")


def test_on_premises_year_is_depreciation_maintenance_staff_and_power() -> None:
    p = OnPremises()  # 12000 over 4 years, 600 maintenance, 4 h/month x 60, 450 W busy, 90 W idle, 0.30/kWh
    assert p.fixed_per_year == Decimal(3000) + Decimal(600) + Decimal(4 * 12 * 60)
    idle_year = PeriodUsage(wall_s=YEAR_S, provisioned_s=YEAR_S)
    # 90 W for 8760 h = 788.4 kWh x 0.30 = 236.52
    assert p.period_cost(idle_year) == Decimal("6480") + Decimal("236.52")
    busy_hour_more = replace(idle_year, compute_s=Decimal(3600))
    assert p.period_cost(busy_hour_more) - p.period_cost(idle_year) == Decimal("0.108")  # 360 W x 1 h x 0.30
    yearly_staff = replace(p, staff_hours=Decimal(48), staff_hours_per="year")
    assert yearly_staff.fixed_per_year == p.fixed_per_year


def test_allocate_splits_exactly_by_weight() -> None:
    assert allocate(100, [3, 0, 7]) == [30, 0, 70]
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [0, 0]) == [4, 3]
    shares = allocate(1_000_003, [5, 11, 17, 0, 2])
    assert sum(shares) == 1_000_003 and shares[3] == 0


@pytest.mark.stores
def test_pricing_file_is_created_with_defaults_and_round_trips(data_dir: Path) -> None:
    book = load_profiles(data_dir)
    path = pricing_path(data_dir)
    assert path.exists() and 'active = "cloud-gpu-per-second"' in path.read_text()
    assert set(book.profiles) == {"cloud-gpu-per-second", "cloud-gpu-per-hour", "on-premises-gpu"}
    assert book.active_profile == DEFAULT_PROFILE
    again = parse(dumps(book))
    assert again.profiles == book.profiles and again.thresholds == book.thresholds
    budgeted = book.with_budget("cloud-gpu-per-second", Budget("money", Decimal("5.50"), Decimal("100")))
    assert parse(dumps(budgeted)).budget("cloud-gpu-per-second").daily == Decimal("5.50")


@pytest.mark.stores
def test_editing_a_profile_bumps_its_version(data_dir: Path) -> None:
    book = default_book()
    same = book.with_profile(replace(DEFAULT_PROFILE, price_per_second=Decimal("0.03730")))
    assert same.active_profile.version == 1  # 0.03730 is the same price
    edited = book.with_profile(replace(DEFAULT_PROFILE, price_per_second=Decimal("0.05")))
    assert edited.active_profile == replace(DEFAULT_PROFILE, version=2, price_per_second=Decimal("0.05"))


@pytest.mark.stores
def test_hand_edit_without_new_version_is_detected_and_bumped(data_dir: Path) -> None:
    target = store_target(data_dir)
    Ledger(target, heartbeat=False).close()
    load_profiles(data_dir, database=target)  # records version 1
    path = pricing_path(data_dir)
    path.write_text(path.read_text().replace("price_per_second = 0.0373", "price_per_second = 0.04"))
    book = load_profiles(data_dir, database=target)
    assert book.active_profile == replace(DEFAULT_PROFILE, version=2, price_per_second=Decimal("0.04"))
    assert "version = 2" in path.read_text()
    assert load_profiles(data_dir, database=target).active_profile.version == 2  # stable afterwards
    db = open_db(target)
    try:
        old = profile_version(db, "cloud-gpu-per-second", 1)
    finally:
        db.close()
    assert old == DEFAULT_PROFILE


@pytest.mark.stores
def test_active_profile_from_file_or_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = load_profiles(data_dir)
    assert active_profile(book).name == "cloud-gpu-per-second"
    monkeypatch.setenv("FIRSTLINE_PRICING_PROFILE", "on-premises-gpu")
    assert active_profile(book).name == "on-premises-gpu"
    monkeypatch.setenv("FIRSTLINE_PRICING_PROFILE", "nope")
    with pytest.raises(PricingError, match="unknown pricing profile"):
        active_profile(book)


@pytest.mark.parametrize(
    "text, message",
    [
        ('active = "x"\n[profiles.a]\nkind = "cloud_per_second"\n', "unknown pricing profile"),
        ('[profiles.a]\nkind = "barter"\n', "unknown kind"),
        ('[profiles.a]\nkind = "cloud_per_second"\nprice_per_second = "cheap"\n', "must be a number"),
        ('[profiles.a]\nkind = "cloud_per_second"\ncolour = 1\n', "unknown keys"),
        ("[budget_steps]\nwarn = 0.9\nshort_answers = 0.8\n[profiles.a]\n", "increasing"),
        ("currency = 'EUR'\n", r"no \[profiles"),
    ],
)
def test_invalid_pricing_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        parse(text)


@pytest.mark.stores
def test_ledger_stores_the_profile_name_and_version_it_priced_with(data_dir: Path) -> None:
    book = load_profiles(data_dir).with_profile(replace(DEFAULT_PROFILE, price_per_second=Decimal("0.05")))
    ledger = Ledger(store_target(data_dir), profile=book.active_profile, heartbeat=False)
    rid = ledger.start(conversation_id="c", route="model")
    row = ledger.finish(rid, measurement=Measurement(prefill_s=1.0, decode_s=1.0))
    ledger.close()
    assert (row["profile"], row["profile_version"], row["cost_micros"]) == ("cloud-gpu-per-second", 2, 100_100)
