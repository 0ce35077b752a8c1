"""Provisioned time: when a model was loaded, so idle time and per-instance-hour billing can be priced.

`ProvisioningRecorder` is the `on_event(kind, at, seconds)` callback of `models.ondemand.OnDemandModel`
(the model layer does not import `usage`). It keeps one `provisioned` row per loaded period, opened at
`load_start` and closed at `unload`, and one `load` row per load (how long loading took). Loading counts
as provisioned: a cloud bills the instance from the moment it starts.

A row left open by a process that died is closed at that process's last heartbeat in the ledger's
`instances` table (pass the ledger's `owner` to the recorder). Reports read the table read-only and
treat open rows the same way, so a crash never inflates provisioned time. When no provisioning has ever
been recorded (a process that loads its model at start-up and keeps it), the lifetimes of the processes
in `instances` stand in for provisioned time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.db import DB, Store, Target
from usage.ledger import STALE_AFTER_S, iso, parse_iso, utcnow
from usage.pricing import duration_s

log = logging.getLogger(__name__)

migrations = Migrations("firstline.provisioning")
EVENT_KINDS = ("load_start", "load_end", "load_failed", "unload")


@migrations()
def m001_provisioning(db: Database) -> None:
    db.table("provisioning").create(
        {
            "id": int,
            "owner": str,
            "kind": str,  # 'provisioned' (load start -> unload) or 'load' (load start -> load end)
            "model_id": str,
            "device": str,
            "start": str,
            "end": str,
            "seconds": float,
        },
        pk="id",
        not_null={"owner", "kind", "start"},
    )
    db.table("provisioning").create_index(["kind", "start"])
    db.table("provisioning").create_index(["end"])


@dataclass(frozen=True)
class Provisioned:
    """Provisioned seconds within a period and where the figure came from."""

    seconds: Decimal
    source: str  # 'provisioning', 'instances' or 'none'
    intervals: int


class ProvisioningRecorder(Store):
    """Records an on-demand model's load/unload events; use the instance as the `on_event` callback."""

    def __init__(self, path: Target, *, owner: str | None = None, model_id: str = "", device: str = "") -> None:
        super().__init__(path, migrations)
        self.owner = owner or f"provisioning:{uuid.uuid4().hex[:12]}"
        self.model_id, self.device = model_id, device
        self._open_id: int | None = None
        self._mutex = threading.Lock()
        self.recover()

    def __call__(self, kind: str, at: datetime, seconds: float) -> None:
        """Record one lifecycle event (never raises: accounting must not break answering)."""
        try:
            self.record(kind, at, seconds)
        except Exception:
            log.exception("could not record provisioning event %s", kind)

    def record(self, kind: str, at: datetime, seconds: float) -> None:
        """Record one lifecycle event: load_start, load_end, load_failed or unload."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown provisioning event {kind!r}; expected one of {EVENT_KINDS}")
        with self._mutex, self.write() as db:
            if kind == "load_start":
                self._close_open(db, at)
                row = {"owner": self.owner, "kind": "provisioned", "start": iso(at), **self._labels()}
                self._open_id = int(db.table("provisioning").insert(row).last_pk)  # type: ignore[arg-type]
            elif kind == "load_end":
                start = at - timedelta(seconds=seconds)
                db.table("provisioning").insert(
                    {
                        "owner": self.owner,
                        "kind": "load",
                        "start": iso(start),
                        "end": iso(at),
                        "seconds": seconds,
                    }
                    | self._labels()
                )
            else:  # unload or load_failed: the model is gone
                self._close_open(db, at)

    def close(self) -> None:
        """Close the open provisioned period (the process is stopping) and release the store."""
        with self._mutex, self.write() as db:
            self._close_open(db, utcnow())
        super().close()

    def recover(self) -> int:
        """Close provisioned periods left open by processes that are gone; returns the count."""
        now = utcnow()
        with self.write() as db:
            owners = _instances(db)
            rows = list(
                db.query(
                    "SELECT id, owner, start FROM provisioning "
                    "WHERE kind = 'provisioned' AND \"end\" IS NULL AND owner != ?",
                    [self.owner],
                )
            )
            closed = 0
            for row in rows:
                end = _open_end(row, owners, now, treat_unknown_as_dead=False)
                if end is None:  # alive, or an owner we cannot judge
                    continue
                start = parse_iso(row["start"])
                db.execute(
                    'UPDATE provisioning SET "end" = ?, seconds = ? WHERE id = ?',
                    [iso(end), max(0.0, (end - start).total_seconds()), row["id"]],
                )
                closed += 1
        if closed:
            log.warning("closed %d provisioned periods of processes that ended", closed)
        return closed

    def _close_open(self, db: DB, at: datetime) -> None:
        if self._open_id is None:
            return
        rows = list(db.query("SELECT start FROM provisioning WHERE id = ?", [self._open_id]))
        if rows:
            seconds = max(0.0, (at - parse_iso(rows[0]["start"])).total_seconds())
            db.execute(
                'UPDATE provisioning SET "end" = ?, seconds = ? WHERE id = ? AND "end" IS NULL',
                [iso(at), seconds, self._open_id],
            )
        self._open_id = None

    def _labels(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "device": self.device}


def has_table(db: DB, name: str) -> bool:
    """Does the database hold this table (reports degrade gracefully when a feature never ran)?"""
    return bool(db.table(name).exists())


def provisioned_seconds(db: DB, since: datetime, until: datetime, now: datetime | None = None) -> Provisioned:
    """Seconds a model was provisioned within [since, until), clipped to the period."""
    now = now or utcnow()
    until = min(until, now)
    if until <= since:
        return Provisioned(Decimal(0), "none", 0)
    owners = _instances(db) if has_table(db, "instances") else {}
    if has_table(db, "provisioning") and list(db.query("SELECT 1 FROM provisioning LIMIT 1")):
        rows = list(
            db.query(
                "SELECT owner, start, \"end\" FROM provisioning WHERE kind = 'provisioned' AND start < ? "
                'AND ("end" IS NULL OR "end" > ?)',
                [iso(until), iso(since)],
            )
        )
        intervals = [(parse_iso(r["start"]), _end_of(r, owners, now)) for r in rows]
        return Provisioned(_clipped_total(intervals, since, until), "provisioning", len(intervals))
    if owners:
        intervals = []
        for owner, inst in owners.items():
            start = parse_iso(inst["started_at"])
            end = _end_of({"owner": owner, "start": inst["started_at"], "end": inst.get("stopped_at")}, owners, now)
            if start < until and end > since:
                intervals.append((start, end))
        return Provisioned(_clipped_total(intervals, since, until), "instances", len(intervals))
    return Provisioned(Decimal(0), "none", 0)


def current_state(db: DB, now: datetime | None = None) -> dict[str, Any] | None:
    """The most recent provisioned period that is still open (a model loaded right now), if any."""
    if not has_table(db, "provisioning"):
        return None
    now = now or utcnow()
    owners = _instances(db) if has_table(db, "instances") else {}
    rows = list(
        db.query(
            "SELECT owner, model_id, device, start FROM provisioning WHERE kind = 'provisioned' AND \"end\" IS NULL "
            "ORDER BY start DESC"
        )
    )
    for row in rows:
        if _open_end(row, owners, now, treat_unknown_as_dead=False) is None:
            return {"model_id": row["model_id"], "device": row["device"], "loaded_since": row["start"]}
    return None


def _instances(db: DB) -> dict[str, dict[str, Any]]:
    return {r["owner"]: r for r in db.query("SELECT * FROM instances")}


def _open_end(
    row: dict[str, Any], owners: dict[str, dict[str, Any]], now: datetime, *, treat_unknown_as_dead: bool
) -> datetime | None:
    """When an open period ended: None while its owner is alive, else the owner's last sign of life."""
    inst = owners.get(row["owner"])
    if inst is None:
        return parse_iso(row["start"]) if treat_unknown_as_dead else None
    if inst.get("stopped_at"):
        return parse_iso(inst["stopped_at"])
    last = parse_iso(inst["heartbeat_at"])
    if (now - last).total_seconds() < STALE_AFTER_S:
        return None
    return last


def _end_of(row: dict[str, Any], owners: dict[str, dict[str, Any]], now: datetime) -> datetime:
    if row.get("end"):
        return parse_iso(row["end"])
    if row["owner"] not in owners:  # a recorder without a ledger owner: trust it is still running
        return now
    return _open_end(row, owners, now, treat_unknown_as_dead=True) or now


def _clipped_total(intervals: list[tuple[datetime, datetime]], since: datetime, until: datetime) -> Decimal:
    total = Decimal(0)
    for start, end in intervals:
        lo, hi = max(start, since), min(end, until)
        if hi > lo:
            total += duration_s(hi - lo)
    return total


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
