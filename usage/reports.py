"""Cost reports: totals and rollups of the ledger, re-priced under any pricing profile.

Which rows count: finished rows only (`completed`, `error`, `cancelled`, `interrupted`), selected by
`started_at` in [since, until). `started` rows are in flight and left out (a crash turns them into
`interrupted` at the next start). An `interrupted` row has no measured compute time; it counts with the
time it ran (`latency_s`, an upper bound) as its compute seconds, so a crash never hides cost.

Cost: for a per-request profile (cloud per compute-second) each row costs
round_half_even(microseconds x price + fee) micro-units, computed in SQL with integers, exactly what the
ledger stores as `cost_micros` when that profile was active; group and total costs are sums of these.
For period-billed profiles (instance-hour, on-premises) the period's cost comes from provisioned or
wall-clock time and is allocated to groups by their share of compute seconds (by request count when
nothing computed), in whole micro-units with the largest-remainder method, so rows always add up to the
total. Money in JSON is a string with exactly six decimals.

Speed: every query opens its own read-only connection (reports never block the ledger's writers). Sums
avoid sorting the period: each group is one index range, a time bucket on `started_at` or a route / model
/ device on the `(key, started_at)` indexes that `prepare` adds; only `--by conversation` uses a GROUP BY
(on PostgreSQL route / model / device too: its hash aggregate over the period's index range needs no sort).
The SQL is written once; `_sql` holds the few fragments that differ between SQLite and PostgreSQL.
p50/p95 of latency and queue wait (nearest rank) come from a parallel query: exact up to
`PERCENTILE_SAMPLE` rows, above that over a systematic sample of every k-th rowid of the period. The
conversation outcomes run in parallel too, counting closed days from the ledger's daily conversation rollup (on
both databases). `firstline cost benchmark` times it over a synthetic ledger.
"""

from __future__ import annotations

import logging
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage import sharing
from usage.db import DB, Store, Target, connect, each_in, exists
from usage.errors import StorageError
from usage.feedback import Feedback
from usage.feedback import summarize as summarize_feedback
from usage.ledger import (
    Ledger,
    ensure_partitions,
    iso,
    parse_iso,
    rebuild_conversation_rollup,
    rebuild_rollup,
    utcnow,
)
from usage.ledger import migrations as ledger_migrations
from usage.pricing import (
    MICROS,
    CloudPerSecond,
    PeriodUsage,
    Profile,
    allocate,
    duration_s,
    from_micros,
    money,
    to_micros,
)
from usage.profiles import Assumptions
from usage.provisioning import Provisioned, has_table, provisioned_seconds
from usage.stats import percentile

log = logging.getLogger(__name__)
index_migrations = Migrations("firstline.reports")


@index_migrations()
def m001_report_indexes(db: Database) -> None:
    # (key, started_at) lets a report read each route / model / device as one index range, no sorting.
    # PostgreSQL reads closed days from the daily rollup and groups the rest with a hash aggregate: there
    # these indexes would only slow every ledger write.
    if getattr(db, "dialect", "sqlite") != "sqlite":
        return
    for column in ("route", "model_id", "device"):
        db.execute(f"CREATE INDEX IF NOT EXISTS idx_requests_{column}_started_at ON requests({column}, started_at)")


def prepare(db_path: Target) -> bool:
    """Create the ledger and the report indexes if missing (a short write; reports themselves only read).

    Returns False when the database cannot be written (a read-only copy): reports still work, slower.
    """
    try:
        ledger_store = Store(db_path, ledger_migrations)
        try:
            Store(db_path, index_migrations).close()
        finally:
            ledger_store.close()
    except StorageError as exc:
        log.warning("report indexes not created (%s); reports fall back to sorting", exc)
        return False
    return True


FINISHED = ("completed", "error", "cancelled", "interrupted")
GROUPS = {
    "hour": "substr(started_at, 1, 13)",
    "day": "substr(started_at, 1, 10)",
    "month": "substr(started_at, 1, 7)",
    "route": "route",
    "conversation": "conversation_id",
    "model": "coalesce(model_id, '')",
    "device": "coalesce(device, '')",
    "outcome": "",  # filled in below: completed, or the cause of a failure (OUTCOMES)
}
# Why a request did not complete, from its status and recorded error (the model layer's messages; see
# models/errors.py and bot/conversation.py): the dashboard's "errors by cause" and `report --by outcome`.
OUTCOMES = {
    "completed": "answered (FAQ, model or hand-over) without a failure",
    "timeout": "the model took longer than FIRSTLINE_MODEL_TIMEOUT_S; the conversation went to a person",
    "model_unavailable": "the model could not be loaded or its worker was down; the conversation went to a person",
    "context_overflow": "the prompt did not fit the model's context window",
    "error": "any other failure while answering (see the request's error text)",
    "cancelled": "the customer left or the stream was closed before the answer was complete",
    "interrupted": "the server process ended during the request (marked at the next start)",
}
_ERROR = "lower(coalesce(error, ''))"
GROUPS["outcome"] = (
    "CASE WHEN status IN ('completed', 'cancelled', 'interrupted') THEN status "
    f"WHEN {_ERROR} LIKE '%timeout%' OR {_ERROR} LIKE '%timed out%' THEN 'timeout' "
    f"WHEN {_ERROR} LIKE '%could not be loaded%' OR {_ERROR} LIKE '%unavailable%' OR {_ERROR} LIKE '%worker%' "
    "THEN 'model_unavailable' "
    f"WHEN {_ERROR} LIKE '%context%' THEN 'context_overflow' ELSE 'error' END"
)
PERCENTILE_SAMPLE = 100_000
_TOTAL = "\x00total"


