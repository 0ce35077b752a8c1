"""The append-only compute ledger: one row per model call (and per FAQ / human-routed request).

A row is written as `started` before the work and finished after it (`completed`, `error` or `cancelled`)
with the measured seconds, token counts, device and the cost under the active pricing profile. Every
process that writes registers itself in `instances` and refreshes a heartbeat; at start-up, `started`
rows whose owner process is gone are marked `interrupted`, with the time they ran before their owner's
last sign of life. Nothing is silently lost: a crash leaves a row that the next start accounts for.

On PostgreSQL (the shared store of several processes and hosts) the ledger is built for size: `requests` is
partitioned by month of `started_at` (partitions are created ahead by every ledger process; rows outside them
land in a default partition), and `requests_daily` is a rollup per UTC day, route, status, model, device,
pricing profile and writer shard, maintained in the same transaction as each finished row, so reports read
closed days from the rollup, never their raw rows (usage/reports.py). Each process writes its own shard of the
rollup, so processes finishing requests at the same moment do not wait for each other's row locks. A row is
written once and finished by one update (measured against an append-only start/finish pair in
`firstline bench`; docs/postgresql.md). On SQLite the rollup table exists but stays empty: reports read the
raw rows there.

The conversation outcomes (`ledger_conversations`, `conversations_daily`: conversations per day of their first
request, and how many of them were routed to a person) are maintained with each finished row on both databases,
in the same statement (PostgreSQL's one-statement finish) or transaction.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage import sharing
from usage.db import Store, Target
from usage.errors import LedgerError
from usage.pricing import DEFAULT_PROFILE, PricingProfile, micro_seconds, to_micros

log = logging.getLogger(__name__)

FINAL_STATUSES = ("completed", "error", "cancelled")
# faq / model / human: how a customer message was handled; training: compute spent fine-tuning a model
# (`firstline tune`), priced with the same profiles and reported as its own route
ROUTES = ("faq", "model", "human", "training")
HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0

migrations = Migrations("firstline.usage")


LEDGER_COLUMNS: dict[str, type] = {
    "request_id": str,
    "conversation_id": str,
    "route": str,
    "status": str,
    "model_id": str,
    "device": str,
    "started_at": str,
    "finished_at": str,
    "queue_wait_s": float,
    "prefill_s": float,
    "decode_s": float,
    "compute_s": float,
    "latency_s": float,
    "prompt_tokens": int,
    "completion_tokens": int,
    "cached_tokens": int,
    "cost_micros": int,
    "profile": str,
    "profile_version": int,
    "currency": str,
    "error": str,
    "owner": str,
}


@migrations()
def m001_ledger(db: Any) -> None:  # a SqliteDatabase or a PgDatabase
    not_null = {"conversation_id", "route", "status", "started_at", "owner"}
    if getattr(db, "dialect", "sqlite") == "postgresql":
        # partitioned by month: the key must be part of the primary key there
        db.table("requests").create(LEDGER_COLUMNS, pk=("request_id", "started_at"), not_null=not_null,
                                    partition_by="RANGE (started_at)")  # fmt: skip
        db.execute("CREATE TABLE requests_default PARTITION OF requests DEFAULT")
    else:
        db.table("requests").create(LEDGER_COLUMNS, pk="request_id", not_null=not_null)
    db.table("requests").create_index(["started_at"])
    db.table("requests").create_index(["conversation_id"])
    db.table("requests").create_index(["status"])
    db.table("instances").create(
        {"owner": str, "host": str, "pid": int, "started_at": str, "heartbeat_at": str, "stopped_at": str},
        pk="owner",
    )


@migrations()
def m002_retrieval_seconds(db: Database) -> None:
    # compute spent outside the model (retrieval, FAQ matching, routing); part of compute_s
    db.table("requests").add_column("retrieval_s", float)


@migrations()
def m003_reason(db: Database) -> None:
    # why the request went the way it did (e.g. "kb_answer", "faq_match", "guard_extractive:ungrounded"),
    # so operators can count how often the grounding guard replaced a model answer
    db.table("requests").add_column("reason", str)


@migrations()
def m005_engine_billing(db: Database) -> None:
    # served engines (issue #16): the replica and active interval of each request, the engine's raw
    # per-request timings (never summed: they overlap under batching), whether the engine reported nothing,
    # and how compute_s was billed (usage.sharing): measured | provisional | final
    table = db.table("requests")
    for name, kind in (
        ("engine", str), ("replica", str), ("sent_at", float), ("first_token_at", float), ("ended_at", float),
        ("engine_prompt_n", int), ("engine_prompt_ms", float), ("engine_predicted_n", int),
        ("engine_predicted_ms", float), ("engine_cache_n", int), ("estimated", int), ("billing", str),
    ):  # fmt: skip
        table.add_column(name, kind)
    table.create_index(["billing"])
    table.create_index(["replica", "sent_at"])


@migrations()
def m006_training_seconds(db: Database) -> None:
    # compute spent fine-tuning (route `training`): training steps, held-out loss and answers; part of compute_s.
    # (Named m004_training_seconds on the #13 branch before it was rebased after m005; a database that ran that
    # one already has the column, so it is only added when missing: forward-only, no rename of history.)
    table = db.table("requests")
    if "training_s" not in table.columns_dict:
        table.add_column("training_s", float)


ROLLUP_KEY = ("day", "route", "status", "model_id", "device", "profile", "profile_version", "shard")
ROLLUP_SUMS = ("requests", "compute_micros", "cost_micros", "prefill_s", "decode_s", "retrieval_s",
               "prompt_tokens", "completion_tokens")  # fmt: skip
ROLLUP_SHARDS = 16


@migrations()
def m007_daily_rollup(db: Database) -> None:
    columns: dict[str, type] = {k: str for k in ROLLUP_KEY} | {"profile_version": int, "shard": int}
    columns |= {k: int for k in ROLLUP_SUMS} | {"prefill_s": float, "decode_s": float, "retrieval_s": float}
    db.table("requests_daily").create(columns, pk=ROLLUP_KEY, not_null=set(columns))
    if getattr(db, "dialect", "sqlite") == "postgresql":
        rebuild_rollup(db)  # rows written before this migration


@migrations()
def m008_billing_indexes(db: Database) -> None:
    # the report's note on provisional and estimated requests (usage.sharing.billing_counts) counts only those
    # rows through these partial indexes: work in proportion to them, not to the period's rows (on
    # PostgreSQL the index is created on every monthly partition)
    db.execute("CREATE INDEX requests_provisional ON requests (started_at) WHERE billing = 'provisional'")
    db.execute("CREATE INDEX requests_estimated ON requests (started_at) WHERE estimated = 1")


# The conversation outcomes of reports (deflection, staff time avoided, cost per resolved conversation) per day.
# A conversation belongs to the day of its first finished request (fine-tuning runs are no conversations) and is
# escalated once any of its finished requests was routed to a human, whenever that happens; `ledger_conversations`
# holds each conversation's day and flag, `conversations_daily` the counts per day (and writer shard, as above).
# Both are maintained with each finished row, on SQLite and PostgreSQL, so a report counts closed days from
# `conversations_daily` and only the rest of its period from raw rows (usage/reports.py).
_CONVERSATION_UPSERT = (
    "ON CONFLICT (conversation_id) DO UPDATE SET prev_day = ledger_conversations.first_day, "
    "prev_human = ledger_conversations.human, "
    "first_day = CASE WHEN EXCLUDED.first_day < ledger_conversations.first_day THEN EXCLUDED.first_day "
    "ELSE ledger_conversations.first_day END, "
    "human = CASE WHEN EXCLUDED.human > ledger_conversations.human THEN EXCLUDED.human "
    "ELSE ledger_conversations.human END "
    "WHERE EXCLUDED.first_day < ledger_conversations.first_day OR EXCLUDED.human > ledger_conversations.human "
    # prev_* keep what the row said before this change (NULL: the row is new); the upsert locks the row, so two
    # processes finishing requests of one conversation at once each see the other's change
    "RETURNING first_day, human, prev_day, prev_human"
)
_CONVERSATIONS_DAILY_ADD = (
    "ON CONFLICT (day, shard) DO UPDATE SET conversations = conversations_daily.conversations + "
    "EXCLUDED.conversations, escalated = conversations_daily.escalated + EXCLUDED.escalated"
)
OUTCOME_STATUSES = FINAL_STATUSES + ("interrupted",)


@migrations()
def m009_conversation_rollup(db: Database) -> None:
    conversations = db.table("ledger_conversations")
    conversations.create(
        {"conversation_id": str, "first_day": str, "human": int, "prev_day": str, "prev_human": int},
        pk="conversation_id",
        not_null={"first_day", "human"},
    )
    conversations.create_index(["human", "first_day"])  # the human-routed conversations of a period
    columns = {"day": str, "shard": int, "conversations": int, "escalated": int}
    db.table("conversations_daily").create(columns, pk=("day", "shard"), not_null=set(columns))
    rebuild_conversation_rollup(db)  # rows written before this migration


def rebuild_conversation_rollup(db: Any) -> None:
    """Recompute `ledger_conversations` and `conversations_daily` from the raw rows (the migration's backfill;
    a repair and bulk-load tool: the ledger maintains both row by row)."""
    db.execute("DELETE FROM conversations_daily")
    db.execute("DELETE FROM ledger_conversations")
    db.execute(
        "INSERT INTO ledger_conversations (conversation_id, first_day, human) SELECT conversation_id, "
        "substr(min(started_at), 1, 10), max(CASE WHEN route = 'human' THEN 1 ELSE 0 END) FROM requests "
        f"WHERE status IN {OUTCOME_STATUSES} AND route <> 'training' GROUP BY conversation_id"
    )
    db.execute(
        "INSERT INTO conversations_daily (day, shard, conversations, escalated) "
        "SELECT first_day, 0, count(*), sum(human) FROM ledger_conversations GROUP BY first_day"
    )


def _add_conversations_daily(db: Any, deltas: dict[str, list[int]], shard: int) -> None:
    for day, (n, escalated) in deltas.items():
        if n or escalated:
            db.execute(
                "INSERT INTO conversations_daily (day, shard, conversations, escalated) VALUES (?, ?, ?, ?) "
                + _CONVERSATIONS_DAILY_ADD,
                [day, shard, n, escalated],
            )


def _roll_conversation(db: Any, conversation_id: str, day: str, human: int, shard: int) -> None:
    """A finished request of `conversation_id` started on `day` (human: routed to a person): its conversation
    now starts no later than `day` and is escalated if `human`; the daily counts move with it."""
    changed = db.execute(
        "INSERT INTO ledger_conversations (conversation_id, first_day, human) VALUES (?, ?, ?) " + _CONVERSATION_UPSERT,
        [conversation_id, day, human],
    ).fetchall()
    deltas: dict[str, list[int]] = {}
    for first_day, now_human, prev_day, prev_human in changed:
        if prev_day is not None:  # it moved (an earlier request finished later) or became escalated
            d = deltas.setdefault(prev_day, [0, 0])
            d[0], d[1] = d[0] - 1, d[1] - int(prev_human)
        d = deltas.setdefault(first_day, [0, 0])
        d[0], d[1] = d[0] + 1, d[1] + int(now_human)
    _add_conversations_daily(db, deltas, shard)


def _roll_finished_conversation(db: Any, row: dict[str, Any], shard: int) -> None:
    """`_roll_conversation` for a finished ledger row (a fine-tuning run is no conversation)."""
    if row["route"] != "training":
        _roll_conversation(db, row["conversation_id"], row["started_at"][:10], int(row["route"] == "human"), shard)


def _finish_conversation_ctes(shard: int) -> str:
    """PostgreSQL: `_roll_finished_conversation` as CTEs over `f` (the finished row) for `_finish_and_roll_sql`."""
    return (
        "c AS (INSERT INTO ledger_conversations (conversation_id, first_day, human) SELECT conversation_id, "
        "substr(started_at, 1, 10), CASE WHEN route = 'human' THEN 1 ELSE 0 END FROM f WHERE route <> 'training' "
        f"{_CONVERSATION_UPSERT}), "
        "d AS (INSERT INTO conversations_daily (day, shard, conversations, escalated) "
        f"SELECT day, {int(shard)}, sum(n), sum(h) FROM (SELECT first_day AS day, 1 AS n, human AS h FROM c "
        "UNION ALL SELECT prev_day, -1, -prev_human FROM c WHERE prev_day IS NOT NULL) AS x GROUP BY day "
        f"{_CONVERSATIONS_DAILY_ADD})"
    )


def rollup_select(where: str = "1=1") -> str:
    """SQL that aggregates finished raw rows into rollup rows (all in one shard: 0)."""
    micro = "greatest(0, floor(coalesce(compute_s, latency_s, 0) * 1000000 + 0.5)::bigint)"
    return (
        # a row without a stored cost (interrupted before it was priced) counts under no profile: reports
        # price it from its seconds like any row recorded under another profile
        "SELECT substr(started_at, 1, 10), route, status, coalesce(model_id, ''), coalesce(device, ''), "
        "CASE WHEN cost_micros IS NULL THEN '' ELSE coalesce(profile, '') END, "
        "CASE WHEN cost_micros IS NULL THEN 0 ELSE coalesce(profile_version, 0) END, 0, count(*), "
        f"sum({micro}), sum(coalesce(cost_micros, 0)), sum(coalesce(prefill_s, 0)), sum(coalesce(decode_s, 0)), "
        "sum(coalesce(retrieval_s, 0)), sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)) "
        f"FROM requests WHERE status IN {FINAL_STATUSES + ('interrupted',)} AND {where} "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )


def rebuild_rollup(db: Any, since_day: str | None = None, until_day: str | None = None) -> None:
    """Recompute the rollup of [since_day, until_day) from the raw rows (PostgreSQL; a repair and bulk-load
    tool: the ledger maintains it row by row)."""
    lo, hi = since_day or "0000", until_day or "9999"
    db.execute("DELETE FROM requests_daily WHERE day >= ? AND day < ?", [lo, hi])
    db.execute(
        f"INSERT INTO requests_daily ({', '.join(ROLLUP_KEY + ROLLUP_SUMS)}) "
        + rollup_select("started_at >= ? AND started_at < ?"),
        [lo, hi],
    )
    if since_day is None and until_day is None and db.table("conversations_daily").exists():
        rebuild_conversation_rollup(db)  # a conversation spans days: only a whole rebuild recounts them


def _rollup_key(row: dict[str, Any], shard: int) -> list[Any]:
    return [row["started_at"][:10], row["route"], row["status"], row["model_id"] or "", row["device"] or "",
            row["profile"] or "", row["profile_version"] or 0, shard]  # fmt: skip


_ROLLUP_ADD = f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET " + ", ".join(
    f"{k} = requests_daily.{k} + EXCLUDED.{k}" for k in ROLLUP_SUMS
)


def _add_to_rollup(db: Any, key: list[Any], sums: list[Any]) -> None:
    """Add `sums` (ROLLUP_SUMS' order) to the rollup row of `key` (ROLLUP_KEY's order), creating it."""
    values = [*key, *sums]
    db.execute(
        f"INSERT INTO requests_daily ({', '.join(ROLLUP_KEY + ROLLUP_SUMS)}) VALUES "
        f"({', '.join('?' for _ in values)}) {_ROLLUP_ADD}",
        values,
    )


def _finish_and_roll_sql(sets: str, shard: int) -> str:
    """PostgreSQL: one statement that finishes a started row (`sets`, then the request id as its last
    parameter), adds it to the rollup as `_roll` does, and returns the row: atomic by itself, so it needs no
    transaction and costs one round trip."""
    key = ("substr(started_at, 1, 10), route, status, coalesce(model_id, ''), coalesce(device, ''), "
           f"coalesce(profile, ''), coalesce(profile_version, 0), {int(shard)}")  # fmt: skip
    seconds = "coalesce(compute_s, latency_s)"
    sums = (f"1, CASE WHEN {seconds} > 0 THEN floor({seconds} * 1000000 + 0.5)::bigint ELSE 0 END, cost_micros, "
            "coalesce(prefill_s, 0), coalesce(decode_s, 0), coalesce(retrieval_s, 0), coalesce(prompt_tokens, 0), "
            "coalesce(completion_tokens, 0)")  # fmt: skip
    return (
        f"WITH f AS (UPDATE requests SET {sets} WHERE request_id = ? AND status = 'started' RETURNING *), "
        f"r AS (INSERT INTO requests_daily ({', '.join(ROLLUP_KEY + ROLLUP_SUMS)}) SELECT {key}, {sums} FROM f "
        f"{_ROLLUP_ADD}), {_finish_conversation_ctes(shard)} SELECT * FROM f"
    )


def _roll(db: Any, row: dict[str, Any], shard: int, cost_micros: int | None = None, sign: int = 1) -> None:
    """Add one finished row to the rollup (same transaction as the row's update); sign -1 takes it out."""
    sums = [
        1,
        micro_seconds(row["compute_s"] if row["compute_s"] is not None else row["latency_s"]),
        row["cost_micros"] if cost_micros is None else cost_micros,
        row["prefill_s"] or 0.0, row["decode_s"] or 0.0, row.get("retrieval_s") or 0.0,
        row["prompt_tokens"] or 0, row["completion_tokens"] or 0,
    ]  # fmt: skip
    _add_to_rollup(db, _rollup_key(row, shard), [sign * v for v in sums])


def _rebill_rollup(db: Any, old: dict[str, Any], new: dict[str, Any], shard: int) -> None:
    """sharing.bill changed a finished row's compute_s / cost_micros (and perhaps its profile): the rollup
    moves by the difference, so it keeps agreeing with the raw rows (same transaction as the update)."""
    if _rollup_key(old, shard) != _rollup_key(new, shard):  # priced under another profile now: move the row
        _roll(db, old, shard, sign=-1)
        _roll(db, new, shard)
        return

    def micros(row: dict[str, Any]) -> int:
        return micro_seconds(row["compute_s"] if row["compute_s"] is not None else row["latency_s"])

    compute, cost = micros(new) - micros(old), (new["cost_micros"] or 0) - (old["cost_micros"] or 0)
    if compute or cost:  # only the two billed sums change: no float drift in the others
        _add_to_rollup(db, _rollup_key(new, shard), [0, compute, cost, 0.0, 0.0, 0.0, 0, 0])


def ensure_partitions(db: Any, first: datetime, last: datetime) -> list[str]:
    """Monthly partitions of `requests` covering [first, last] (PostgreSQL); returns the ones created."""
    created = []
    month = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    db.lock("requests-partitions")
    while month <= last:
        following = (month + timedelta(days=32)).replace(day=1)
        name = f"requests_y{month:%Y}m{month:%m}"
        if not db.table(name).exists():
            db.execute(
                f"CREATE TABLE {name} PARTITION OF requests FOR VALUES FROM ('{month:%Y-%m}') TO ('{following:%Y-%m}')"
            )
            created.append(name)
        month = following
    return created


_RETURNING_NAMES = ("started_at", "route", "status", "model_id", "device", "compute_s", "latency_s", "cost_micros",
                   "profile", "profile_version", "prefill_s", "decode_s", "retrieval_s", "prompt_tokens",
                   "completion_tokens")  # fmt: skip
_RETURNING = (
    " RETURNING started_at, route, status, model_id, device, compute_s, latency_s, cost_micros, profile, "
    "profile_version, prefill_s, decode_s, retrieval_s, prompt_tokens, completion_tokens"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """UTC timestamp as ISO 8601 with microseconds and a Z suffix (sorts as text)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Measurement:
    """What the caller measured for one request (the ledger does not import the model layer)."""

    queue_wait_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    retrieval_s: float = 0.0  # retrieval, FAQ matching and routing: compute outside the model
    training_s: float = 0.0  # fine-tuning a model (route `training`)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model_id: str = ""
    device: str = ""
    # Served engines (issue #16; models.types.Usage documents each field): which engine and replica
    # computed the request, its active interval on that replica's timeline (Unix epoch seconds, as firstline
    # saw it), the engine's raw per-request timings (overlapping under batching: never summed as compute),
    # and whether the engine reported nothing (a failed or cancelled request: firstline's clock only).
    engine: str = ""
    replica: str = ""
    sent_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    estimated: bool = False
    engine_prompt_n: int | None = None
    engine_prompt_ms: float | None = None
    engine_predicted_n: int | None = None
    engine_predicted_ms: float | None = None
    engine_cache_n: int | None = None

    @property
    def compute_s(self) -> float:
        """Compute as measured: model prefill and decode plus retrieval/routing work (plus training, for a tune).
        A request on a shared replica is billed its processor-sharing share instead (Ledger.finish, usage.sharing)."""
        return self.retrieval_s + self.prefill_s + self.decode_s + self.training_s

    @property
    def shared(self) -> bool:
        """Did it compute on a served engine's replica, next to other requests (billed by processor sharing)?"""
        return bool(self.replica) and not self.replica.startswith("inprocess:") and self.sent_at is not None


class Ledger(Store):
    """Append-only request ledger over the shared SQLite database."""

    def __init__(
        self, path: Target, profile: PricingProfile = DEFAULT_PROFILE, *, heartbeat: bool = True, register: bool = True
    ) -> None:
        """`register=False`: a maintenance opener (housekeeping) that writes no requests: no instance row, no
        recovery, no heartbeat."""
        super().__init__(path, migrations)
        self.profile = profile
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._started_mono: dict[str, float] = {}
        # called with each finished row (e.g. Prometheus counters); a failing listener is logged, never raised
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._registered = register
        self.shard = zlib.crc32(self.owner.encode()) % ROLLUP_SHARDS
        self._partitions_checked = 0.0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.recovered = 0
        if not register:
            return
        self.ensure_partitions()
        now = iso(utcnow())
        with self.write() as db:
            db.table("instances").insert(
                {
                    "owner": self.owner,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": now,
                    "heartbeat_at": now,
                    "stopped_at": None,
                }
            )
        self.recovered = self.recover_interrupted()
        if heartbeat:
            self._beat = threading.Thread(target=self._heartbeat_loop, name="ledger-heartbeat", daemon=True)
            self._beat.start()

    # -- writing -----------------------------------------------------------------------------------
    def start(
        self,
        *,
        conversation_id: str,
        route: str,
        model_id: str = "",
        device: str = "",
        request_id: str | None = None,
    ) -> str:
        """Write a `started` row before the work begins; returns the request id."""
        if route not in ROUTES:
            raise LedgerError(f"unknown route {route!r}; expected one of {ROUTES}")
        rid = request_id or uuid.uuid4().hex
        with self.statement() as db:  # one INSERT: on PostgreSQL one round trip, no BEGIN / COMMIT
            db.table("requests").insert(
                {
                    "request_id": rid,
                    "conversation_id": conversation_id,
                    "route": route,
                    "status": "started",
                    "model_id": model_id,
                    "device": device,
                    "started_at": iso(utcnow()),
                    "owner": self.owner,
                }
            )
        self._started_mono[rid] = time.monotonic()
        return rid

    def finish(
        self,
        request_id: str,
        *,
        status: str = "completed",
        measurement: Measurement | None = None,
        route: str | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Finish a started row with its measurement and cost; returns the stored row."""
        if status not in FINAL_STATUSES:
            raise LedgerError(f"unknown final status {status!r}; expected one of {FINAL_STATUSES}")
        m = measurement or Measurement()
        began = self._started_mono.pop(request_id, None)
        latency = time.monotonic() - began if began is not None else None
        cost = self.profile.request_cost(m.compute_s)
        values: dict[str, Any] = {
            "status": status,
            "finished_at": iso(utcnow()),
            "queue_wait_s": m.queue_wait_s,
            "prefill_s": m.prefill_s,
            "decode_s": m.decode_s,
            "retrieval_s": m.retrieval_s,
            "training_s": m.training_s,
            "compute_s": m.compute_s,
            "latency_s": latency,
            "prompt_tokens": m.prompt_tokens,
            "completion_tokens": m.completion_tokens,
            "cached_tokens": m.cached_tokens,
            "cost_micros": to_micros(cost),
            "profile": self.profile.name,
            "profile_version": self.profile.version,
            "currency": self.profile.currency,
            "error": error,
        }
        if reason is not None:
            values["reason"] = reason[:200]
        values |= sharing.engine_columns(m)
        if m.model_id:
            values["model_id"] = m.model_id
        if m.device:
            values["device"] = m.device
        if route is not None:
            if route not in ROUTES:
                raise LedgerError(f"unknown route {route!r}")
            values["route"] = route
        sets = ", ".join(f'"{k}" = ?' for k in values)
        if self.postgres and not m.shared:  # the common case: one statement, one round trip
            with self.statement() as db:
                cur = db.execute(_finish_and_roll_sql(sets, self.shard), [*values.values(), request_id])
                found, names = cur.fetchone(), [d.name for d in cur.description]
            if found is None:
                raise LedgerError(f"request {request_id} is unknown or already finished")
            return self._finished(dict(zip(names, found, strict=True)))
        with self.write() as db:
            # the finished row comes back with the update (both databases): no second look, across partitions
            # on PostgreSQL, for the rollups or the caller
            sql = f"UPDATE requests SET {sets} WHERE request_id = ? AND status = 'started' RETURNING *"
            cur = db.execute(sql, [*values.values(), request_id])
            found = cur.fetchall()
            if len(found) != 1:
                raise LedgerError(f"request {request_id} is unknown or already finished")
            row = dict(zip([d[0] for d in cur.description], found[0], strict=True))
            if self.postgres:  # the daily sums rollup (on SQLite reports read the raw rows)
                _roll(db, row, self.shard)
            _roll_finished_conversation(db, row, self.shard)
            finished: dict[str, Any] | None = row
            if m.shared:  # its share of the replica's time, and the shares that this row's end made final
                sharing.bill(db, m.replica, self.profile, on_rebill=self._rebill_hook(db))
                finished = None  # re-billed: read back below
        return self._finished(finished if finished is not None else self.get(request_id) or {})

    def _finished(self, row: dict[str, Any]) -> dict[str, Any]:
        for listener in self.listeners:  # after the commit
            try:
                listener(row)
            except Exception:  # metrics must never fail a request
                log.exception("ledger listener failed")
        return row

    @contextmanager
    def track(self, *, conversation_id: str, route: str, **kwargs: Any) -> Iterator[Tracked]:
        """Start a row, yield a handle to fill in, finish it: `error` (with the exception) if the block raised,
        `cancelled` if a generator holding it was closed, else the handle's status, route, measurement and error.

        The row is finished when the block ends, so a caller that streams must leave the block before it hands
        out its final result (a consumer that stops after the result would otherwise cancel a finished request).
        """
        handle = Tracked(self.start(conversation_id=conversation_id, route=route, **kwargs), route)
        try:
            yield handle
        except GeneratorExit:
            self.finish(handle.request_id, status="cancelled", measurement=handle.measurement, route=handle.route,
                        reason=handle.reason)  # fmt: skip
            raise
        except BaseException as exc:
            self.finish(
                handle.request_id,
                status="error",
                measurement=handle.measurement,
                route=handle.route,
                error=f"{type(exc).__name__}: {exc}"[:500],
                reason=handle.reason,
            )
            raise
        else:
            self.finish(
                handle.request_id,
                status=handle.status,
                measurement=handle.measurement,
                route=handle.route,
                error=handle.error[:500] if handle.error else None,
                reason=handle.reason,
            )

    # -- recovery and liveness ---------------------------------------------------------------------
    def recover_interrupted(self) -> int:
        """Mark `started` rows of dead processes `interrupted`, with the time they ran; returns the count."""
        host = socket.gethostname()
        now = utcnow()
        count = 0
        with self.write() as db:
            owners = {r["owner"]: r for r in db.table("instances").rows}
            rows = list(db.query("SELECT request_id, conversation_id, route, started_at, owner FROM requests "
                                 "WHERE status = 'started'"))  # fmt: skip
            for row in rows:
                inst = owners.get(row["owner"])
                if row["owner"] == self.owner or (inst and _alive(inst, host, now)):
                    continue
                last_seen = parse_iso(inst["heartbeat_at"]) if inst else parse_iso(row["started_at"])
                spent = max(0.0, (min(last_seen, now) - parse_iso(row["started_at"])).total_seconds())
                cur = db.execute(
                    "UPDATE requests SET status = 'interrupted', finished_at = ?, latency_s = ?, "
                    "error = 'process ended during the request' WHERE request_id = ? AND status = 'started'"
                    + (_RETURNING if self.postgres else ""),
                    [iso(now), spent, row["request_id"]],
                )
                count += cur.rowcount  # another process recovering at the same moment: counted once
                if self.postgres and cur.rowcount == 1:
                    rolled = dict(zip(_RETURNING_NAMES, cur.fetchone(), strict=True))
                    # an interrupted row counts with the time it ran, priced under this process's profile
                    rolled |= {"profile": self.profile.name, "profile_version": self.profile.version}
                    _roll(db, rolled, self.shard, to_micros(self.profile.request_cost(spent)))
                if cur.rowcount == 1:
                    _roll_finished_conversation(db, row, self.shard)
        if count:
            log.warning("marked %d ledger rows interrupted (their process ended mid-request)", count)
        return count

    def _rebill_hook(self, db: Any) -> Any:
        """PostgreSQL: what sharing.bill calls for each row it re-bills (the daily rollup follows); None on SQLite."""
        if not self.postgres:
            return None
        return lambda old, new: _rebill_rollup(db, old, new, self.shard)

    def settle(self) -> int:
        """Bill the provisional rows of every replica again, making final those whose window has closed (every
        heartbeat; finishing a shared row does it for its replica); returns the rows made final."""
        with self.read() as db:
            replicas = [r[0] for r in db.execute("SELECT DISTINCT replica FROM requests WHERE billing = 'provisional'")]
        if not replicas:
            return 0
        with self.write() as db:
            return sum(sharing.bill(db, replica, self.profile, on_rebill=self._rebill_hook(db)) for replica in replicas)

    def ensure_partitions(self) -> None:
        """PostgreSQL: monthly partitions for this month and the next two (checked at most hourly)."""
        if not self.postgres or time.monotonic() - self._partitions_checked < 3600 and self._partitions_checked:
            return
        now = utcnow()
        try:
            with self.write() as db:
                created = ensure_partitions(db, now, now + timedelta(days=62))
            if created:
                log.info("ledger partitions created: %s", ", ".join(created))
        except Exception as exc:  # rows already in the default partition for that month: it keeps them
            log.warning("could not create ledger partitions (%s); new rows go to the default partition", exc)
        self._partitions_checked = time.monotonic()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.ensure_partitions()
            try:
                self.settle()
            except Exception:  # billing catches up on the next beat
                log.exception("settling processor-sharing bills failed")
            try:
                with self.write() as db:
                    db.execute("UPDATE instances SET heartbeat_at = ? WHERE owner = ?", [iso(utcnow()), self.owner])
            except Exception:  # a failed heartbeat must not kill the process
                log.exception("ledger heartbeat failed")

    def close(self) -> None:
        """Stop the heartbeat and record a clean shutdown."""
        self._stop.set()
        if self._beat:
            self._beat.join(timeout=5)
        if not self._registered:
            super().close()
            return
        try:
            now = iso(utcnow())
            with self.write() as db:
                db.execute(
                    "UPDATE instances SET heartbeat_at = ?, stopped_at = ? WHERE owner = ?",
                    [now, now, self.owner],
                )
        finally:
            super().close()

    def conversation_totals(self, conversation_id: str) -> tuple[float, int, int, str]:
        """Compute seconds, cost (micro-units), row count and model id of one conversation's requests."""
        with self.read() as db:
            compute, cost, rows, model_id = db.execute(
                "SELECT coalesce(sum(compute_s), 0), coalesce(sum(cost_micros), 0), count(*), "
                "coalesce(max(nullif(model_id, '')), '') FROM requests WHERE conversation_id = ?",
                [conversation_id],
            ).fetchone()
        return float(compute), int(cost), int(rows), str(model_id)

    # -- retention (bot/housekeeping.py) ---------------------------------------------------------
    def conversations_before(self, cutoff: str, *, skip_prefix: str) -> list[str]:
        """Conversation ids of rows started before `cutoff` (those starting with `skip_prefix` left out, and
        fine-tuning runs: their row names a model version, not a customer)."""
        with self.read() as db:
            sql = (
                "SELECT DISTINCT conversation_id FROM requests WHERE started_at < ? AND conversation_id NOT LIKE ?"
                " AND route <> 'training'"
            )
            return [r[0] for r in db.execute(sql, [cutoff, skip_prefix.replace("%", "") + "%"]).fetchall()]

    def rename_conversations(self, aliases: dict[str, str], *, dry_run: bool = False) -> int:
        """Replace conversation ids by aliases (pseudonyms) on every row; returns the rows (to be) changed."""
        count = 0
        with self.write() as db:
            for old, new in aliases.items():
                if dry_run:
                    sql = "SELECT count(*) FROM requests WHERE conversation_id = ?"
                    count += int(db.execute(sql, [old]).fetchone()[0])
                else:
                    sql = "UPDATE requests SET conversation_id = ? WHERE conversation_id = ?"
                    count += db.execute(sql, [new, old]).rowcount
                    _rename_conversation(db, old, new, self.shard)
        return count

    # -- reading -----------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests this process started and has not finished yet."""
        return len(self._started_mono)

    def get(self, request_id: str) -> dict[str, Any] | None:
        """One ledger row as a dict, or None."""
        with self.read() as db:
            rows = list(db.query("SELECT * FROM requests WHERE request_id = ?", [request_id]))
        return rows[0] if rows else None

    def rows(self, where: str = "1=1", params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Ledger rows matching a SQL condition, oldest first."""
        with self.read() as db:
            return list(db.query(f"SELECT * FROM requests WHERE {where} ORDER BY started_at", params or []))


@dataclass
class Tracked:
    """What `Ledger.track` finishes its row with; the block fills it in."""

    request_id: str
    route: str
    status: str = "completed"
    measurement: Measurement | None = None
    error: str | None = None
    reason: str | None = None  # why the request took its route (the reply's reason)

    def fail(self, error: str, *, route: str | None = None) -> None:
        """Finish the row as `error` with this cause (the block handled the failure itself)."""
        self.status, self.error = "error", error
        if route is not None:
            self.route = route

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rename_conversation(db: Any, old: str, new: str, shard: int) -> None:
    """The conversation rollup follows a renamed conversation (merged into `new` if that one exists too)."""
    found = db.execute("SELECT first_day, human FROM ledger_conversations WHERE conversation_id = ?", [old]).fetchone()
    if found is None:
        return
    first_day, human = found[0], int(found[1])
    db.execute("DELETE FROM ledger_conversations WHERE conversation_id = ?", [old])
    _add_conversations_daily(db, {first_day: [-1, -human]}, shard)
    _roll_conversation(db, new, first_day, human, shard)


def _alive(instance: dict[str, Any], host: str, now: datetime) -> bool:
    """Is the process that owns these rows still running?"""
    if instance.get("stopped_at"):
        return False
    if instance["host"] == host:
        try:
            os.kill(int(instance["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if not _same_process(int(instance["pid"]), parse_iso(instance["started_at"])):
            return False
        # the pid exists, but it may have been reused: trust a fresh heartbeat only
    return (now - parse_iso(instance["heartbeat_at"])).total_seconds() < STALE_AFTER_S


def _same_process(pid: int, registered_at: datetime) -> bool:
    """False when the process now holding `pid` cannot be the one that registered at `registered_at`:
    it is a zombie (killed, not yet reaped), or it started later (the pid was reused, e.g. by a container
    restarted within seconds, whose server gets the same pid). True when this cannot be told (no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    if fields[0] in ("Z", "X"):
        return False
    return started <= registered_at.timestamp() + 2.0  # btime has whole seconds
