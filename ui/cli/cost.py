"""`firstline report` and `firstline cost ...`: cost reports, the planning calculator, projections, budgets.

The shared options and error translation come from ui/cli/common.py; report rendering (table, CSV) is
usage.rendering's, shared with the admin dashboard.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from ui.cli.common import DECIMAL, HelpGroup, emit, fail, friendly_errors, json_option
from usage.pricing import PricingError, Profile
from usage.profiles import ProfileBook
from usage.rendering import report_csv, report_table
from usage.reports import GROUPS


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """ui.cli.common.friendly_errors, plus pricing and date errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return friendly_errors(func)(*args, **kwargs)
        except (PricingError, ValueError) as exc:
            fail(str(exc), 2)

    return wrapper


def _data_dir(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="FIRSTLINE_DATA_DIR",
        help="Data directory (database, pricing.toml). Default: $FIRSTLINE_DATA_DIR or ~/.local/share/firstline.",
    )(func)


def data_paths(data_dir: Path | None) -> tuple[Path, Path | str]:
    """(data directory, database: SQLite path or PostgreSQL URL) as the rest of firstline resolves them."""
    from bot.settings import BotSettings

    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    return settings.data_dir, settings.database


def load_book(data_dir: Path, database: Path | str | None = None) -> ProfileBook:
    """The data directory's pricing profiles (versions synced once the database exists). A read: without a
    pricing.toml the defaults apply and nothing is written."""
    from usage.db import exists
    from usage.profiles import load_profiles

    database = database or data_dir / "firstline.db"
    return load_profiles(data_dir, sync_history=exists(database), create=False, database=database)


def resolve_profile(book: ProfileBook, db_path: Path | str, name: str | None) -> Profile:
    """A profile by name, `name@version` (from the version history), or the active one."""
    from usage.profiles import active_profile, profile_version

    if not name:
        return active_profile(book)
    if "@" not in name:
        return book.get(name)
    base, _, version = name.partition("@")
    if not version.isdigit():
        raise PricingError(f"bad profile version in {name!r}; use NAME@VERSION")
    current = book.get(base)
    if int(version) == current.version:
        return current
    from usage.db import connect, exists

    if exists(db_path):
        from usage.provisioning import has_table

        db = connect(db_path, readonly=True)
        try:
            found = profile_version(db, base, int(version)) if has_table(db, "pricing_profiles") else None
        finally:
            db.close()
        if found is not None:
            return found
    raise PricingError(f"profile {base} has no recorded version {version}")


