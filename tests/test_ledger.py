"""The compute ledger: started/finished rows, cost, interrupted recovery, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import db_execute, db_rows, open_db, store_target

from usage.errors import LedgerError
from usage.ledger import Ledger, Measurement, iso, utcnow
from usage.pricing import DEFAULT_PROFILE, CloudPerSecond, from_micros, to_micros

pytestmark = pytest.mark.stores


def test_start_then_finish_writes_one_row_with_cost(data_dir: Path) -> None:
    ledger = Ledger(store_target(data_dir), heartbeat=False)
    rid = ledger.start(conversation_id="c1", route="model", model_id="m", device="CPU")
    row = ledger.get(rid)
    assert row is not None and row["status"] == "started" and row["finished_at"] is None
    m = Measurement(queue_wait_s=0.01, prefill_s=0.5, decode_s=2.5, prompt_tokens=100, completion_tokens=160)
    done = ledger.finish(rid, measurement=m)
    assert done["status"] == "completed"
    assert done["compute_s"] == pytest.approx(3.0)
    # 3 s x 0.0373 + 0.0001 = 0.1120 EUR
    assert done["cost_micros"] == 112_000
    assert done["profile"] == "cloud-gpu-per-second" and done["currency"] == "EUR"
    assert done["started_at"].endswith("Z") and done["finished_at"] >= done["started_at"]
    assert done["prompt_tokens"] == 100 and done["completion_tokens"] == 160
    ledger.close()


def test_finish_twice_or_unknown_is_refused(data_dir: Path) -> None:
    ledger = Ledger(store_target(data_dir), heartbeat=False)
    rid = ledger.start(conversation_id="c1", route="faq")
    ledger.finish(rid)
    with pytest.raises(LedgerError):
        ledger.finish(rid)
    with pytest.raises(LedgerError):
        ledger.finish("nope")
    with pytest.raises(LedgerError):
        ledger.start(conversation_id="c1", route="bogus")
    ledger.close()


def test_track_marks_error_and_keeps_row(data_dir: Path) -> None:
    ledger = Ledger(store_target(data_dir), heartbeat=False)
    with pytest.raises(RuntimeError), ledger.track(conversation_id="c", route="model") as t:
        rid = t.request_id
        raise RuntimeError("boom")
    row = ledger.get(rid)
    assert row is not None and row["status"] == "error" and "boom" in row["error"]
    ledger.close()


def test_track_finishes_a_handled_failure_and_a_closed_generator(data_dir: Path) -> None:
    ledger = Ledger(store_target(data_dir), heartbeat=False)
    with ledger.track(conversation_id="c", route="model") as t:
        t.measurement = Measurement(prefill_s=0.5, decode_s=1.0)
        t.fail("model worker died: SIGSEGV", route="human")
    row = ledger.get(t.request_id)
    assert row is not None and row["error"] == "model worker died: SIGSEGV"
    assert (row["status"], row["route"]) == ("error", "human")
    assert row["compute_s"] == pytest.approx(1.5)

    def streaming() -> Iterator[str]:
        with ledger.track(conversation_id="c", route="model") as h:
            h.measurement = Measurement(decode_s=0.25)
            yield h.request_id
            yield "never reached"

    gen = streaming()
    rid = next(gen)
    gen.close()  # the consumer went away mid-answer
    row = ledger.get(rid)
    assert row is not None and row["status"] == "cancelled" and row["compute_s"] == pytest.approx(0.25)
    ledger.close()


def test_money_is_exact() -> None:
    assert to_micros(Decimal("0.0001")) == 100
    assert from_micros(112_000) == Decimal("0.112")
    profile = CloudPerSecond(price_per_second=Decimal("0.0373"), price_per_request=Decimal("0.0001"))
    # 0.1 + 0.2 style float error must not leak into money
    assert profile.request_cost(0.3) == Decimal("0.01129")  # 0.3 * 0.0373 + 0.0001, exactly
    assert DEFAULT_PROFILE.request_cost(0.0) == Decimal("0.0001")


def test_started_rows_of_dead_process_are_marked_interrupted(data_dir: Path) -> None:
    db_path = store_target(data_dir)
    ledger = Ledger(db_path, heartbeat=False)
    ledger.close()
    # Simulate a process that crashed mid-request: its instance row has a dead pid and a heartbeat
    # 1.5 s after the request started.
    dead_pid = 2**22 + 12345  # above pid_max on Linux by default
    from datetime import timedelta

    started = utcnow() - timedelta(seconds=10)

    beat = started + timedelta(seconds=1.5)
    db_execute(
        db_path,
        "INSERT INTO instances (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        ["ghost", os.uname().nodename, dead_pid, iso(started), iso(beat)],
    )
    db_execute(
        db_path,
        "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
        "VALUES ('r1', 'c', 'model', 'started', ?, 'ghost')",
        [iso(started)],
    )
    ledger2 = Ledger(db_path, heartbeat=False)
    assert ledger2.recovered == 1
    row = ledger2.get("r1")
    assert row is not None and row["status"] == "interrupted"
    assert row["latency_s"] == pytest.approx(1.5, abs=0.01)
    assert row["finished_at"] is not None
    ledger2.close()


def test_live_process_rows_are_not_interrupted(data_dir: Path) -> None:
    db_path = store_target(data_dir)
    a = Ledger(db_path)
    rid = a.start(conversation_id="c", route="model")
    b = Ledger(db_path, heartbeat=False)  # a second process-like opener
    assert b.recovered == 0
    assert b.get(rid)["status"] == "started"  # type: ignore[index]
    a.finish(rid)
    a.close()
    b.close()


def test_concurrent_threads_lose_no_rows(data_dir: Path) -> None:
    ledger = Ledger(store_target(data_dir), heartbeat=False)
    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(40):
            rid = ledger.start(conversation_id=f"c{n}", route="model")
            ledger.finish(rid, measurement=Measurement(prefill_s=0.001 * i, decode_s=0.01))
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = ledger.rows()
    assert len(rows) == 320 == len(set(ids))
    assert {r["request_id"] for r in rows} == set(ids)
    assert all(r["status"] == "completed" for r in rows)
    ledger.close()


def _process_writer(db_path: str, n: int, count: int) -> None:
    ledger = Ledger(db_path, heartbeat=False)
    for _ in range(count):
        rid = ledger.start(conversation_id=f"p{n}", route="model")
        ledger.finish(rid, measurement=Measurement(decode_s=0.02))
    ledger.close()


def test_concurrent_processes_lose_no_rows(data_dir: Path, store_kind: str) -> None:
    db_path = str(store_target(data_dir))
    Ledger(db_path, heartbeat=False).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(db_path, n, 50)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert db_rows(db_path, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(200, 200)]
    assert db_rows(db_path, "SELECT count(*) FROM requests WHERE status != 'completed'") == [(0,)]
    if store_kind == "sqlite":
        assert db_rows(db_path, "PRAGMA integrity_check") == [("ok",)]
        assert db_rows(db_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_postgres_daily_rollup_follows_every_finished_row(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: the rollup that reports read for closed days is what the raw rows add up to, row by row."""
    from datetime import timedelta

    from usage import reports
    from usage.ledger import rebuild_rollup

    db_path = store_target(data_dir)
    ledger = Ledger(db_path, heartbeat=False)
    for i in range(30):
        rid = ledger.start(conversation_id=f"c{i % 4}", route=("model", "faq", "human")[i % 3], model_id="m")
        status = ("completed", "error", "cancelled")[i % 3]
        ledger.finish(rid, status=status, measurement=Measurement(prefill_s=0.01 * i, decode_s=0.1 + i / 7))
    ledger.close()
    dead = utcnow() - timedelta(seconds=90)  # a crashed process's request, recovered at the next start
    db_execute(db_path, "INSERT INTO instances (owner, host, pid, started_at, heartbeat_at) VALUES "
               "('gone', 'elsewhere', 1, ?, ?)", [iso(dead), iso(dead + timedelta(seconds=2))])  # fmt: skip
    db_execute(db_path, "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
               "VALUES ('r-gone', 'c', 'model', 'started', ?, 'gone')", [iso(dead)])  # fmt: skip
    Ledger(db_path, heartbeat=False).close()
    sums = "SELECT day, route, status, sum(requests), sum(compute_micros), sum(cost_micros), sum(prompt_tokens) " \
           "FROM requests_daily GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"  # fmt: skip
    maintained = db_rows(db_path, sums)
    assert sum(r[3] for r in maintained) == 31
    db = open_db(db_path)
    try:
        rebuild_rollup(db)  # from the raw rows
    finally:
        db.close()
    rebuilt = db_rows(db_path, sums)
    assert [r[:5] + r[6:] for r in maintained] == [r[:5] + r[6:] for r in rebuilt]
    # costs: the maintained rollup priced the interrupted row under the recovering ledger's profile, as reports do
    assert sum(r[5] for r in maintained) == reports.build_report(db_path, DEFAULT_PROFILE).totals.cost_micros
    # a report whose days are all closed reads the rollup and agrees with one over the raw rows
    tomorrow = utcnow() + timedelta(days=1)
    monkeypatch.setattr(reports, "utcnow", lambda: tomorrow)
    for by in ("day", "month", "route", "model", "device"):
        via_rollup = reports.build_report(db_path, DEFAULT_PROFILE, by=by, now=tomorrow)
        monkeypatch.setattr(reports, "_closed_days", lambda *a: None)
        raw = reports.build_report(db_path, DEFAULT_PROFILE, by=by, now=tomorrow)
        monkeypatch.undo()
        monkeypatch.setattr(reports, "utcnow", lambda: tomorrow)
        assert [(r.key, r.requests, r.compute_micros, r.cost_micros) for r in via_rollup.rows] == [
            (r.key, r.requests, r.compute_micros, r.cost_micros) for r in raw.rows
        ]


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_postgres_ledger_rows_land_in_monthly_partitions(data_dir: Path) -> None:
    """PostgreSQL: each ledger process creates this month's and the next two months' partitions; rows of a
    month land in that month's partition, anything outside them in the default partition."""
    db_path = store_target(data_dir)
    ledger = Ledger(db_path, heartbeat=False)
    rid = ledger.start(conversation_id="c", route="model")
    ledger.finish(rid)
    ledger.close()
    now = utcnow()
    children = "SELECT relname FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid WHERE i.inhparent = ?::regclass"
    partitions = {r[0] for r in db_rows(db_path, children, ["requests"])}
    assert f"requests_y{now:%Y}m{now:%m}" in partitions and "requests_default" in partitions
    assert len(partitions) == 4
    [(where,)] = db_rows(db_path, "SELECT tableoid::regclass::text FROM requests WHERE request_id = ?", [rid])
    assert where.endswith(f"requests_y{now:%Y}m{now:%m}")
    db_execute(db_path, "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
               "VALUES ('old', 'c', 'model', 'completed', '2001-01-01T00:00:00.000000Z', 'x')")  # fmt: skip
    [(where,)] = db_rows(db_path, "SELECT tableoid::regclass::text FROM requests WHERE request_id = 'old'")
    assert where.endswith("requests_default")


