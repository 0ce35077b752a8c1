"""Capacity and cost planning: the calculator, a projection of measured traffic, and break-even points.

The calculator is plain arithmetic on Decimals (no rounding until output). The planning example:
100 requests per hour at 3 compute-seconds each, 0.0373 EUR per compute-second and 0.0001 EUR per
request cost 300 s x 0.0373 = 11.19 EUR compute + 100 x 0.0001 = 0.01 EUR transfer = 11.20 EUR per hour;
12 hours a day on 250 days make 33,600.00 EUR a year. The load keeps a GPU busy 300 / 3600 = 8.3 % of
the time; above 100 % one GPU cannot keep up and `instances_needed` says how many it takes.

The projection takes the last N days of the ledger (or the shorter span it covers), scales requests,
compute and provisioned time to a 365-day year and prices that under every profile. Break-even: a
per-request profile costs c per request; a period-billed profile (on-premises, or an instance kept
provisioned all year) costs a + b x requests per year, both linear for the measured mix of compute per
request, so it becomes cheaper above a / (c - b) requests a year (never when c <= b). On-premises
capacity is one machine: 3600 / seconds-per-request requests an hour at full utilisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from usage.ledger import iso, parse_iso, utcnow
from usage.pricing import HOUR_S, YEAR_S, CloudPerSecond, OnPremises, PeriodUsage, Profile, duration_s, money
from usage.profiles import ProfileBook
from usage.reports import period_spend

HOURS_PER_YEAR = Decimal(365 * 24)
MIN_PROJECTION_S = Decimal(7 * 86400)  # below a week of traffic, or
MIN_PROJECTION_REQUESTS = 100  # fewer requests, a projection says it is a rough guess
DEFAULT_SECONDS_PER_REQUEST = Decimal(3)


@dataclass(frozen=True)
class Estimate:
    """The calculator's result for one load and one per-second price."""

    requests_per_hour: Decimal
    seconds_per_request: Decimal
    price_per_second: Decimal
    price_per_request: Decimal
    hours_per_day: Decimal
    days_per_year: Decimal

    @property
    def compute_seconds_per_hour(self) -> Decimal:
        return self.requests_per_hour * self.seconds_per_request

    @property
    def compute_cost_per_hour(self) -> Decimal:
        return self.compute_seconds_per_hour * self.price_per_second

    @property
    def transfer_cost_per_hour(self) -> Decimal:
        return self.requests_per_hour * self.price_per_request

    @property
    def cost_per_hour(self) -> Decimal:
        return self.compute_cost_per_hour + self.transfer_cost_per_hour

    @property
    def cost_per_day(self) -> Decimal:
        return self.cost_per_hour * self.hours_per_day

    @property
    def cost_per_year(self) -> Decimal:
        return self.cost_per_day * self.days_per_year

    @property
    def utilization(self) -> Decimal:
        """Share of one GPU's time the load keeps busy (> 1: one GPU cannot serve it)."""
        return self.compute_seconds_per_hour / HOUR_S

    @property
    def instances_needed(self) -> int:
        return max(1, math.ceil(self.utilization))

    def as_dict(self) -> dict[str, Any]:
        """The `firstline cost estimate --json` document (money as six-decimal strings)."""
        u = self.utilization
        return {
            "requests_per_hour": str(self.requests_per_hour),
            "seconds_per_request": str(self.seconds_per_request),
            "price_per_second": str(self.price_per_second),
            "price_per_request": str(self.price_per_request),
            "hours_per_day": str(self.hours_per_day),
            "days_per_year": str(self.days_per_year),
            "compute_seconds_per_hour": str(self.compute_seconds_per_hour),
            "compute_cost_per_hour": money(self.compute_cost_per_hour),
            "transfer_cost_per_hour": money(self.transfer_cost_per_hour),
            "cost_per_hour": money(self.cost_per_hour),
            "cost_per_day": money(self.cost_per_day),
            "cost_per_year": money(self.cost_per_year),
            "utilization": float(u),
            "instances_needed": self.instances_needed,
            "note": capacity_note(u),
        }