# -- firstline report --------------------------------------------------------------------------------
@click.command()
@click.option("--since", default=None, help="First day (YYYY-MM-DD, UTC) or ISO time. Default: the ledger's start.")
@click.option("--until", default=None, help="Last day, included (YYYY-MM-DD), or ISO time (excluded). Default: now.")
@click.option("--by", "by", type=click.Choice(list(GROUPS)), default="day", show_default=True, help="Group rows by.")
@click.option("--profile", default=None, help="Price under this profile (NAME or NAME@VERSION). Default: active.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True, help="Output."
)
@_data_dir
@json_option
@_friendly_errors
def report(
    since: str | None,
    until: str | None,
    by: str,
    profile: str | None,
    fmt: str,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Cost report from the ledger: requests, compute, latency and cost, re-priced under any profile."""
    from bot.outcomes import ConversationOutcomes
    from usage.db import exists
    from usage.reports import build_report, parse_when, prepare

    directory, db_path = data_paths(data_dir)
    book = load_book(directory, db_path)
    chosen = resolve_profile(book, db_path, profile)
    if exists(db_path):
        prepare(db_path)
    # conversations and tickets are counted by their owners (bot); only where a database exists already
    facts = ConversationOutcomes.open(db_path) if exists(db_path) else None
    try:
        result = build_report(
            db_path,
            chosen,
            by=by,
            since=parse_when(since),
            until=parse_when(until, end=True),
            assumptions=book.assumptions,
            facts=facts,
        )
    finally:
        if facts is not None:
            facts.close()
    if as_json or fmt == "json":
        emit(result.to_json())
    elif fmt == "csv":
        click.echo(report_csv(result), nl=False)
    else:
        click.echo(report_table(result))


# -- firstline cost ... ------------------------------------------------------------------------------
@click.group(cls=HelpGroup)
def cost() -> None:
    """Planning calculator, projections, pricing profiles and budgets."""


@cost.command()
@click.option("--requests-per-hour", required=True, type=DECIMAL, help="Requests per hour (N).")
@click.option("--seconds-per-request", required=True, type=DECIMAL, help="Compute seconds per request (S).")
@click.option("--price-per-second", type=DECIMAL, help="Price per compute-second (P). Default 0.0373.")
@click.option("--price-per-request", type=DECIMAL, help="Price per request, data transfer (T). Default 0.0001.")
@click.option("--hours-per-day", type=DECIMAL, default="24", show_default=True, help="Operating hours a day (H).")
@click.option("--days-per-year", type=DECIMAL, default="365", show_default=True, help="Operating days a year (D).")
@click.option(
    "--currency",
    default="EUR",
    show_default=True,
    metavar="CODE",
    help="Currency of the prices (printed with the result).",
)
@json_option
@_friendly_errors
def estimate(
    requests_per_hour: Decimal,
    seconds_per_request: Decimal,
    price_per_second: Decimal | None,
    price_per_request: Decimal | None,
    hours_per_day: Decimal,
    days_per_year: Decimal,
    currency: str,
    as_json: bool,
) -> None:
    """The planning calculator: cost per hour (compute + transfer), per day, per year, and utilisation."""
    from usage.planning import estimate as calculate
    from usage.pricing import DEFAULT_PROFILE

    result = calculate(
        requests_per_hour,
        seconds_per_request,
        DEFAULT_PROFILE.price_per_second if price_per_second is None else price_per_second,
        DEFAULT_PROFILE.price_per_request if price_per_request is None else price_per_request,
        hours_per_day,
        days_per_year,
    )
    payload = result.as_dict() | {"currency": currency}
    if as_json:
        emit(payload)
        return
    for key in ("compute_cost_per_hour", "transfer_cost_per_hour", "cost_per_hour", "cost_per_day", "cost_per_year"):
        click.echo(f"{key.replace('_', ' '):24s} {Decimal(payload[key]):>16,.2f} {currency}")
    click.echo(f"{'utilisation':24s} {payload['utilization']:>16.3f}  ({payload['note']})")


@cost.command()
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True, help="Measure the last N days.")
@_data_dir
@json_option
@_friendly_errors
def project(days: int, data_dir: Path | None, as_json: bool) -> None:
    """Project the last N days of measured traffic to a year under each profile, with break-even points."""
    from usage.planning import project as run_projection

    directory, db_path = data_paths(data_dir)
    payload = run_projection(db_path, load_book(directory, db_path), days=days).as_dict()
    if as_json:
        emit(payload)
        return
    m = payload["measured"]
    click.echo(f"{payload['basis']} {m['compute_s']:.1f} compute-seconds.")
    if payload["warning"]:
        click.echo(f"WARNING: {payload['warning']}")
    for p in payload["profiles"]:
        click.echo(f"  {p['profile']:28s} {Decimal(p['cost_per_year']):>14,.2f} {payload['currency']} a year")
    for b in payload["break_even"]:
        where = f"{b['requests_per_hour']} requests/hour" if b["requests_per_year"] is not None else "never"
        click.echo(f"  {b['profile']} is cheaper than {b['versus']} above {where}")


@cost.command()
@_data_dir
@json_option
@_friendly_errors
def profiles(data_dir: Path | None, as_json: bool) -> None:
    """List the pricing profiles (pricing.toml in the data directory) and their budgets."""
    from usage.profiles import active_profile, pricing_path, profile_fields

    directory, db_path = data_paths(data_dir)
    book = load_book(directory, db_path)
    active = active_profile(book).name
    items = []
    for name, p in book.profiles.items():
        budget = book.budget(name)
        items.append(
            {
                "name": name,
                "active": name == active,
                **{k: str(v) if isinstance(v, Decimal) else v for k, v in profile_fields(p).items()},
                "budget": {"unit": budget.unit, "daily": budget.daily, "monthly": budget.monthly},
            }
        )
    if as_json:
        emit({"file": str(pricing_path(directory)), "active": active, "profiles": items})
        return
    for item in items:
        mark = "*" if item["active"] else " "
        click.echo(f"{mark} {item['name']} v{item['version']} ({item['kind']})")
    click.echo(f"edit {pricing_path(directory)} or the admin dashboard", err=True)


@cost.command()
@_data_dir
@json_option
@_friendly_errors
def budget(data_dir: Path | None, as_json: bool) -> None:
    """The budget step now (normal, warn, short_answers, faq_only, escalate) for the active profile."""
    from usage.budgets import BudgetGuard, unspent_status
    from usage.db import exists
    from usage.profiles import active_profile

    directory, db_path = data_paths(data_dir)
    book = load_book(directory, db_path)
    if not exists(db_path):  # nothing spent yet; a read creates no database
        payload = unspent_status(book, active_profile(book).name).as_dict()
    else:
        guard = BudgetGuard(db_path, book, profile=active_profile(book).name)
        try:
            payload = guard.status().as_dict()
        finally:
            guard.close()
    if as_json:
        emit(payload)
        return
    click.echo(f"{payload['profile']}: {payload['step']}")
    for p in payload["periods"]:
        click.echo(f"  {p['period']:5s} spent {p['spent']} of {p['limit'] or 'no limit'} -> {p['step']}")


@cost.command("benchmark")
@click.option("--rows", type=click.IntRange(1), default=1_000_000, show_default=True, help="Synthetic ledger rows.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep the database here.")
@json_option
@_friendly_errors
def benchmark_reports(rows: int, keep: Path | None, as_json: bool) -> None:
    """Time `report` over a synthetic ledger (with conversations) of N rows; prints seconds per grouping."""
    from bot.conversation_store import ConversationStore
    from usage.pricing import DEFAULT_PROFILE
    from usage.reports import benchmark, prepare, synthetic_ledger

    directory = keep or Path(tempfile.mkdtemp(prefix="firstline-bench-"))
    db_path = directory / "firstline.db"
    t0 = time.perf_counter()
    if not db_path.exists():
        ConversationStore(db_path).close()
        synthetic_ledger(db_path, rows, with_conversations=True)
    prepare(db_path)
    filled = time.perf_counter() - t0
    timings = benchmark(db_path, DEFAULT_PROFILE, ("day", "month", "route", "model", "hour"))
    payload = {"rows": rows, "fill_s": round(filled, 3), "report_s": timings, "database": str(db_path)}
    if as_json:
        emit(payload)
        return
    for by, seconds in timings.items():
        click.echo(f"report --by {by:6s} {seconds:8.3f} s over {rows:,} rows")
