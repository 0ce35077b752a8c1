"""Pricing profiles: pure cost functions over measured compute seconds.

Money is Decimal inside and integer micro-units (1e-6 of the currency) in the database, never a binary
float. The ledger stores raw seconds next to the cost, so any period can be re-priced under any profile.

Three billing models:

* `CloudPerSecond` bills each request: compute seconds x price + a per-request (data transfer) fee. The
  cost of a period is the sum of its requests' costs, each rounded to micro-units exactly as the ledger
  stores it, so re-pricing under the recording profile reproduces the stored `cost_micros`.
* `CloudPerInstanceHour` bills the time the model is provisioned (loaded), busy or idle, plus an optional
  per-request fee.
* `OnPremises` bills the wall-clock period: depreciation, maintenance and staff time spread evenly over a
  365-day year, plus electricity (full power while computing, idle power otherwise).

For the two period-billed models `request_cost` is the marginal cost of a request *at full utilisation*
(the period price per busy second); reports allocate the real period cost to requests by compute share.
Measured seconds are turned into whole microseconds with `int(s * 1e6 + 0.5)`, the same IEEE arithmetic
the report's SQL uses, so Python and SQL agree on every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import ClassVar, Protocol

MICROS = Decimal(1_000_000)
HOUR_S = Decimal(3600)
YEAR_S = Decimal(365 * 86400)  # the accounting year: 365 days
MICRO = Decimal("0.000001")
# per-row SQL pricing multiplies whole microseconds by price x 10^k; keep that inside 64 bits for any
# request shorter than ~2.5 hours (10^10 microseconds)
_MAX_SQL_MULTIPLIER = 900_000_000


class PricingError(ValueError):
    """A pricing profile, its file or a budget is invalid (shown to the operator as one line)."""


def to_micros(amount: Decimal) -> int:
    """Money as integer micro-units (banker's rounding)."""
    return int((amount * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_micros(micros: int) -> Decimal:
    """Integer micro-units back to Decimal money."""
    return Decimal(micros) / MICROS


def micro_seconds(value: float | None) -> int:
    """A measured float duration as whole microseconds (same arithmetic as the report SQL)."""
    if value is None or value <= 0:
        return 0
    return int(value * 1_000_000 + 0.5)


def seconds(value: float | None) -> Decimal:
    """A measured float duration as Decimal, at microsecond resolution."""
    return Decimal(micro_seconds(value)) / MICROS


def duration_s(delta: timedelta) -> Decimal:
    """A timedelta as exact Decimal seconds."""
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / MICROS


def money(amount: Decimal) -> str:
    """Money as text with exactly six decimals (micro-units, half-even): the JSON representation."""
    return str(amount.quantize(MICRO, rounding=ROUND_HALF_EVEN))


def decimals(value: Decimal) -> int:
    """Digits after the decimal point of a Decimal (0 for whole numbers)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _check_non_negative(profile: object, *names: str) -> None:
    for field_name in names:
        value = getattr(profile, field_name)
        if not isinstance(value, Decimal):
            raise PricingError(f"{field_name} must be a Decimal, not {type(value).__name__}")
        if value < 0 or not value.is_finite():
            raise PricingError(f"profile {getattr(profile, 'name', '?')}: {field_name} must be >= 0")


class PricingProfile(Protocol):
    """What the ledger needs from a profile: a name, a version, a currency and a per-request cost."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def currency(self) -> str: ...

    def request_cost(self, compute_s: float) -> Decimal:
        """The marginal cost of one request that computed for `compute_s` seconds."""
        ...


@dataclass(frozen=True)
class PeriodUsage:
    """What a period consumed: requests, compute, wall-clock and provisioned seconds (exact Decimals)."""

    requests: int = 0
    compute_s: Decimal = Decimal(0)
    wall_s: Decimal = Decimal(0)
    provisioned_s: Decimal = Decimal(0)


@dataclass(frozen=True)
class CloudPerSecond:
    """A cloud GPU billed per compute-second, plus a per-request (data transfer) fee."""

    kind: ClassVar[str] = "cloud_per_second"
    per_request: ClassVar[bool] = True

    name: str = "cloud-gpu-per-second"
    version: int = 1
    currency: str = "EUR"
    price_per_second: Decimal = Decimal("0.0373")
    price_per_request: Decimal = Decimal("0.0001")

    def __post_init__(self) -> None:
        _check_non_negative(self, "price_per_second", "price_per_request")
        _, multiplier, _ = self.sql_terms()
        if multiplier > _MAX_SQL_MULTIPLIER:
            raise PricingError(f"profile {self.name}: price_per_second has too many significant digits")

    def request_cost(self, compute_s: float) -> Decimal:
        return seconds(compute_s) * self.price_per_second + self.price_per_request

    def request_cost_micros(self, compute_s: float) -> int:
        """The request's cost in micro-units, rounded exactly as the ledger stores it."""
        return to_micros(self.request_cost(compute_s))

    def period_cost(self, usage: PeriodUsage) -> Decimal:
        return usage.compute_s * self.price_per_second + usage.requests * self.price_per_request

    def sql_terms(self) -> tuple[int, int, int]:
        """(10^k, M, F) with cost_micros = round_half_even((micro_s * M + F) / 10^k), all integers, k >= 1."""
        fee_micros = self.price_per_request * MICROS
        k = max(1, decimals(self.price_per_second), decimals(fee_micros))
        scale = 10**k
        return scale, int(self.price_per_second * scale), int(fee_micros * scale)


@dataclass(frozen=True)
class CloudPerInstanceHour:
    """A cloud GPU instance billed for every hour it is provisioned (model loaded), busy or idle."""

    kind: ClassVar[str] = "cloud_per_instance_hour"
    per_request: ClassVar[bool] = False

    name: str = "cloud-gpu-per-hour"
    version: int = 1
    currency: str = "EUR"
    price_per_hour: Decimal = Decimal("2.50")
    price_per_request: Decimal = Decimal("0")

    def __post_init__(self) -> None:
        _check_non_negative(self, "price_per_hour", "price_per_request")

    def request_cost(self, compute_s: float) -> Decimal:
        return seconds(compute_s) * self.price_per_hour / HOUR_S + self.price_per_request

    def period_cost(self, usage: PeriodUsage) -> Decimal:
        return usage.provisioned_s * self.price_per_hour / HOUR_S + usage.requests * self.price_per_request


@dataclass(frozen=True)
class OnPremises:
    """An own GPU server: depreciation, maintenance, operating staff and electricity."""

    kind: ClassVar[str] = "on_premises"
    per_request: ClassVar[bool] = False

    name: str = "on-premises-gpu"
    version: int = 1
    currency: str = "EUR"
    hardware_price: Decimal = Decimal("12000")
    depreciation_years: Decimal = Decimal("4")
    power_watts: Decimal = Decimal("450")
    idle_watts: Decimal = Decimal("90")
    electricity_per_kwh: Decimal = Decimal("0.30")
    maintenance_per_year: Decimal = Decimal("600")
    staff_hours: Decimal = Decimal("4")
    staff_hours_per: str = "month"
    staff_hourly_cost: Decimal = Decimal("60")

    def __post_init__(self) -> None:
        _check_non_negative(
            self,
            "hardware_price",
            "power_watts",
            "idle_watts",
            "electricity_per_kwh",
            "maintenance_per_year",
            "staff_hours",
            "staff_hourly_cost",
        )
        if self.depreciation_years <= 0:
            raise PricingError(f"profile {self.name}: depreciation_years must be positive")
        if self.staff_hours_per not in ("month", "year"):
            raise PricingError(f"profile {self.name}: staff_hours_per must be 'month' or 'year'")

    @property
    def fixed_per_year(self) -> Decimal:
        """Depreciation + maintenance + operating staff per year."""
        staff_hours = self.staff_hours * (12 if self.staff_hours_per == "month" else 1)
        return (
            self.hardware_price / self.depreciation_years
            + self.maintenance_per_year
            + staff_hours * self.staff_hourly_cost
        )

    def energy_cost(self, wall_s: Decimal, busy_s: Decimal) -> Decimal:
        """Electricity for a period: full power while busy, idle power for the rest."""
        busy = min(busy_s, wall_s) if wall_s > 0 else busy_s
        idle = max(Decimal(0), wall_s - busy)
        watt_seconds = self.power_watts * busy + self.idle_watts * idle
        return watt_seconds / HOUR_S / 1000 * self.electricity_per_kwh

    def request_cost(self, compute_s: float) -> Decimal:
        per_busy_second = self.fixed_per_year / YEAR_S + self.power_watts / HOUR_S / 1000 * self.electricity_per_kwh
        return seconds(compute_s) * per_busy_second

    def period_cost(self, usage: PeriodUsage) -> Decimal:
        return self.fixed_per_year * usage.wall_s / YEAR_S + self.energy_cost(usage.wall_s, usage.compute_s)


Profile = CloudPerSecond | CloudPerInstanceHour | OnPremises
PROFILE_KINDS: dict[str, type[Profile]] = {
    CloudPerSecond.kind: CloudPerSecond,
    CloudPerInstanceHour.kind: CloudPerInstanceHour,
    OnPremises.kind: OnPremises,
}
DEFAULT_PROFILE = CloudPerSecond()
DEFAULT_PROFILES: tuple[Profile, ...] = (DEFAULT_PROFILE, CloudPerInstanceHour(), OnPremises())


def period_cost(profile: Profile, usage: PeriodUsage) -> Decimal:
    """The exact cost of a period's usage under a profile."""
    return profile.period_cost(usage)


def allocate(total_micros: int, weights: list[int]) -> list[int]:
    """Split micro-units in proportion to integer weights (largest remainder), summing exactly to total."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total_micros * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total_micros * weights[i] % whole), i))
    for i in remainders[: total_micros - sum(shares)]:
        shares[i] += 1
    return shares