def estimate(
    requests_per_hour: Decimal | int | str,
    seconds_per_request: Decimal | int | str,
    price_per_second: Decimal | int | str = CloudPerSecond.price_per_second,
    price_per_request: Decimal | int | str = CloudPerSecond.price_per_request,
    hours_per_day: Decimal | int | str = 24,
    days_per_year: Decimal | int | str = 365,
) -> Estimate:
    """The planning calculator; every input as an exact Decimal (strings and ints are converted)."""
    values = [
        Decimal(str(v))
        for v in (
            requests_per_hour,
            seconds_per_request,
            price_per_second,
            price_per_request,
            hours_per_day,
            days_per_year,
        )
    ]
    names = ("requests_per_hour", "seconds_per_request", "price_per_second", "price_per_request", "hours_per_day")
    for name, value in zip((*names, "days_per_year"), values, strict=True):
        if not value.is_finite() or value < 0:
            raise ValueError(f"{name} must be a number >= 0")
    if values[4] > 24 or values[5] > 366:
        raise ValueError("hours_per_day must be <= 24 and days_per_year <= 366")
    return Estimate(*values)


def capacity_note(utilization: Decimal) -> str:
    """One sentence on whether one GPU can serve the load."""
    if utilization <= 1:
        return f"one GPU is busy {float(utilization):.1%} of the time"
    return (
        f"the load needs {float(utilization):.2f} GPUs of compute: one GPU cannot serve it, "
        f"run at least {math.ceil(utilization)} instances (or requests queue without bound)"
    )


@dataclass(frozen=True)
class BreakEven:
    """Where a period-billed profile becomes cheaper than a per-request one."""

    cheaper: str
    than: str
    requests_per_year: Decimal | None
    capacity_per_year: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        per_year = self.requests_per_year
        reachable = per_year is not None and (self.capacity_per_year is None or per_year <= self.capacity_per_year)
        return {
            "profile": self.cheaper,
            "versus": self.than,
            "requests_per_year": round(float(per_year)) if per_year is not None else None,
            "requests_per_hour": round(float(per_year / HOURS_PER_YEAR), 2) if per_year is not None else None,
            "capacity_requests_per_year": round(float(self.capacity_per_year)) if self.capacity_per_year else None,
            "reachable_with_one_machine": reachable,
        }


@dataclass(frozen=True)
class Projection:
    """Measured traffic scaled to a year, priced under every profile."""

    since: datetime
    until: datetime
    requests: int
    compute_s: Decimal
    provisioned_s: Decimal
    yearly: PeriodUsage
    costs: dict[str, Decimal]
    currency: str
    break_even: tuple[BreakEven, ...]

    @property
    def measured_s(self) -> Decimal:
        return duration_s(self.until - self.since)

    @property
    def basis(self) -> str:
        """How much traffic the projection rests on, as a sentence."""
        return (
            f"Rests on {self.requests:,} requests over {span_text(self.measured_s)} of measured traffic "
            f"({iso(self.since)[:16].replace('T', ' ')} to {iso(self.until)[:16].replace('T', ' ')} UTC)."
        )

    @property
    def warning(self) -> str | None:
        """Why the projection is not to be trusted yet, or None once it rests on enough traffic."""
        if self.requests == 0:
            return (
                "No traffic measured yet: per-request costs show as zero and period-billed profiles only "
                "their standing cost, so no profile is ranked cheapest."
            )
        thin = []
        if self.measured_s < MIN_PROJECTION_S:
            thin.append(f"only {span_text(self.measured_s)} of traffic (daily and weekly patterns are missing)")
        if self.requests < MIN_PROJECTION_REQUESTS:
            thin.append(f"only {self.requests} requests")
        if not thin:
            return None
        return (
            f"Rough guess: {' and '.join(thin)} scaled to a whole year. Trust it after at least "
            f"{span_text(MIN_PROJECTION_S)} and {MIN_PROJECTION_REQUESTS} requests of real traffic."
        )

    @property
    def cheapest(self) -> str | None:
        """The cheapest profile for the measured traffic; None without traffic, where per-request profiles
        cost nothing and the ranking would only compare standing costs with zero."""
        if not self.costs or self.requests == 0:
            return None
        return min(self.costs, key=lambda k: self.costs[k])

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "basis": self.basis,
            "warning": self.warning,
            "measured": {
                "days": round((self.until - self.since).total_seconds() / 86400, 3),
                "requests": self.requests,
                "compute_s": float(self.compute_s),
                "provisioned_s": float(self.provisioned_s),
            },
            "per_year": {
                "requests": self.yearly.requests,
                "compute_s": float(self.yearly.compute_s),
                "provisioned_s": float(self.yearly.provisioned_s),
            },
            "currency": self.currency,
            "profiles": [
                {
                    "profile": name,
                    "cost_per_year": money(cost),
                    "cost_per_request": money(cost / self.yearly.requests) if self.yearly.requests else None,
                }
                for name, cost in sorted(self.costs.items(), key=lambda kv: kv[1])
            ],
            "cheapest": self.cheapest,
            "break_even": [b.as_dict() for b in self.break_even],
        }


