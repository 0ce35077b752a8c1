"""The conversation outcomes of reports (deflection, staff time avoided, cost per resolved conversation) from the
ledger's daily conversation rollup: the same figures as the raw rows give, and closed days never read raw rows.

Both run on SQLite and PostgreSQL (`@pytest.mark.stores`)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import db_execute, db_rows, open_db, store_target

from usage import ledger as ledger_module
from usage import reports
from usage.db import connect
from usage.ledger import Ledger, Measurement, iso, rebuild_conversation_rollup, utcnow

pytestmark = pytest.mark.stores

FINISHED = ("completed", "error", "cancelled", "interrupted")


class Clock:
    """The ledger's clock, moved by the test (rows of closed days written through the real Ledger API)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _day(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _reference(target: Path | str, since: datetime, until: datetime) -> tuple[int, int]:
    """(conversations, escalated) recomputed in Python from every raw row: a conversation counts in the period
    of its first finished request, escalated if any finished request of it went to a person."""
    first: dict[str, str] = {}
    human: dict[str, bool] = {}
    for conversation, route, status, started in db_rows(
        target, "SELECT conversation_id, route, status, started_at FROM requests"
    ):
        if status not in FINISHED or route == "training":
            continue
        first[conversation] = min(first.get(conversation, started), started)
        human[conversation] = human.get(conversation, False) or route == "human"
    inside = [c for c, at in first.items() if iso(since) <= at < iso(until)]
    return len(inside), sum(human[c] for c in inside)


def _write_history(target: Path | str, monkeypatch: pytest.MonkeyPatch, seed: int) -> datetime:
    """Five closed days and part of today through the Ledger's own writes, in time order: conversations that
    span midnight, escalations days after their first request, a request that started first but finished after
    a later one (across midnight), routes changed on finish, shared-replica requests re-billed by later ones,
    fine-tuning runs, requests of a crashed process recovered as interrupted, and renamed (merged) conversations.
    Returns the start of today (UTC)."""
    rng, today = random.Random(seed), _day(utcnow())
    clock = Clock(today - timedelta(days=5))
    monkeypatch.setattr(ledger_module, "utcnow", clock)
    first_day = today - timedelta(days=5)
    end = min(utcnow() - timedelta(seconds=5), today + timedelta(hours=20))
    events: list[tuple[datetime, int, str, dict[str, Any]]] = []  # (when, order, action, details)
    for c in range(70):
        conversation = f"c{c:03d}"
        began = first_day + timedelta(seconds=rng.uniform(0, (end - first_day).total_seconds() * 0.9))
        if c % 7 == 0:  # just before midnight: it goes on after it
            began = _day(began) + timedelta(hours=23, minutes=rng.uniform(50, 59))
        at = began
        for k in range(rng.randint(1, 5)):
            if at >= end:
                break
            route = rng.choices(("model", "faq", "human"), (70, 25, 5))[0]
            if c % 5 == 0 and k == 2:  # escalated later, often on another day
                at = min(end - timedelta(seconds=1), at + timedelta(hours=rng.uniform(1, 40)))
                route = "human"
            took = timedelta(seconds=rng.uniform(0.5, 30))
            if c % 11 == 3 and k == 0:  # started first, finished after the next request (which may be tomorrow)
                took = timedelta(minutes=25)
            finish_route = "human" if route == "model" and rng.random() < 0.05 else None  # a failed answer handed over
            status = rng.choices(("completed", "error", "cancelled"), (90, 6, 4))[0]
            shared = route == "model" and rng.random() < 0.2
            rid = f"{conversation}-{k}"
            events.append((at, len(events), "start", {"rid": rid, "conversation": conversation, "route": route}))
            events.append((min(at + took, end), len(events), "finish",
                           {"rid": rid, "status": status, "route": finish_route, "shared": shared,
                            "seconds": took.total_seconds()}))  # fmt: skip
            at += timedelta(minutes=rng.uniform(1, 20))
    for t in range(4):  # fine-tuning runs: no conversation
        at = first_day + timedelta(hours=7 + 30 * t)
        run = {"rid": f"tune{t}", "conversation": f"model-v{t}", "route": "training"}
        events.append((at, len(events), "start", run))
        done = {"rid": f"tune{t}", "status": "completed", "route": None, "shared": False, "seconds": 180}
        events.append((at + timedelta(minutes=3), len(events), "finish", done))
    events.sort(key=lambda e: (e[0], e[1]))
    ledger = Ledger(target, heartbeat=False)
    crashed = Ledger(target, heartbeat=False)  # a process that dies mid-request
    try:
        for when, _, action, d in events:
            clock.now = when
            if action == "start":
                owner = crashed if d["conversation"] in ("c004", "c017") else ledger
                owner.start(conversation_id=d["conversation"], route=d["route"], request_id=d["rid"])
            elif d["rid"].split("-")[0] in ("c004", "c017"):
                continue  # never finished: recovered as interrupted below
            else:
                m = Measurement(prefill_s=0.05, decode_s=d["seconds"] / 3, model_id="m", device="CPU")
                if d["shared"]:
                    epoch = when.timestamp()
                    m = Measurement(
                        prefill_s=0.1,
                        decode_s=d["seconds"] - 0.1,
                        engine="llama-server",
                        replica="http://replica-a",
                        sent_at=epoch - d["seconds"],
                        ended_at=epoch,
                    )
                ledger.finish(d["rid"], status=d["status"], measurement=m, route=d["route"])
    finally:
        ledger.close()
    db_execute(target, "UPDATE instances SET heartbeat_at = started_at WHERE owner = ?", [crashed.owner])
    crashed._registered = False  # it died: no clean shutdown
    crashed.close()
    clock.now = end
    Ledger(target, heartbeat=False).close()  # the next start marks the crashed process's rows interrupted
    # housekeeping pseudonymises conversations: one renamed, two merged into one alias
    renamer = Ledger(target, heartbeat=False, register=False)
    try:
        renamer.rename_conversations({"c010": "purged-a", "c020": "purged-b", "c021": "purged-b"})
    finally:
        renamer.close()
    return today


