"""The pricing file `<data_dir>/pricing.toml`: named, versioned profiles, budgets and report assumptions.

The file is created with the defaults on first use and can be edited by hand or in the admin dashboard.
Numbers are read with `parse_float=Decimal`, so `0.0373` is exactly 0.0373, never a binary float.
Saving rewrites the whole file (with explanatory comments) atomically; hand-written comments are not kept.

Versioning: every (name, version) is recorded with its values in the `pricing_profiles` table of the
database. Changing a profile through `ProfileBook.with_profile` bumps its version; a hand edit that
changes values without bumping is detected at the next load, which bumps the version and rewrites the
file. The ledger stores the profile name and version on every row, so old rows can be re-priced under
the exact values that were active when they were written (`name@version`).

The active profile is `active = "..."` in the file, overridden by FIRSTLINE_PRICING_PROFILE.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.db import DB, Store, Target
from usage.ledger import iso, utcnow
from usage.pricing import DEFAULT_PROFILES, PROFILE_KINDS, PricingError, Profile

log = logging.getLogger(__name__)

FILE_NAME = "pricing.toml"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BUDGET_UNITS = ("money", "compute_s")
migrations = Migrations("firstline.pricing")


@migrations()
def m001_profile_history(db: Database) -> None:
    db.table("pricing_profiles").create(
        {"name": str, "version": int, "kind": str, "fields": str, "recorded_at": str},
        pk=("name", "version"),
        not_null={"kind", "fields", "recorded_at"},
    )


class PricingSettings(BaseSettings):
    """Pricing overrides from the environment."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    pricing_profile: str | None = Field(None, description="Name of the active pricing profile (overrides the file).")


@dataclass(frozen=True)
class Budget:
    """A daily and a monthly limit for one profile, in money or in compute-seconds (None = no limit)."""

    unit: str = "money"
    daily: Decimal | None = None
    monthly: Decimal | None = None

    def __post_init__(self) -> None:
        if self.unit not in BUDGET_UNITS:
            raise PricingError(f"budget unit must be one of {BUDGET_UNITS}, not {self.unit!r}")
        for limit in (self.daily, self.monthly):
            if limit is not None and limit <= 0:
                raise PricingError("budget limits must be positive (leave them out for no limit)")


@dataclass(frozen=True)
class Thresholds:
    """Budget shares at which the bot degrades step by step (1.00 = the budget is spent)."""

    warn: Decimal = Decimal("0.80")
    short_answers: Decimal = Decimal("1.00")
    faq_only: Decimal = Decimal("1.10")
    escalate: Decimal = Decimal("1.25")

    def __post_init__(self) -> None:
        values = [self.warn, self.short_answers, self.faq_only, self.escalate]
        if values[0] <= 0 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise PricingError("budget_steps must be positive and increasing: warn < short_answers < ...")


@dataclass(frozen=True)
class Assumptions:
    """Report assumptions for what the bot saves (documented in the file)."""

    staff_hourly_cost: Decimal = Decimal("45")
    staff_minutes_per_ticket: Decimal = Decimal("12")
    min_measured_tickets: int = 20


@dataclass(frozen=True)
class ProfileBook:
    """All pricing settings of one data directory."""

    profiles: dict[str, Profile]
    active: str
    currency: str = "EUR"
    budgets: dict[str, Budget] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()
    assumptions: Assumptions = Assumptions()
    path: Path | None = None

    def get(self, name: str) -> Profile:
        """A profile by name; raises PricingError naming the known profiles."""
        try:
            return self.profiles[name]
        except KeyError:
            raise PricingError(f"unknown pricing profile {name!r}; known: {', '.join(self.profiles)}") from None

    @property
    def active_profile(self) -> Profile:
        return self.get(self.active)

    def budget(self, name: str | None = None) -> Budget:
        """The budget of a profile (the active one by default)."""
        return self.budgets.get(name or self.active, Budget())

    def with_profile(self, profile: Profile) -> ProfileBook:
        """Add or replace a profile; a changed existing profile gets the next version."""
        _check_name(profile.name)
        old = self.profiles.get(profile.name)
        if old is not None:
            if _fingerprint(old) == _fingerprint(profile):
                return self
            profile = replace(profile, version=max(old.version, profile.version) + 1)
        return replace(self, profiles={**self.profiles, profile.name: profile})

    def with_budget(self, name: str, budget: Budget) -> ProfileBook:
        self.get(name)
        return replace(self, budgets={**self.budgets, name: budget})

    def with_active(self, name: str) -> ProfileBook:
        self.get(name)
        return replace(self, active=name)


def pricing_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / FILE_NAME