def test_billing_counts_read_only_the_provisional_and_estimated_rows(data_dir: Path, store_kind: str) -> None:
    """The report's note on provisional / estimated requests counts them through partial indexes that hold
    only those rows (a report over many closed days used to count every row of the period for it)."""
    from datetime import timedelta

    from usage.db import connect
    from usage.sharing import billing_counts

    target = store_target(data_dir)
    ledger = Ledger(target, heartbeat=False)
    ids = [ledger.start(conversation_id=f"c{i}", route="model") for i in range(6)]
    for rid in ids:
        ledger.finish(rid, measurement=Measurement(prefill_s=0.1, decode_s=0.2))
    ledger.close()
    billing = ["provisional", "provisional", "final", "final", "measured", "measured"]
    for rid, how, estimated in zip(ids, billing, [1, 0, 0, 1, 1, 0], strict=True):
        db_execute(target, "UPDATE requests SET billing = ?, estimated = ? WHERE request_id = ?", [how, estimated, rid])
    since, until = iso(utcnow() - timedelta(days=1)), iso(utcnow() + timedelta(days=1))
    db = connect(target)
    try:
        assert billing_counts(db, since, until) == {"provisional": 2, "estimated": 3}
        assert billing_counts(db, until, iso(utcnow() + timedelta(days=2))) == {"provisional": 0, "estimated": 0}
        if store_kind == "postgresql":  # the planner can answer both counts from the partial indexes alone
            db.execute("SET enable_seqscan = off")
            for where, predicate in (("billing = 'provisional'", "provisional"), ("estimated = 1", "estimated = 1")):
                # the partitions' copies of a partial index get generated names: find them by their predicate
                partial = {r[0] for r in db.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexdef LIKE ?",
                    [f"%WHERE%{predicate}%"]).fetchall()}  # fmt: skip
                plan = " ".join(r[0] for r in db.execute(
                    f"EXPLAIN SELECT count(*) FROM requests WHERE {where} AND started_at >= ? AND started_at < ?",
                    [since, until]).fetchall())  # fmt: skip
                assert partial and any(f" {name} " in f"{plan} " for name in partial), (plan, partial)
        else:
            for where in ("billing = 'provisional'", "estimated = 1"):
                plan = " ".join(str(r[-1]) for r in db.execute(
                    f"EXPLAIN QUERY PLAN SELECT count(*) FROM requests WHERE {where} AND started_at >= ? "
                    "AND started_at < ?", [since, until]).fetchall())  # fmt: skip
                # an index that holds only those rows (the partial ones, or #16's index on billing), never a
                # walk over the period's rows by started_at
                assert plan.startswith("SEARCH") and "idx_requests_started_at" not in plan, plan
    finally:
        db.close()