@pytest.mark.parametrize("seed", [17, 29])
def test_rollup_outcomes_equal_the_raw_rows_on_random_histories(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    target = store_target(data_dir)
    today = _write_history(target, monkeypatch, seed)
    assert db_rows(target, "SELECT count(*) FROM requests WHERE status = 'interrupted'")[0][0] >= 2
    assert db_rows(target, "SELECT count(*) FROM requests WHERE billing <> 'measured'")[0][0] >= 3  # re-billed

    periods = [(today - timedelta(days=d), today - timedelta(days=d - 1)) for d in range(5, 0, -1)]  # closed days
    periods += [
        (today - timedelta(days=5), today + timedelta(days=1)),  # everything, today's rows from raw rows
        (today - timedelta(days=5), today),  # closed days only: the rollup alone
        (today - timedelta(days=4, hours=13), today - timedelta(days=1, hours=5)),  # ragged edges
        (today - timedelta(days=2, hours=1), today + timedelta(hours=3)),
        (today, today + timedelta(days=1)),  # the open day
    ]
    db = connect(target, readonly=True)
    try:
        for since, until in periods:
            expected = _reference(target, since, until)
            assert reports.raw_outcome_counts(db, since, until) == expected, (since, until)
            assert reports.ledger_outcome_counts(db, since, until) == expected, (since, until)
            found = reports.outcomes(target, since, until)
            assert found is not None and found.source == "ledger"
            assert (found.conversations, found.escalated, found.resolved) == (*expected, expected[0] - expected[1])
        # the facts path (conversation store present) asks the rollup for the human-routed conversations
        for since in (today - timedelta(days=5), today - timedelta(days=2, hours=7), today):
            raw = {r[0] for r in db.execute(
                "SELECT DISTINCT conversation_id FROM requests WHERE route = 'human' AND status IN "
                f"{FINISHED} AND conversation_id IN (SELECT conversation_id FROM requests WHERE status IN {FINISHED} "
                "AND route <> 'training' GROUP BY conversation_id HAVING min(started_at) >= ?)",
                [iso(_day(since))]).fetchall()}  # fmt: skip
            assert reports.human_routed(db, since) == raw
            assert raw or since == today
    finally:
        db.close()
    total = _reference(target, today - timedelta(days=5), today + timedelta(days=1))
    assert total[0] >= 60 and total[1] >= 5
    # what the ledger maintained row by row is what a rebuild from the raw rows makes
    per_day = "SELECT day, sum(conversations), sum(escalated) FROM conversations_daily GROUP BY day " \
              "HAVING sum(conversations) <> 0 OR sum(escalated) <> 0 ORDER BY day"  # fmt: skip
    flags = "SELECT conversation_id, first_day, human FROM ledger_conversations ORDER BY conversation_id"
    maintained = (db_rows(target, per_day), db_rows(target, flags))
    d = open_db(target)
    try:
        rebuild_conversation_rollup(d)
    finally:
        d.close()
    assert maintained == (db_rows(target, per_day), db_rows(target, flags))
    assert any(r[0] == "purged-b" for r in maintained[1]) and not any(r[0] == "c021" for r in maintained[1])


_RAW_READ = re.compile(r"\bFROM\s+requests\b", re.IGNORECASE)


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the report module's connections run."""
    seen: list[str] = []
    real = reports.connect

    def connect_recording(path: Any, **kwargs: Any) -> Any:
        db = real(path, **kwargs)
        execute = db.execute

        def recorded(sql: str, *args: Any, **kw: Any) -> Any:
            seen.append(sql)
            return execute(sql, *args, **kw)

        db.execute = recorded
        return db

    monkeypatch.setattr(reports, "connect", connect_recording)
    return seen


def test_closed_days_outcomes_never_read_raw_ledger_rows(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deflection of closed days, with and without the conversation store: no statement reads `requests`."""
    from bot.conversation_store import ConversationStore
    from bot.outcomes import ConversationOutcomes

    target = store_target(data_dir)
    today = _day(utcnow())
    clock = Clock(today - timedelta(days=3, hours=-9))
    monkeypatch.setattr(ledger_module, "utcnow", clock)
    ledger = Ledger(target, heartbeat=False)
    try:
        for i in range(12):
            clock.now += timedelta(minutes=7)
            route = "human" if i % 4 == 3 else "model"
            rid = ledger.start(conversation_id=f"k{i // 2}", route=route)
            ledger.finish(rid, measurement=Measurement(prefill_s=0.1, decode_s=0.4))
    finally:
        ledger.close()
    since, until = today - timedelta(days=3), today - timedelta(days=1)
    seen = _recording(monkeypatch)
    found = reports.outcomes(target, since, until)
    assert found is not None and (found.source, found.conversations, found.escalated) == ("ledger", 6, 3)
    assert seen and not [sql for sql in seen if _RAW_READ.search(sql)]

    monkeypatch.setattr("bot.conversation_store.utcnow", clock)
    store = ConversationStore(target)
    clock.now = today - timedelta(days=3, hours=-9)
    for i in range(6):
        store.ensure(f"k{i}")
    store.close()
    facts = ConversationOutcomes.open(target)
    seen.clear()
    try:
        found = reports.outcomes(target, since, until, facts=facts)
    finally:
        facts.close()
    assert found is not None and (found.source, found.conversations, found.escalated) == ("conversations", 6, 3)
    assert not [sql for sql in seen if _RAW_READ.search(sql)]


def test_outcomes_count_a_conversation_on_the_day_it_began(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation across midnight counts once, on its first day; days add up to their sum."""
    target = store_target(data_dir)
    today = _day(utcnow())
    clock = Clock(today - timedelta(days=2, minutes=5))
    monkeypatch.setattr(ledger_module, "utcnow", clock)
    ledger = Ledger(target, heartbeat=False)
    try:
        for minutes, route in ((0, "model"), (10, "model"), (60 * 26, "human")):  # 23:55, 00:05, next day escalated
            clock.now = today - timedelta(days=2, minutes=5) + timedelta(minutes=minutes)
            ledger.finish(ledger.start(conversation_id="night", route=route))
    finally:
        ledger.close()
    days = [reports.outcomes(target, today - timedelta(days=d), today - timedelta(days=d - 1)) for d in (3, 2, 1)]
    assert [(o.conversations, o.escalated) for o in days if o] == [(1, 1), (0, 0), (0, 0)]
    both = reports.outcomes(target, today - timedelta(days=3), today)
    assert both is not None and (both.conversations, both.escalated) == (1, 1)


def test_the_migration_backfills_the_rollup_of_an_existing_ledger(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written before m009_conversation_rollup: the migration counts its conversations from the raw rows."""
    target = store_target(data_dir)
    today = _write_history(target, monkeypatch, 3)
    since, until = today - timedelta(days=5), today
    expected = _reference(target, since, until)
    for sql in ("DROP TABLE conversations_daily", "DROP TABLE ledger_conversations",
                "DELETE FROM _sqlite_migrations WHERE name = 'm009_conversation_rollup'"):  # fmt: skip
        db_execute(target, sql)
    found = reports.outcomes(target, since, until)  # before the migration: the raw rows (a read-only copy)
    assert found is not None and (found.conversations, found.escalated) == expected
    Ledger(target, heartbeat=False).close()  # the next start migrates
    assert db_rows(target, "SELECT count(*) FROM ledger_conversations")[0][0] >= 60
    db = connect(target, readonly=True)
    try:
        assert reports.ledger_outcome_counts(db, since, until) == expected
        assert reports.raw_outcome_counts(db, since, until) == expected
    finally:
        db.close()
