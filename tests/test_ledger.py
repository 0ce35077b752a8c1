"""The compute ledger: started/finished rows, cost, interrupted recovery, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from usage.errors import LedgerError
from usage.ledger import Ledger, Measurement, iso, utcnow
from usage.pricing import DEFAULT_PROFILE, CloudPerSecond, from_micros, to_micros


def test_start_then_finish_writes_one_row_with_cost(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
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
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
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
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    with pytest.raises(RuntimeError), ledger.track(conversation_id="c", route="model") as t:
        rid = t.request_id
        raise RuntimeError("boom")
    row = ledger.get(rid)
    assert row is not None and row["status"] == "error" and "boom" in row["error"]
    ledger.close()


def test_track_finishes_a_handled_failure_and_a_closed_generator(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
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
    db_path = data_dir / "firstline.db"
    ledger = Ledger(db_path, heartbeat=False)
    ledger.close()
    # Simulate a process that crashed mid-request: its instance row has a dead pid and a heartbeat
    # 1.5 s after the request started.
    conn = sqlite3.connect(db_path)
    dead_pid = 2**22 + 12345  # above pid_max on Linux by default
    from datetime import timedelta

    started = utcnow() - timedelta(seconds=10)

    beat = started + timedelta(seconds=1.5)
    conn.execute(
        "INSERT INTO instances (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        ["ghost", os.uname().nodename, dead_pid, iso(started), iso(beat)],
    )
    conn.execute(
        "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
        "VALUES ('r1', 'c', 'model', 'started', ?, 'ghost')",
        [iso(started)],
    )
    conn.commit()
    conn.close()
    ledger2 = Ledger(db_path, heartbeat=False)
    assert ledger2.recovered == 1
    row = ledger2.get("r1")
    assert row is not None and row["status"] == "interrupted"
    assert row["latency_s"] == pytest.approx(1.5, abs=0.01)
    assert row["finished_at"] is not None
    ledger2.close()


def test_live_process_rows_are_not_interrupted(data_dir: Path) -> None:
    db_path = data_dir / "firstline.db"
    a = Ledger(db_path)
    rid = a.start(conversation_id="c", route="model")
    b = Ledger(db_path, heartbeat=False)  # a second process-like opener
    assert b.recovered == 0
    assert b.get(rid)["status"] == "started"  # type: ignore[index]
    a.finish(rid)
    a.close()
    b.close()


def test_concurrent_threads_lose_no_rows(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
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


def test_concurrent_processes_lose_no_rows(data_dir: Path) -> None:
    db_path = str(data_dir / "firstline.db")
    Ledger(db_path, heartbeat=False).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(db_path, n, 50)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchone() == (200, 200)
    assert conn.execute("SELECT count(*) FROM requests WHERE status != 'completed'").fetchone() == (0,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