def project(db_path: Path | str, book: ProfileBook, *, days: int = 30, now: datetime | None = None) -> Projection:
    """Scale the last `days` days of measured traffic to a year and price it under every profile."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or utcnow()
    since = now - timedelta(days=days)
    first = _first_row(db_path)
    if first is not None and first > since:
        since = first
    span = max(Decimal(1), duration_s(now - since))
    measured = period_spend(db_path, book.active_profile, since, now, now, serving_only=True)
    factor = YEAR_S / span
    provisioned = measured.provisioned.seconds if measured.provisioned.source != "none" else span
    yearly = PeriodUsage(
        requests=int(measured.requests * factor),
        compute_s=measured.compute_s * factor,
        wall_s=YEAR_S,
        provisioned_s=min(YEAR_S, provisioned * factor),
    )
    costs = {name: p.period_cost(yearly) for name, p in book.profiles.items()}
    seconds = measured.compute_s / measured.requests if measured.requests else DEFAULT_SECONDS_PER_REQUEST
    return Projection(
        since,
        now,
        measured.requests,
        measured.compute_s,
        measured.provisioned.seconds,
        yearly,
        costs,
        book.currency,
        break_even_points(book.profiles.values(), seconds),
    )


def break_even_points(profiles: Any, seconds_per_request: Decimal) -> tuple[BreakEven, ...]:
    """Requests per year above which each period-billed profile beats each per-request profile."""
    profiles = list(profiles)
    out = []
    for cloud in (p for p in profiles if isinstance(p, CloudPerSecond)):
        c = cloud.period_cost(PeriodUsage(1, seconds_per_request, YEAR_S, YEAR_S))
        for other in (p for p in profiles if not isinstance(p, CloudPerSecond)):
            a, b = _linear_year_cost(other, seconds_per_request)
            requests = a / (c - b) if c > b else None
            capacity = HOUR_S / seconds_per_request * HOURS_PER_YEAR if isinstance(other, OnPremises) else None
            out.append(BreakEven(other.name, cloud.name, requests, capacity))
    return tuple(out)


def _linear_year_cost(profile: Profile, seconds_per_request: Decimal) -> tuple[Decimal, Decimal]:
    """(a, b): a year provisioned throughout costs a + b x requests under this profile."""
    probe = 1_000_000
    zero = profile.period_cost(PeriodUsage(0, Decimal(0), YEAR_S, YEAR_S))
    busy = profile.period_cost(PeriodUsage(probe, seconds_per_request * probe, YEAR_S, YEAR_S))
    return zero, (busy - zero) / probe


def _first_row(db_path: Path | str) -> datetime | None:
    from usage.db import connect, exists
    from usage.provisioning import has_table

    path = db_path
    if not exists(path):
        return None
    db = connect(path, readonly=True)
    try:
        if not has_table(db, "requests"):
            return None
        first = db.execute("SELECT min(started_at) FROM requests").fetchone()[0]
    finally:
        db.close()
    return parse_iso(first) if first else None


def span_text(seconds: Decimal | float) -> str:
    """A duration in the largest fitting unit: '22 minutes', '5.5 hours', '3.0 days'."""
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} seconds"
    if s < 2 * 3600:
        return f"{s / 60:.0f} minutes"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} hours"
    return f"{s / 86400:.1f} days"
