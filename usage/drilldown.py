"""Drill-down: the requests and conversations behind one figure of a report (a row of `build_report`).

A report row is a group (`by`, `key`) over [since, until): an hour, day or month bucket, a route, model,
device, outcome or conversation. These queries list that group's ledger rows (newest first) and its
conversations with their figures, so the dashboard can go from a number to what it is made of. Costs are
as recorded (`cost_micros`, under the profile active when the request ran). Read-only connections.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from usage.db import connect, exists
from usage.ledger import iso
from usage.pricing import MICROS, from_micros, money
from usage.provisioning import has_table
from usage.reports import FINISHED, GROUPS, micro_seconds_sql

_TIME = {"hour": ("%Y-%m-%dT%H:00Z", timedelta(hours=1)), "day": ("%Y-%m-%d", timedelta(days=1))}


def group_condition(
    by: str | None, key: str, since: datetime, until: datetime, dialect: str = "sqlite"
) -> tuple[str, list[Any]]:
    """SQL condition (and parameters) selecting the finished rows of one report group in [since, until)
    (`by` None: every finished row of the period)."""
    plus = "+" if dialect == "sqlite" else ""  # SQLite: the started_at range is the better index than status
    cond, params = f"{plus}status IN {FINISHED} AND started_at >= ? AND started_at < ?", [iso(since), iso(until)]
    if by is None:
        return cond, params
    if by not in GROUPS:
        raise ValueError(f"unknown grouping {by!r}")
    if by in _TIME or by == "month":
        lo = _bucket_start(by, key)
        hi = (lo + timedelta(days=32)).replace(day=1) if by == "month" else lo + _TIME[by][1]
        return cond, [iso(max(lo, since)), iso(min(hi, until))]
    if by == "conversation":
        return cond + " AND conversation_id = ?", [*params, key]
    return f"{cond} AND {GROUPS[by]} = ?", [*params, key]


def requests_of(
    db_path: Path | str,
    by: str | None,
    key: str,
    since: datetime,
    until: datetime,
    *,
    failed_only: bool = False,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The group's requests, newest first: time, ids, route, outcome, seconds, tokens, recorded cost, error."""
    db = _open(db_path)
    if db is None:
        return []
    cond, params = group_condition(by, key, since, until, db.dialect)
    if failed_only:
        cond += " AND status != 'completed'"
    try:
        rows = db.execute(
            f"SELECT started_at, request_id, conversation_id, route, {GROUPS['outcome']}, compute_s, latency_s, "
            "coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0), cost_micros, currency, error "
            f"FROM requests WHERE {cond} ORDER BY started_at DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
    finally:
        db.close()
    keys = ("started_at", "request_id", "conversation_id", "route", "outcome", "compute_s", "latency_s", "tokens",
            "cost", "currency", "error")  # fmt: skip
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["cost"] = money(from_micros(item["cost"])) if item["cost"] is not None else None
        out.append(item)
    return out


def conversations_of(
    db_path: Path | str,
    by: str,
    key: str,
    since: datetime,
    until: datetime,
    *,
    limit: int = 100,
    tickets: Callable[[list[str]], dict[str, tuple[str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """The group's conversations, costliest first: requests, failures, compute, recorded cost, and their
    latest ticket as `tickets` (the ticket store's `latest_of`) tells."""
    db = _open(db_path)
    if db is None:
        return []
    cond, params = group_condition(by, key, since, until, db.dialect)
    try:
        rows = db.execute(
            "SELECT conversation_id, n, failed, mu, cost, first, last FROM (SELECT conversation_id, "
            "count(*) AS n, sum(CASE WHEN status != 'completed' THEN 1 ELSE 0 END) AS failed, "
            f"sum({micro_seconds_sql(db)}) AS mu, "
            "sum(coalesce(cost_micros, 0)) AS cost, min(started_at) AS first, max(started_at) AS last "
            f"FROM requests WHERE {cond} GROUP BY conversation_id) g ORDER BY cost DESC, last DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
    finally:
        db.close()
    latest = tickets([r[0] for r in rows]) if tickets is not None and rows else {}
    return [
        {
            "conversation_id": conv,
            "requests": n,
            "failed": failed or 0,
            "compute_s": float((mu or 0) / MICROS),
            "cost": money(from_micros(cost or 0)),
            "first": first,
            "last": last,
            "ticket": latest.get(conv, (None, None))[0],
            "ticket_status": latest.get(conv, (None, None))[1],
        }
        for conv, n, failed, mu, cost, first, last in rows
    ]


def _open(db_path: Path | str) -> Any:
    if not exists(db_path):
        return None
    db = connect(db_path, readonly=True)
    if not has_table(db, "requests"):
        db.close()
        return None
    return db


def _bucket_start(by: str, key: str) -> datetime:
    from datetime import UTC

    try:
        if by == "month":
            return datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC)
        return datetime.strptime(key, _TIME[by][0]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a {by}: {key!r}") from None