def default_book() -> ProfileBook:
    return ProfileBook(profiles={p.name: p for p in DEFAULT_PROFILES}, active=DEFAULT_PROFILES[0].name)


def load_profiles(
    data_dir: Path | str, *, sync_history: bool = True, create: bool = True, database: Target | None = None
) -> ProfileBook:
    """Read `<data_dir>/pricing.toml` (written with defaults if missing, unless `create` is False: then the
    defaults are only returned, as for a read-only command); record versions in the database (`database`,
    default the data directory's firstline.db)."""
    path = pricing_path(data_dir)
    if not path.exists():
        if not create:
            return replace(default_book(), path=path)
        save_profiles(replace(default_book(), path=path))
        log.info("wrote default pricing profiles to %s", path)
    try:
        book = parse(path.read_text(encoding="utf-8"), path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PricingError(f"cannot read {path}: {exc}") from exc
    if sync_history:
        book = sync_versions(database or Path(data_dir) / "firstline.db", book)
    return book


def active_profile(book: ProfileBook, override: str | None = None) -> Profile:
    """The active profile: `override`, else FIRSTLINE_PRICING_PROFILE, else `active` in the file."""
    name = override or PricingSettings().pricing_profile or book.active
    return book.get(name)


def save_profiles(book: ProfileBook) -> None:
    """Write the book to its file atomically."""
    if book.path is None:
        raise PricingError("this profile book has no file to save to")
    book.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = book.path.with_suffix(".toml.tmp")
    tmp.write_text(dumps(book), encoding="utf-8")
    os.replace(tmp, book.path)


def parse(text: str, path: Path | None = None) -> ProfileBook:
    """Parse the TOML text of a pricing file."""
    data = tomllib.loads(text, parse_float=Decimal)
    currency = str(data.get("currency", "EUR"))
    profiles: dict[str, Profile] = {}
    budgets: dict[str, Budget] = {}
    for name, raw in dict(data.get("profiles", {})).items():
        _check_name(name)
        raw = dict(raw)
        if "budget" in raw:
            b = dict(raw.pop("budget"))
            budgets[name] = Budget(str(b.get("unit", "money")), _opt_dec(b.get("daily")), _opt_dec(b.get("monthly")))
        profiles[name] = profile_from_fields(name, raw, currency)
    if not profiles:
        raise PricingError("the pricing file defines no [profiles.*]")
    active = str(data.get("active", next(iter(profiles))))
    steps = {k: _dec(v, k) for k, v in dict(data.get("budget_steps", {})).items() if k in _names(Thresholds)}
    a = dict(data.get("assumptions", {}))
    assumptions = Assumptions(
        staff_hourly_cost=_dec(a.get("staff_hourly_cost", Assumptions.staff_hourly_cost), "staff_hourly_cost"),
        staff_minutes_per_ticket=_dec(
            a.get("staff_minutes_per_ticket", Assumptions.staff_minutes_per_ticket),
            "staff_minutes_per_ticket",
        ),
        min_measured_tickets=int(a.get("min_measured_tickets", Assumptions.min_measured_tickets)),
    )
    book = ProfileBook(profiles, active, currency, budgets, Thresholds(**steps), assumptions, path)
    book.get(active)
    return book


def profile_from_fields(name: str, raw: dict[str, Any], currency: str = "EUR") -> Profile:
    """Build a profile from its TOML table (or form values)."""
    kind = str(raw.get("kind", "cloud_per_second"))
    cls = PROFILE_KINDS.get(kind)
    if cls is None:
        raise PricingError(f"profile {name}: unknown kind {kind!r}; expected one of {', '.join(PROFILE_KINDS)}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known) - {"kind"}
    if unknown:
        raise PricingError(f"profile {name}: unknown keys {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"name": name, "currency": str(raw.get("currency", currency))}
    for key, value in raw.items():
        if key in ("kind", "name", "currency"):
            continue
        default = getattr(cls, key)
        if key == "version":
            kwargs[key] = int(value)
        elif isinstance(default, Decimal):
            kwargs[key] = _dec(value, f"{name}.{key}")
        else:
            kwargs[key] = str(value)
    return cls(**kwargs)


def profile_fields(profile: Profile) -> dict[str, Any]:
    """The editable values of a profile (kind, version and prices), for files, forms and history."""
    out: dict[str, Any] = {"kind": profile.kind, "version": profile.version, "currency": profile.currency}
    out.update(_values(profile))
    return out


def dumps(book: ProfileBook) -> str:
    """The TOML text of a pricing file, with comments."""
    lines = [
        "# firstline pricing profiles. Edit here or in the admin dashboard (/admin).",
        "# Changing a profile's values bumps its version (also when edited by hand: detected at next load).",
        "# Money is exact: numbers are read as decimals. Kinds: cloud_per_second, cloud_per_instance_hour,",
        "# on_premises. FIRSTLINE_PRICING_PROFILE overrides `active`.",
        f"active = {_toml(book.active)}",
        f"currency = {_toml(book.currency)}",
        "",
        "# What a conversation the bot resolves alone saves: staff minutes per ticket x staff hourly cost.",
        "# Measured ticket handling times replace staff_minutes_per_ticket once min_measured_tickets exist.",
        "[assumptions]",
    ]
    lines += [f"{f.name} = {_toml(getattr(book.assumptions, f.name))}" for f in fields(Assumptions)]
    lines += [
        "",
        "# Budget shares at which the bot degrades: warn (log + dashboard), short_answers (fewer tokens),",
        "# faq_only (no model generation), escalate (hand conversations to staff).",
        "[budget_steps]",
    ]
    lines += [f"{f.name} = {_toml(getattr(book.thresholds, f.name))}" for f in fields(Thresholds)]
    for name, profile in book.profiles.items():
        lines += ["", f"[profiles.{name}]"]
        for key, value in profile_fields(profile).items():
            if key == "currency" and value == book.currency:
                continue
            lines.append(f"{key} = {_toml(value)}")
        budget = book.budgets.get(name)
        lines += ["", '# budget: unit = "money" or "compute_s"; daily / monthly limits (omit for none)']
        lines.append(f"[profiles.{name}.budget]")
        lines.append(f"unit = {_toml(budget.unit if budget else 'money')}")
        for key in ("daily", "monthly"):
            value = getattr(budget, key) if budget else None
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


class _History(Store):
    def __init__(self, path: Target) -> None:
        super().__init__(path, migrations)


def sync_versions(db_path: Target, book: ProfileBook) -> ProfileBook:
    """Record every profile version; bump profiles whose values changed without a new version."""
    store = _History(db_path)
    changed = False
    try:
        with store.write() as db:
            db.lock("pricing_profiles")  # two processes starting at once record a version once
            for name, profile in list(book.profiles.items()):
                recorded = _recorded(db, name, profile.version)
                current = _fingerprint(profile)
                if recorded == current:
                    continue
                if recorded is not None:
                    latest = db.execute("SELECT max(version) FROM pricing_profiles WHERE name = ?", [name]).fetchone()
                    profile = replace(profile, version=int(latest[0]) + 1)
                    book = replace(book, profiles={**book.profiles, name: profile})
                    changed = True
                    log.warning(
                        "pricing profile %s changed without a new version: now version %d",
                        name,
                        profile.version,
                    )
                    if _recorded(db, name, profile.version) == current:
                        continue
                db.table("pricing_profiles").insert(
                    {
                        "name": name,
                        "version": profile.version,
                        "kind": profile.kind,
                        "fields": current,
                        "recorded_at": iso(utcnow()),
                    },
                    replace=True,
                )
    finally:
        store.close()
    if changed and book.path is not None:
        try:
            save_profiles(book)
        except OSError as exc:  # a read-only file: the bumped version still applies in this process
            log.warning("could not write the bumped profile version to %s: %s", book.path, exc)
    return book


def profile_version(db: DB, name: str, version: int) -> Profile | None:
    """A past version of a profile from the history table, or None."""
    rows = list(db.query("SELECT fields FROM pricing_profiles WHERE name = ? AND version = ?", [name, version]))
    if not rows:
        return None
    raw = json.loads(rows[0]["fields"])
    raw["version"] = version
    return profile_from_fields(name, raw)


def _recorded(db: DB, name: str, version: int) -> str | None:
    rows = list(db.query("SELECT fields FROM pricing_profiles WHERE name = ? AND version = ?", [name, version]))
    return str(rows[0]["fields"]) if rows else None


def _fingerprint(profile: Profile) -> str:
    """The profile's values as canonical JSON (version excluded; 0.50 and 0.5 are the same price)."""
    values = {
        k: format(v.normalize(), "f") if isinstance(v, Decimal) else v for k, v in profile_fields(profile).items()
    }
    values.pop("version")
    return json.dumps(values, sort_keys=True)


def _values(profile: Profile) -> dict[str, Any]:
    skip = {"name", "version", "currency"}
    return {f.name: getattr(profile, f.name) for f in fields(profile) if f.name not in skip}


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise PricingError(f"profile name {name!r}: use 1-64 letters, digits, '-' or '_'")


def _dec(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PricingError(f"{what} must be a number, not {value!r}")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(f"{what} must be a number, not {value!r}") from None
    if not result.is_finite():
        raise PricingError(f"{what} must be a finite number")
    return result


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else _dec(value, "budget limit")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)
