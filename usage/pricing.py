"""Pricing profiles: pure cost functions over measured compute seconds.

Money is Decimal inside and integer micro-units (1e-6 of the currency) in the database, never a binary
float. The ledger stores raw seconds next to the cost, so any period can be re-priced under any profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

MICROS = Decimal(1_000_000)


def to_micros(amount: Decimal) -> int:
    """Money as integer micro-units (banker's rounding)."""
    return int((amount * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_micros(micros: int) -> Decimal:
    """Integer micro-units back to Decimal money."""
    return Decimal(micros) / MICROS


def seconds(value: float) -> Decimal:
    """A measured float duration as Decimal, at microsecond resolution."""
    return Decimal(repr(round(value, 6)))


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
class CloudPerSecond:
    """A cloud GPU billed per compute-second, plus a per-request (data transfer) fee."""

    name: str = "cloud-gpu-per-second"
    version: int = 1
    currency: str = "EUR"
    price_per_second: Decimal = Decimal("0.0373")
    price_per_request: Decimal = Decimal("0.0001")

    def request_cost(self, compute_s: float) -> Decimal:
        return seconds(compute_s) * self.price_per_second + self.price_per_request


DEFAULT_PROFILE = CloudPerSecond()