def _sql(db: DB) -> dict[str, str]:
    """The SQL fragments that differ between SQLite and PostgreSQL."""
    if db.dialect == "sqlite":
        return {
            # whole microseconds of a row, as `usage.pricing.micro_seconds` computes them (interrupted: its latency)
            "micro_s": "max(0, CAST(coalesce(compute_s, latency_s, 0) * 1000000 + 0.5 AS INTEGER))",
            "plus": "+",  # `+status`: keeps SQLite off the status index, the started_at range is the better one
            "no_flatten": " LIMIT -1",  # keeps SQLite from flattening the inner query (re-evaluating per use)
        }
    return {
        "micro_s": "greatest(0, floor(coalesce(compute_s, latency_s, 0) * 1000000 + 0.5)::bigint)",
        "plus": "",
        "no_flatten": "",
    }


def micro_seconds_sql(db: DB) -> str:
    """SQL for a row's whole microseconds (interrupted: its latency), as `usage.pricing.micro_seconds`."""
    return _sql(db)["micro_s"]


def _finished(db: DB) -> str:
    return f"{_sql(db)['plus']}status IN {FINISHED}"


@dataclass(frozen=True)
class Row:
    """One group of a report (or its totals)."""

    key: str
    requests: int = 0
    errors: int = 0
    interrupted: int = 0
    cancelled: int = 0
    compute_micros: int = 0
    failed_micros: int = 0  # compute of the requests that did not complete (error, cancelled, interrupted)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    retrieval_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    queue_wait_p50_s: float | None = None
    queue_wait_p95_s: float | None = None
    cost_micros: int = 0
    failed_cost_micros: int = 0  # the part of cost_micros spent on requests that did not complete

    @property
    def compute_s(self) -> Decimal:
        return Decimal(self.compute_micros) / MICROS

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)

    @property
    def failed(self) -> int:
        """Requests that did not complete: errors, cancelled and interrupted."""
        return self.errors + self.cancelled + self.interrupted

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "compute_s": float(self.compute_s),
            "prefill_s": round(self.prefill_s, 6),
            "decode_s": round(self.decode_s, 6),
            "retrieval_s": round(self.retrieval_s, 6),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "interrupted": self.interrupted,
            "failed": self.failed,
            "failed_compute_s": float(Decimal(self.failed_micros) / MICROS),
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "queue_wait_p50_s": self.queue_wait_p50_s,
            "queue_wait_p95_s": self.queue_wait_p95_s,
            "cost": money(self.cost),
            "failed_cost": money(from_micros(self.failed_cost_micros)),
        }


@dataclass(frozen=True)
class Report:
    """A cost report over [since, until) grouped `by` one dimension, priced under `profile`."""

    by: str
    profile: Profile
    since: datetime
    until: datetime
    rows: list[Row]
    totals: Row
    provisioned: Provisioned
    outcomes: Outcomes | None = None
    sample_every: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def utilization(self) -> float | None:
        if self.provisioned.seconds <= 0:
            return None
        return float(self.totals.compute_s / self.provisioned.seconds)

    def to_json(self) -> dict[str, Any]:
        """The `firstline report --json` document."""
        totals = self.totals.as_dict()
        idle = max(Decimal(0), self.provisioned.seconds - self.totals.compute_s)
        per_request = self.totals.cost / self.totals.requests if self.totals.requests else None
        totals |= {
            "cost_per_request": money(per_request) if per_request is not None else None,
            "provisioned_s": float(self.provisioned.seconds),
            "provisioned_source": self.provisioned.source,
            "idle_s": float(idle),
            "utilization": self.utilization,
        }
        return {
            "by": self.by,
            "profile": self.profile.name,
            "profile_version": self.profile.version,
            "profile_kind": self.profile.kind,
            "currency": self.profile.currency,
            "since": iso(self.since),
            "until": iso(self.until),
            "rows": [{self.by: r.key} | r.as_dict() for r in self.rows],
            "totals": totals,
            "conversations": self.outcomes.as_dict() if self.outcomes else None,
            "percentile_sample_every": self.sample_every,
            "money": "decimal strings with six places (micro-units)",
            "notes": self.notes,
        }


def parse_when(text: str | None, *, end: bool = False) -> datetime | None:
    """A CLI date (YYYY-MM-DD, UTC; as `until` it includes that whole day) or ISO datetime."""
    if not text:
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def build_report(
    db_path: Target,
    profile: Profile,
    *,
    by: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    assumptions: Assumptions | None = None,
    with_outcomes: bool = True,
    percentile_sample: int = PERCENTILE_SAMPLE,
    facts: ConversationFacts | None = None,
) -> Report:
    """Aggregate the ledger over [since, until) by one dimension and price it under `profile`."""
    if by not in GROUPS:
        raise ValueError(f"unknown grouping {by!r}; expected one of {', '.join(GROUPS)}")
    now = now or utcnow()
    until = min(until or now, now)
    path = db_path
    nothing = Provisioned(Decimal(0), "none", 0)
    if not exists(path):
        return Report(by, profile, since or until, until, [], Row("total"), nothing, notes=["no ledger yet"])
    db = connect(path, readonly=True)
    try:
        if not has_table(db, "requests"):
            return Report(by, profile, since or until, until, [], Row("total"), nothing, notes=["no ledger yet"])
        if since is None:
            first = db.execute(f"SELECT min(started_at) FROM requests WHERE {_finished(db)}").fetchone()[0]
            since = _day_start(parse_iso(first)) if first else until
        since = min(since, until)
        params = [iso(since), iso(until)]
        n, first_id, last_id = _period_count(db, by, since, until)
        every = max(1, math.ceil(n / max(1, percentile_sample)))
        with ThreadPoolExecutor(max_workers=2) as pool:
            spread = pool.submit(_percentiles, path, by, params, every, (first_id or 0, last_id or 0))
            notes: list[str] = []
            sums = pool.submit(_sums, path, by, since, until, profile, notes)
            found = pool.submit(outcomes, path, since, until, assumptions, facts) if with_outcomes else None
            groups, spreads = sums.result(), spread.result()
            result_outcomes = found.result() if found else None
        provisioned = provisioned_seconds(db, since, until, now)
        billing = sharing.billing_counts(db, *params)
    finally:
        db.close()
    rows = [replace(r, **cast(dict[str, Any], spreads.get(r.key, {}))) for r in groups]
    if isinstance(profile, CloudPerSecond):
        total = sum(r.cost_micros for r in rows)
    else:
        usage = PeriodUsage(
            requests=sum(r.requests for r in rows),
            compute_s=Decimal(sum(r.compute_micros for r in rows)) / MICROS,
            wall_s=duration_s(until - since),
            provisioned_s=provisioned.seconds,
        )
        total = to_micros(profile.period_cost(usage))
        weights = [r.compute_micros for r in rows]
        if not any(weights):
            weights = [r.requests for r in rows]
        rows = [replace(r, cost_micros=c) for r, c in zip(rows, allocate(total, weights), strict=True)]
        rows = [replace(r, failed_cost_micros=_failed_share(r)) for r in rows]
    totals = _total(rows, spreads.get(_TOTAL, {}), total)
    if by == "conversation":
        rows.sort(key=lambda r: (-r.cost_micros, r.key))
    if every > 1:
        notes.append(f"p50/p95 estimated from every {every}th request (about {percentile_sample:,} rows)")
    if billing.get("provisional") or billing.get("estimated"):
        notes.append(sharing.billing_note(billing))
    if result_outcomes is not None:
        result_outcomes = result_outcomes.priced(from_micros(totals.cost_micros))
    return Report(by, profile, since, until, rows, totals, provisioned, result_outcomes, every, notes)


@dataclass(frozen=True)
class Spend:
    """What a period cost under one profile, without rollups or percentiles (cheap: one indexed query)."""

    requests: int
    compute_micros: int
    cost_micros: int
    provisioned: Provisioned

    @property
    def compute_s(self) -> Decimal:
        return Decimal(self.compute_micros) / MICROS

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)


def period_spend(
    db_path: Target,
    profile: Profile,
    since: datetime,
    until: datetime,
    now: datetime | None = None,
    *,
    serving_only: bool = False,
) -> Spend:
    """Requests, compute and cost of [since, until) under `profile` (the same figures as `build_report`).

    `serving_only` leaves out the `training` route: budgets and traffic projections are about answering
    customers, and one fine-tuning run is neither recurring traffic nor a reason to degrade the bot."""
    now = now or utcnow()
    until = min(until, now)
    path = db_path
    if not exists(path) or until <= since:
        return Spend(0, 0, 0, Provisioned(Decimal(0), "none", 0))
    db = connect(path, readonly=True)
    try:
        if not has_table(db, "requests"):
            return Spend(0, 0, 0, Provisioned(Decimal(0), "none", 0))
        provisioned = provisioned_seconds(db, since, until, now)
    finally:
        db.close()
    rows = _sums(path, "total", since, until, profile, where="route <> 'training'" if serving_only else "1=1")
    requests = sum(r.requests for r in rows)
    micros = sum(r.compute_micros for r in rows)
    if isinstance(profile, CloudPerSecond):
        cost = sum(r.cost_micros for r in rows)
    else:
        wall = duration_s(until - since)
        usage = PeriodUsage(requests, Decimal(micros) / MICROS, wall, provisioned.seconds)
        cost = to_micros(profile.period_cost(usage))
    return Spend(requests, micros, cost, provisioned)


def _sums(
    path: Target,
    by: str,
    since: datetime,
    until: datetime,
    profile: Profile,
    notes: list[str] | None = None,
    where: str = "1=1",
) -> list[Row]:
    """Per-group sums. PostgreSQL: closed days from the daily rollup, the rest of the period from raw rows.
    SQLite: raw rows, one indexed query per group segment (no sort of the whole period). `where` is an extra
    SQL condition on columns the rollup keeps too (route, status, model_id, device)."""
    db = connect(path, readonly=True)
    try:
        closed = _closed_days(db, by, since, until)
        if closed is None:
            return _merge(_raw_sums(db, by, since, until, profile, where))
        lo, hi = closed
        rows, repriced = _rollup_sums(db, by, lo, hi, profile, where)
        if repriced and notes is not None:
            notes.append(
                f"{repriced:,} requests of closed days were recorded under another pricing profile and re-priced "
                "from the daily rollup's sums (rounded once per day and group, not per request)"
            )
        rows += _raw_sums(db, by, since, lo, profile, where) if since < lo else []
        rows += _raw_sums(db, by, hi, until, profile, where) if hi < until else []
        return _merge(rows)
    finally:
        db.close()


ROLLUP_GROUPS = {
    "day": "day",
    "month": "substr(day, 1, 7)",
    "route": "route",
    "model": "model_id",
    "device": "device",
    "total": "'total'",
}


def _period_count(db: DB, by: str, since: datetime, until: datetime) -> tuple[int, int, int]:
    """Rows of [since, until) and (SQLite) the rowid range; PostgreSQL counts closed days in the rollup."""
    count = "SELECT count(*) FROM requests WHERE started_at >= ? AND started_at < ?"
    if db.dialect == "sqlite":
        sql = "SELECT count(*), min(rowid), max(rowid) FROM requests WHERE started_at >= ? AND started_at < ?"
        n, first_id, last_id = db.execute(sql, [iso(since), iso(until)]).fetchone()
        return int(n), int(first_id or 0), int(last_id or 0)
    closed = _closed_days(db, "total", since, until)
    if closed is None:
        return int(db.execute(count, [iso(since), iso(until)]).fetchone()[0]), 0, 0
    lo, hi = closed
    days = [lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d")]
    n = int(db.execute("SELECT coalesce(sum(requests), 0) FROM requests_daily WHERE day >= ? AND day < ?", days)
            .fetchone()[0])  # fmt: skip
    for a, b in ((since, lo), (hi, until)):
        if a < b:
            n += int(db.execute(count, [iso(a), iso(b)]).fetchone()[0])
    return n, 0, 0


def _closed_days(db: DB, by: str, since: datetime, until: datetime) -> tuple[datetime, datetime] | None:
    """The whole UTC days of [since, until) before today that the rollup answers (PostgreSQL), or None."""
    if db.dialect != "postgresql" or by not in ROLLUP_GROUPS:
        return None
    return _whole_days_before_today(since, until)


def _whole_days_before_today(since: datetime, until: datetime) -> tuple[datetime, datetime] | None:
    """[lo, hi): the whole UTC days of [since, until) before today (closed: a rollup answers them), or None."""
    lo = _day_start(since) + (timedelta(days=1) if since != _day_start(since) else timedelta(0))
    hi = min(_day_start(until), _day_start(utcnow()))
    return (lo, hi) if lo < hi else None


def _rollup_sums(
    db: DB, by: str, lo: datetime, hi: datetime, profile: Profile, where: str = "1=1"
) -> tuple[list[Row], int]:
    """Sums of the closed days [lo, hi) from `requests_daily`; rows recorded under `profile` keep their stored
    costs, others are re-priced from the sums. Returns the rows and how many requests were re-priced."""
    own = "CASE WHEN profile = ? AND profile_version = ? THEN 1 ELSE 0 END"
    sql = (
        f"SELECT {ROLLUP_GROUPS[by]} AS k, status, {own} AS own, sum(requests), sum(compute_micros), "
        "sum(prefill_s), sum(decode_s), sum(retrieval_s), sum(prompt_tokens), sum(completion_tokens), "
        "sum(cost_micros) FROM requests_daily WHERE day >= ? AND day < ? AND " + where + " GROUP BY 1, 2, 3 ORDER BY 1"
    )
    args = [profile.name, profile.version, lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d")]
    groups: dict[Any, list[Any]] = {}
    repriced = 0
    for k, status, is_own, n, mu, pf, dc, rt, pt, ct, stored in db.execute(sql, args):
        n, mu = int(n or 0), int(mu or 0)
        if is_own or not isinstance(profile, CloudPerSecond):
            cost = int(stored or 0) if is_own else 0
        else:  # re-priced from the day's sums, rounded once per group (half to even)
            scale, mult, fee = profile.sql_terms()
            a = mu * mult + n * fee
            cost = (a + scale // 2) // scale - (1 if a % (2 * scale) == scale // 2 else 0)
            repriced += n
        failed = status != "completed"
        g = groups.setdefault(k, [0] * 13)
        for i, v in enumerate((n, status == "error" and n, status == "interrupted" and n,
                               status == "cancelled" and n, mu, failed and mu, float(pf or 0), float(dc or 0),
                               float(rt or 0), int(pt or 0), int(ct or 0), cost, failed and cost)):  # fmt: skip
            g[i] += v or 0
    return [_row(_label(by, k), values) for k, values in groups.items()], repriced


def _raw_sums(db: DB, by: str, since: datetime, until: datetime, profile: Profile, where: str = "1=1") -> list[Row]:
    """Per-group sums of the raw rows of [since, until) (`where`: an extra SQL condition)."""
    scale, mult, fee = profile.sql_terms() if isinstance(profile, CloudPerSecond) else (10, 0, 0)
    columns = set(db.table("requests").columns_dict)
    retrieval = "coalesce(retrieval_s, 0)" if "retrieval_s" in columns else "0"
    frag = _sql(db)
    # the inner query computes each row's microseconds and scaled cost once
    rounded = "((a + ?) / ? - CASE WHEN a % ? = ? THEN 1 ELSE 0 END)"  # round half to even: half up, minus one
    failed = "status != 'completed'"  # if exactly half and even
    aggregate = (
        "count(*), sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'interrupted' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), sum(mu), "
        f"sum(CASE WHEN {failed} THEN mu ELSE 0 END), coalesce(sum(prefill_s), 0), "
        "coalesce(sum(decode_s), 0), coalesce(sum(rt), 0), coalesce(sum(prompt_tokens), 0), "
        f"coalesce(sum(completion_tokens), 0), sum({rounded}), sum(CASE WHEN {failed} THEN {rounded} ELSE 0 END)"
    )
    inner = (
        f"SELECT {{key}} status, {frag['micro_s']} AS mu, {frag['micro_s']} * ? + ? AS a, prefill_s, decode_s, "
        f"{retrieval} AS rt, prompt_tokens, completion_tokens FROM requests "
        f"WHERE {_finished(db)} AND {{cond}} AND {where}{frag['no_flatten']}"
    )
    cost_args = [scale // 2, scale, 2 * scale, scale // 2] * 2
    period = [iso(since), iso(until)]
    out: list[Row] = []
    segments = _segments(db, by, since, until)
    if segments is None:  # one grouped query (conversations, or a key without its index)
        rows_sql = inner.format(key=GROUPS[by] + " AS k,", cond="started_at >= ? AND started_at < ?")
        sql = f"SELECT k, {aggregate} FROM ({rows_sql}) AS r GROUP BY k ORDER BY k"
        for k, *values in db.execute(sql, [*cost_args, mult, fee, *period]).fetchall():
            out.append(_row(_label(by, k), values))
    else:
        sql = f"SELECT {aggregate} FROM ({inner.format(key='', cond='{cond}')}) AS r"
        for label, cond, args in segments:
            values = db.execute(sql.format(cond=cond), [*cost_args, mult, fee, *args]).fetchone()
            if values[0]:
                out.append(_row(label, list(values)))
    return out


def _segments(db: Any, by: str, since: datetime, until: datetime) -> list[tuple[str, str, list[Any]]] | None:
    """(label, SQL condition, parameters) per group, each an index range; None: use one GROUP BY."""
    period = "started_at >= ? AND started_at < ?"
    if by == "total":
        return [("total", period, [iso(since), iso(until)])]
    if by in ("hour", "day", "month"):
        return [(label, period, [iso(lo), iso(hi)]) for label, lo, hi in _buckets(by, since, until)]
    column = {"route": "route", "model": "model_id", "device": "device"}.get(by)
    if column is None or db.dialect != "sqlite" or not _indexed(db, column):
        return None
    keys: list[Any] = []
    if db.execute(f"SELECT 1 FROM requests WHERE {column} IS NULL LIMIT 1").fetchone():
        keys.append(None)
    key = db.execute(f"SELECT min({column}) FROM requests").fetchone()[0]
    while key is not None:  # a loose index scan: one seek per distinct value
        keys.append(key)
        key = db.execute(f"SELECT min({column}) FROM requests WHERE {column} > ?", [key]).fetchone()[0]
    return [("" if k is None else str(k), f"{column} IS ? AND {period}", [k, iso(since), iso(until)]) for k in keys]


def _buckets(by: str, since: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
    out = []
    if by == "month":
        lo = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif by == "day":
        lo = _day_start(since)
    else:
        lo = since.replace(minute=0, second=0, microsecond=0)
    while lo < until:
        if by == "month":
            hi = (lo + timedelta(days=32)).replace(day=1)
            label = lo.strftime("%Y-%m")
        else:
            hi = lo + (timedelta(days=1) if by == "day" else timedelta(hours=1))
            label = lo.strftime("%Y-%m-%d") if by == "day" else lo.strftime("%Y-%m-%dT%H:00Z")
        out.append((label, max(lo, since), min(hi, until)))
        lo = hi
    return out


def _indexed(db: Any, column: str) -> bool:
    return any(
        row[1] == f"idx_requests_{column}_started_at" for row in db.execute("PRAGMA index_list(requests)").fetchall()
    )


def _row(label: str, values: list[Any]) -> Row:
    n, errors, interrupted, cancelled, mu, failed_mu, pf, dc, rt, pt, ct, cost, failed_cost = values
    return Row(  # PostgreSQL sums integers as numeric
        label,
        requests=int(n),
        errors=int(errors or 0),
        interrupted=int(interrupted or 0),
        cancelled=int(cancelled or 0),
        compute_micros=int(mu or 0),
        failed_micros=int(failed_mu or 0),
        prefill_s=float(pf or 0),
        decode_s=float(dc or 0),
        retrieval_s=float(rt or 0),
        prompt_tokens=int(pt or 0),
        completion_tokens=int(ct or 0),
        cost_micros=int(cost or 0),
        failed_cost_micros=int(failed_cost or 0),
    )


def _failed_share(row: Row) -> int:
    """A period-billed row's cost that falls on its failed requests (by their share of its compute)."""
    if not row.failed_micros or not row.compute_micros:
        return 0
    return allocate(row.cost_micros, [row.failed_micros, row.compute_micros - row.failed_micros])[0]


def _merge(rows: list[Row]) -> list[Row]:
    """Merge rows with the same label (a NULL and an empty model id are both '')."""
    merged: dict[str, Row] = {}
    for r in rows:
        if r.key in merged:
            m = merged[r.key]
            merged[r.key] = _total([m, r], {}, m.cost_micros + r.cost_micros, key=r.key)
        else:
            merged[r.key] = r
    return sorted(merged.values(), key=lambda r: r.key)


def _percentiles(
    path: Target, by: str, params: list[Any], every: int, ids: tuple[int, int]
) -> dict[str, dict[str, float | None]]:
    """p50/p95 per group: all rows, or a sample of about one in `every`: on SQLite every `every`-th rowid of
    the period's rowid range (systematic), on PostgreSQL the rows of a repeatable sample of pages."""
    db = connect(path, readonly=True)
    try:
        where = f"{_finished(db)} AND started_at >= ? AND started_at < ?"
        sql = f"SELECT {GROUPS[by]}, latency_s, queue_wait_s FROM requests WHERE {where}"
        args = list(params)
        if every > 1 and db.dialect == "sqlite":  # visit only the sampled rows: generated rowids, one lookup each
            sql = (
                "WITH RECURSIVE ids(id) AS (SELECT ? UNION ALL SELECT id + ? FROM ids WHERE id + ? <= ?) "
                f"SELECT {GROUPS[by]}, latency_s, queue_wait_s FROM ids JOIN requests ON requests.rowid = ids.id "
                f"WHERE {where}"
            )
            args = [ids[0], every, every, ids[1], *params]
        elif every > 1:  # pages (SYSTEM) on a big period, rows (BERNOULLI) on a small one
            method = "SYSTEM" if every * PERCENTILE_SAMPLE >= 1_000_000 else "BERNOULLI"
            sample = f"TABLESAMPLE {method} ({100.0 / every:.6f}) REPEATABLE (7)"
            sampled = f"SELECT {GROUPS[by]}, latency_s, queue_wait_s FROM requests {sample} WHERE {where}"
            result = db.execute(sampled, args).fetchall()
            if result:
                sql = ""
        if sql:
            result = db.execute(sql, args).fetchall()
    finally:
        db.close()
    latency: dict[str, list[float]] = {_TOTAL: []}
    queue: dict[str, list[float]] = {_TOTAL: []}
    for k, lat, qw in result:
        key = _label(by, k)
        if lat is not None:
            latency.setdefault(key, []).append(lat)
            latency[_TOTAL].append(lat)
        if qw is not None:
            queue.setdefault(key, []).append(qw)
            queue[_TOTAL].append(qw)
    out: dict[str, dict[str, float | None]] = {}
    for key in set(latency) | set(queue):
        lat_v, qw_v = latency.get(key, []), queue.get(key, [])
        out[key] = {
            "latency_p50_s": _rounded(percentile(lat_v, 50, nearest=True)),
            "latency_p95_s": _rounded(percentile(lat_v, 95, nearest=True)),
            "queue_wait_p50_s": _rounded(percentile(qw_v, 50, nearest=True)),
            "queue_wait_p95_s": _rounded(percentile(qw_v, 95, nearest=True)),
        }
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _total(rows: list[Row], spread: dict[str, float | None], cost_micros: int, key: str = "total") -> Row:
    return Row(
        key,
        requests=sum(r.requests for r in rows),
        errors=sum(r.errors for r in rows),
        interrupted=sum(r.interrupted for r in rows),
        cancelled=sum(r.cancelled for r in rows),
        compute_micros=sum(r.compute_micros for r in rows),
        failed_micros=sum(r.failed_micros for r in rows),
        prefill_s=sum(r.prefill_s for r in rows),
        decode_s=sum(r.decode_s for r in rows),
        retrieval_s=sum(r.retrieval_s for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cost_micros=cost_micros,
        failed_cost_micros=sum(r.failed_cost_micros for r in rows),
        **spread,
    )


def _label(by: str, key: Any) -> str:
    key = "" if key is None else str(key)
    return f"{key}:00Z" if by == "hour" and key else key


def _day_start(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


# -- conversations, tickets and what the bot saved -----------------------------------------------------
@dataclass(frozen=True)
class Outcomes:
    """Conversations started in the period: escalated or resolved by the bot alone, and staff time.

    Escalated: the conversation has a ticket, a `human`-routed ledger row, or status `human`. Deflected:
    every other conversation (the bot resolved it without a human). Resolved: deflected ones plus those
    whose ticket is resolved. Staff time: claimed -> resolved/unclaimed intervals from `ticket_events`
    that end in the period (else tickets' claimed_at -> resolved_at). Saved: deflected conversations x
    staff minutes per ticket (measured once `min_measured_tickets` tickets were handled, else the
    assumption from pricing.toml) x staff hourly cost.
    """

    source: str
    conversations: int
    escalated: int
    resolved: int
    tickets_handled: int | None
    staff_s: Decimal | None
    minutes_per_ticket: Decimal
    minutes_source: str
    staff_hourly_cost: Decimal
    bot_cost: Decimal | None = None
    feedback: Feedback | None = None  # customers' ratings given in the period

    @property
    def deflected(self) -> int:
        return self.conversations - self.escalated

    def priced(self, bot_cost: Decimal) -> Outcomes:
        return replace(self, bot_cost=bot_cost)

    def as_dict(self) -> dict[str, Any]:
        n, cost = self.conversations, self.bot_cost
        avoided = Decimal(self.deflected) * self.minutes_per_ticket / 60 * self.staff_hourly_cost
        staff_cost = self.staff_s / 3600 * self.staff_hourly_cost if self.staff_s is not None else None
        return {
            "source": self.source,
            "conversations": n,
            "escalated": self.escalated,
            "deflected": self.deflected,
            "deflection_rate": round(self.deflected / n, 6) if n else None,
            "resolved": self.resolved,
            "cost_per_conversation": money(cost / n) if cost is not None and n else None,
            "cost_per_resolved_conversation": money(cost / self.resolved)
            if cost is not None and self.resolved
            else None,
            "tickets_handled": self.tickets_handled,
            "staff_s": float(self.staff_s) if self.staff_s is not None else None,
            "staff_cost": money(staff_cost) if staff_cost is not None else None,
            "staff_minutes_per_ticket": float(self.minutes_per_ticket),
            "staff_minutes_source": self.minutes_source,
            "staff_hourly_cost": money(self.staff_hourly_cost),
            "staff_cost_avoided": money(avoided),
            "net_saving": money(avoided - cost) if cost is not None else None,
            **_ratings(self.feedback),
        }


def _ratings(feedback: Feedback | None) -> dict[str, Any]:
    """The outcome's rating figures (flat: they print in the report's table too)."""
    f = feedback.as_dict() if feedback is not None else {}
    keys = ("answers_rated", "answer_helpful_rate", "resolutions_rated", "resolution_rating_mean")
    return {k: f.get(k, 0 if k.endswith("rated") else None) for k in keys}


class ConversationFacts(Protocol):
    """What reports need about conversations and tickets, answered by the stores that own those tables (the
    bot package; ui wires them in: bot.outcomes.ConversationOutcomes). `usage` imports nothing from `bot`."""

    def outcome_counts(self, since: str, until: str, human_routed: set[str]) -> tuple[int, int, int] | None:
        """(conversations started in [since, until), escalated, resolved), or None without conversations."""
        ...

    def staff_intervals(self, since: str, until: str) -> list[tuple[str, str, str]]:
        """(ticket id, event kind, at) of claimed/unclaimed/resolved events of tickets handled in the period."""
        ...


def outcomes(
    db_path: Target,
    since: datetime,
    until: datetime,
    assumptions: Assumptions | None = None,
    facts: ConversationFacts | None = None,
) -> Outcomes | None:
    """Deflection, resolution and staff time for conversations started in [since, until).

    With `facts` the conversations and tickets are counted by their owners (the human-routed conversations come
    from the ledger's conversation rollup); without, from the ledger alone (`ledger_outcome_counts`: a
    conversation starts with its first request and is escalated when any of its requests went to a person).
    Neither reads raw ledger rows of closed days."""
    a = assumptions or Assumptions()
    db = connect(db_path, readonly=True)
    try:
        if not has_table(db, "requests"):
            return None
        params = [iso(since), iso(until)]
        counts = None
        if facts is not None:
            counts = facts.outcome_counts(iso(since), iso(until), human_routed(db, since))
        source = "conversations"
        if counts is None:
            n, escalated = ledger_outcome_counts(db, since, until)
            counts, source = (n, escalated, n - escalated), "ledger"
        rated = summarize_feedback(db, since, until)
    finally:
        db.close()
    handled, staff_s = _staff_time(facts.staff_intervals(*params), since, until) if facts else (None, None)
    minutes, minutes_source = a.staff_minutes_per_ticket, "assumed"
    if handled and staff_s is not None and handled >= a.min_measured_tickets:
        minutes, minutes_source = staff_s / handled / 60, "measured"
    return Outcomes(
        source,
        int(counts[0]),
        int(counts[1]),
        int(counts[2]),
        handled,
        staff_s,
        minutes,
        minutes_source,
        a.staff_hourly_cost,
        feedback=rated,
    )


def human_routed(db: DB, since: datetime) -> set[str]:
    """Conversations whose first request started on `since`'s day or later and that had a request routed to a
    person (at any time): from the ledger's conversation rollup, an index range (raw rows on a ledger without
    it: a read-only copy never migrated)."""
    if has_table(db, "ledger_conversations"):
        sql = "SELECT conversation_id FROM ledger_conversations WHERE human = 1 AND first_day >= ?"
        return {r[0] for r in db.execute(sql, [since.strftime("%Y-%m-%d")]).fetchall()}
    sql = f"SELECT DISTINCT conversation_id FROM requests WHERE route = 'human' AND {_finished(db)} AND started_at >= ?"
    return {r[0] for r in db.execute(sql, [iso(since)]).fetchall()}


def ledger_outcome_counts(db: DB, since: datetime, until: datetime) -> tuple[int, int]:
    """(conversations, escalated) of the conversations whose first finished request started in [since, until),
    counted from the ledger alone: escalated when any of its finished requests was routed to a person (then or
    later). Closed days come from the ledger's daily conversation rollup; only the rest of the period (today,
    and the parts of days at its edges) from raw rows, as the report's sums do."""
    closed = _whole_days_before_today(since, until) if has_table(db, "conversations_daily") else None
    if closed is None:
        return raw_outcome_counts(db, since, until)
    lo, hi = closed
    n, escalated = db.execute(
        "SELECT coalesce(sum(conversations), 0), coalesce(sum(escalated), 0) FROM conversations_daily "
        "WHERE day >= ? AND day < ?",
        [lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d")],
    ).fetchone()
    n, escalated = int(n), int(escalated)
    for a, b in ((since, lo), (hi, until)):
        if a < b:
            more = raw_outcome_counts(db, a, b)
            n, escalated = n + more[0], escalated + more[1]
    return n, escalated


def raw_outcome_counts(db: DB, since: datetime, until: datetime) -> tuple[int, int]:
    """`ledger_outcome_counts` from the raw rows alone: the conversations with a finished request in the period,
    then all finished requests of those (by the conversation index, 500 ids at a time): those whose first one
    started in the period count. A fine-tuning run is no conversation."""
    rows = f"{_finished(db)} AND route <> 'training'"
    sql = f"SELECT DISTINCT conversation_id FROM requests WHERE {rows} AND started_at >= ? AND started_at < ?"
    ids = [r[0] for r in db.execute(sql, [iso(since), iso(until)]).fetchall()]
    sql = (
        f"SELECT min(started_at), max(CASE WHEN route = 'human' THEN 1 ELSE 0 END) FROM requests WHERE {rows} "
        "AND conversation_id IN ({ids}) GROUP BY conversation_id"
    )
    lo, hi = iso(since), iso(until)
    firsts = [(first, int(h)) for cur in each_in(db, sql, ids) for first, h in cur.fetchall()]
    inside = [h for first, h in firsts if lo <= first < hi]
    return len(inside), sum(inside)


def _staff_time(events: list[tuple[str, str, str]], since: datetime, until: datetime) -> tuple[int, Decimal]:
    """Tickets handled and staff seconds: claimed -> resolved/unclaimed intervals ending in the period."""
    total, tickets = Decimal(0), set()
    claimed: dict[str, datetime] = {}
    for ticket_id, kind, at in events:
        when = _parse_any(at)
        if kind == "claimed":
            claimed.setdefault(ticket_id, when)
        elif ticket_id in claimed:
            began = claimed.pop(ticket_id)
            if since <= when < until:
                total += max(Decimal(0), duration_s(when - began))
                tickets.add(ticket_id)
    return len(tickets), total


def _parse_any(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- benchmark ----------------------------------------------------------------------------------------
_COLUMNS = (
    "request_id", "conversation_id", "route", "status", "model_id", "device", "started_at", "finished_at",
    "queue_wait_s", "prefill_s", "decode_s", "compute_s", "latency_s", "prompt_tokens", "completion_tokens",
    "cached_tokens", "cost_micros", "profile", "profile_version", "currency", "owner",
)  # fmt: skip
_MODELS = (("SmolLM2-135M-Instruct.Q4_1", "CPU"), ("qwen2.5-7b-instruct-q4_k_m", "CUDA"))


def synthetic_ledger(
    path: Target,
    n: int,
    *,
    days: int = 365,
    seed: int = 7,
    start: datetime | None = None,
    with_conversations: bool = False,
) -> int:
    """Fill a new ledger database with `n` finished, plausible requests over `days` days; returns n.

    Four requests per conversation; with `with_conversations` (and a `conversations` table) the
    conversations are written too. For benchmarks: `firstline cost benchmark --rows 1000000`.
    """
    Ledger(path, heartbeat=False).close()
    rng = random.Random(seed)
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    step = days * 86400 / max(1, n)
    conversations: list[tuple[str, str, str]] = []

    def rows() -> Any:
        for i in range(n):
            began = start + timedelta(seconds=i * step + rng.random() * step)
            route = rng.choices(("model", "faq", "human"), (70, 25, 5))[0]
            model_id, device = _MODELS[i % 7 == 0] if route == "model" else ("", "")
            prefill = rng.uniform(0.05, 0.6) if route == "model" else 0.0
            decode = rng.lognormvariate(0.8, 0.5) if route == "model" else 0.0
            wait = rng.expovariate(8.0)
            took = wait + prefill + decode + 0.005
            status = "completed" if rng.random() > 0.01 else "error"
            conversation = f"conv{i // 4:08d}"
            if i % 4 == 0:
                conversations.append((conversation, iso(began), "human" if rng.random() < 0.15 else "bot"))
            yield (
                f"syn{i:09d}", conversation, route, status, model_id, device, iso(began),
                iso(began + timedelta(seconds=took)), wait, prefill, decode, prefill + decode, took,
                rng.randint(80, 900), int(decode * 60), 0, CloudPerSecond().request_cost_micros(prefill + decode),
                "cloud-gpu-per-second", 1, "EUR", "synthetic",
            )  # fmt: skip

    db = connect(path)
    try:
        columns = ", ".join(_COLUMNS)
        if db.dialect == "sqlite":
            db.execute("BEGIN IMMEDIATE")
            db.conn.executemany(f"INSERT INTO requests ({columns}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows())
        else:  # COPY: the bulk path of PostgreSQL, into monthly partitions made for the period first
            with db.conn.transaction():
                ensure_partitions(db, start, start + timedelta(days=days))
            with db.conn.transaction(), db.conn.cursor().copy(f"COPY requests ({columns}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        if with_conversations and has_table(db, "conversations"):
            if db.dialect == "sqlite":
                db.conn.executemany(
                    "INSERT INTO conversations (id, created_at, updated_at, lang, status) "
                    "VALUES (?, ?, ?, 'en', ?) ON CONFLICT DO NOTHING",
                    ((c, at, at, status) for c, at, status in conversations),
                )
            else:
                db.executemany(
                    "INSERT INTO conversations (id, created_at, updated_at, lang, status) "
                    "VALUES (?, ?, ?, 'en', ?) ON CONFLICT DO NOTHING",
                    [(c, at, at, status) for c, at, status in conversations],
                )
        if db.dialect == "sqlite":  # bulk-loaded rows bypassed Ledger.finish: count their conversations
            rebuild_conversation_rollup(db)
            db.execute("COMMIT")
        else:  # the same, with their daily rollup (and their partitions first)
            with db.conn.transaction():
                rebuild_rollup(db)
    finally:
        db.close()
    return n


def benchmark(
    path: Target, profile: Profile, groupings: tuple[str, ...] = ("day", "route", "month")
) -> dict[str, float]:
    """Seconds each report grouping takes over the database at `path` (a benchmark, not a test)."""
    timings: dict[str, float] = {}
    for by in groupings:
        t0 = time.perf_counter()
        build_report(path, profile, by=by)
        timings[by] = round(time.perf_counter() - t0, 3)
    return timings


LATENCY_EDGES = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)


def latency_labels() -> list[str]:
    """The latency histogram's bucket names, in order."""
    labels = [f"< {LATENCY_EDGES[0]} s"]
    labels += [f"{lo}-{hi} s" for lo, hi in zip(LATENCY_EDGES, LATENCY_EDGES[1:], strict=False)]
    return [*labels, f">= {LATENCY_EDGES[-1]} s"]


def latency_histogram(db_path: Target, since: datetime, until: datetime) -> list[tuple[str, int]]:
    """Finished requests per latency bucket in [since, until): one scan, no sorting."""
    labels = latency_labels()
    path = db_path
    if not exists(path):
        return [(label, 0) for label in labels]
    db = connect(path, readonly=True)
    try:
        if not has_table(db, "requests"):
            return [(label, 0) for label in labels]
        counts = ", ".join(
            f"coalesce(sum(CASE WHEN latency_s < {edge} THEN 1 ELSE 0 END), 0)" for edge in LATENCY_EDGES
        )
        cumulative = db.execute(
            f"SELECT {counts}, count(latency_s) FROM requests "
            f"WHERE {_finished(db)} AND started_at >= ? AND started_at < ?",
            [iso(since), iso(until)],
        ).fetchone()
    finally:
        db.close()
    values = [int(v) for v in cumulative]
    return [(label, values[0] if i == 0 else values[i] - values[i - 1]) for i, label in enumerate(labels)]
