"""The ledger stays exact under batching (issue #16): processor-sharing billing per replica.

Requests that share a served engine's decode steps report overlapping wall-clock times (llama.cpp #9505);
the ledger bills each its share of the replica's busy time instead (usage.sharing): provisional when it
finishes, final once the requests that could overlap it have finished; per replica the billed seconds add up
to the busy time (the invariant, within 1 %). The engine's raw timings are kept in their own columns.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from models.served import ServedChatModel
from models.settings import ModelSettings
from tests.engine_replay import ReplayServer
from tests.test_model_failures import make_bot, rows
from usage.ledger import Ledger, Measurement
from usage.reports import build_report
from usage.sharing import Interval, busy_seconds, shares, windows


# -- the arithmetic ---------------------------------------------------------------------------------------
def test_four_requests_sharing_every_step_each_pay_a_quarter() -> None:
    """llama.cpp #9505: four parallel requests each report ~75 s; the device was busy 75 s, not 300 s."""
    got = shares(Interval(k, 100.0, 175.0) for k in "abcd")
    assert got == pytest.approx({k: 18.75 for k in "abcd"})


def test_each_segment_is_split_equally_among_the_requests_active_in_it() -> None:
    got = shares([Interval("a", 0, 10), Interval("b", 5, 20), Interval("c", 30, 31), Interval("empty", 3, 3)])
    # a: 5 s alone + 5 s shared with b; b: 5 s shared + 10 s alone; c alone; an empty interval pays nothing
    assert got == pytest.approx({"a": 7.5, "b": 12.5, "c": 1.0, "empty": 0.0})
    assert [[i.key for i in w] for w in windows([Interval("a", 0, 10), Interval("c", 30, 31), Interval("b", 5, 20)])] \
        == [["a", "b"], ["c"]]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_shares_add_up_to_the_busy_time_of_every_window(seed: int) -> None:
    rnd = random.Random(seed)
    intervals = []
    for n in range(400):
        start = rnd.uniform(0, 600)
        intervals.append(Interval(n, start, start + rnd.expovariate(1 / 8)))
    got = shares(intervals)
    for window in windows(intervals):
        assert sum(got[i.key] for i in window) == pytest.approx(busy_seconds(window), rel=1e-9)
    naive = sum(i.end - i.start for i in intervals)
    assert naive > 1.5 * busy_seconds(intervals)  # the overlap that summing would bill several times


# -- the ledger ---------------------------------------------------------------------------------------------
def _served(replica: str, sent: float, ended: float, **kw: Any) -> Measurement:
    return Measurement(prefill_s=0.5, decode_s=ended - sent - 0.5, engine="llama-server", replica=replica,
                       sent_at=sent, first_token_at=sent + 0.5, ended_at=ended, engine_prompt_n=40,
                       engine_prompt_ms=480.0, engine_predicted_n=60, engine_predicted_ms=(ended - sent) * 1000,
                       engine_cache_n=3, completion_tokens=60, prompt_tokens=43, **kw)  # fmt: skip


def _row(ledger: Ledger, rid: str) -> dict[str, Any]:
    row = ledger.get(rid)
    assert row is not None
    return row


def test_overlapping_requests_are_provisional_until_their_window_closes_then_final(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        rids = [ledger.start(conversation_id=f"c{i}", route="model") for i in range(4)]
        now = time.time()
        sent, ended = now - 7.999, now + 0.001  # all four ran in the same 8 s on one replica
        ledger.finish(rids[0], measurement=_served("http://gpu-1:8080", sent, ended))
        first = _row(ledger, rids[0])
        assert first["billing"] == "provisional"  # three requests that may overlap it are still running
        assert first["compute_s"] == pytest.approx(8.0)  # alone among the finished ones: all of it, for now
        assert first["engine_predicted_ms"] == pytest.approx(8000.0) and first["engine_cache_n"] == 3  # raw, kept
        assert first["prefill_s"] == pytest.approx(0.5) and first["sent_at"] == pytest.approx(sent)
        ledger.finish(rids[1], measurement=_served("http://gpu-1:8080", sent, ended))
        assert _row(ledger, rids[0])["compute_s"] == pytest.approx(4.0)  # a provisional share only goes down
        time.sleep(0.01)
        other = ledger.start(conversation_id="elsewhere", route="model")  # started after they ended: no overlap
        for rid in rids[2:]:
            ledger.finish(rid, measurement=_served("http://gpu-1:8080", sent, ended))
        billed = [_row(ledger, rid) for rid in rids]
        assert [r["billing"] for r in billed] == ["final"] * 4
        assert [r["compute_s"] for r in billed] == pytest.approx([2.0] * 4)
        assert sum(r["compute_s"] for r in billed) == pytest.approx(8.0, rel=0.01)  # = the replica's busy time
        assert all(r["cost_micros"] > 0 for r in billed)
        assert sum(r["cost_micros"] for r in billed) == pytest.approx(
            4 * ledger.profile.request_cost(2.0) * 1_000_000, abs=4
        )
        ledger.finish(other, measurement=Measurement(prefill_s=1.0, decode_s=2.0, replica="inprocess:h:1",
                                                     sent_at=now, ended_at=now + 3))  # fmt: skip
        assert _row(ledger, other)["billing"] == "measured" and _row(ledger, other)["compute_s"] == pytest.approx(3.0)
    finally:
        ledger.close()


def test_a_request_still_running_keeps_the_window_open_until_the_heartbeat_settles_it(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        running = ledger.start(conversation_id="faq", route="faq")  # may have gone to the same replica
        rid = ledger.start(conversation_id="c", route="model")
        now = time.time()
        ledger.finish(rid, measurement=_served("http://r", now - 2, now, retrieval_s=0.25))
        assert _row(ledger, rid)["billing"] == "provisional"
        assert _row(ledger, rid)["compute_s"] == pytest.approx(2.25)  # its share plus its retrieval
        ledger.finish(running)  # not on a replica: it bills nothing of it, and settles nothing itself
        assert _row(ledger, rid)["billing"] == "provisional"
        report = build_report(data_dir / "firstline.db", ledger.profile, by="day")
        assert any("1 request(s) billed provisionally" in n for n in report.notes)
        assert ledger.settle() == 1  # the heartbeat's job
        assert _row(ledger, rid)["billing"] == "final" and _row(ledger, rid)["compute_s"] == pytest.approx(2.25)
        assert not any("provisionally" in n for n in build_report(data_dir / "firstline.db", ledger.profile).notes)
    finally:
        ledger.close()


def test_replicas_are_separate_timelines(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        now = time.time() - 60
        a = ledger.start(conversation_id="a", route="model")
        b = ledger.start(conversation_id="b", route="model")
        ledger.finish(a, measurement=_served("http://r1", now, now + 10))
        ledger.finish(b, measurement=_served("http://r2", now, now + 10))
        assert [_row(ledger, r)["compute_s"] for r in (a, b)] == pytest.approx([10.0, 10.0])
        assert {_row(ledger, r)["billing"] for r in (a, b)} == {"final"}
    finally:
        ledger.close()


def test_a_cancelled_request_without_engine_timings_is_estimated_never_free(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        rid = ledger.start(conversation_id="c", route="model")
        now = time.time() - 30
        m = Measurement(prefill_s=1.5, decode_s=0.0, engine="llama-server", replica="http://r", sent_at=now,
                        ended_at=now + 1.5, estimated=True)  # fmt: skip
        ledger.finish(rid, status="cancelled", measurement=m)
        row = _row(ledger, rid)
        assert row["estimated"] == 1 and row["engine_predicted_ms"] is None
        assert row["compute_s"] == pytest.approx(1.5) and row["cost_micros"] > 0
        report = build_report(data_dir / "firstline.db", ledger.profile, by="day")
        assert any("1 request(s) estimated" in n for n in report.notes)
    finally:
        ledger.close()


# -- end to end: concurrent answers from an engine that reports overlapping times ----------------------------
def test_concurrent_answers_through_a_served_engine_bill_exactly_the_busy_time(data_dir: Path) -> None:
    """Six customers at once on one replica whose answers overlap (and whose recorded `timings` each count
    the shared time in full): after the last one, every row is final and the bill is the busy time."""
    server = ReplayServer("llama-server").start()
    server.event_delay_s = 0.03
    settings = ModelSettings(engine="openai", engine_urls=server.url, engine_slots=4, engine_health_interval_s=0.2)
    model = ServedChatModel(settings.url_list(), settings)
    bot = make_bot(data_dir, model)
    replies: list[Any] = []
    questions = ["How do I reset my router?", "Where can I see my invoice?", "How do I change my password?",
                 "Why is my internet slow in the evening?", "How do I set up the mesh repeater?",
                 "Can I pause my contract while travelling?"]  # fmt: skip
    try:
        threads = [threading.Thread(target=lambda i=i, q=q: replies.append(bot.handle_message(f"c{i}", q)))
                   for i, q in enumerate(questions)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        model.close()
        bot.ledger.close()
    assert len(replies) == len(questions) and server.max_active >= 2  # answers really overlapped
    table = rows(
        data_dir,
        "SELECT sent_at, ended_at, compute_s, coalesce(retrieval_s, 0), prefill_s + decode_s, billing, "
        "engine_predicted_ms, engine, estimated FROM requests WHERE replica IS NOT NULL",
    )
    assert len(table) >= len(questions)  # the answers (and any decision the bot asked the model for)
    assert {r[5] for r in table} == {"final"} and {r[7] for r in table} == {"llama-server"}
    assert all(r[6] is not None and r[8] == 0 for r in table)  # the engine's raw timings, kept
    busy = busy_seconds([Interval(n, float(r[0]), float(r[1])) for n, r in enumerate(table)])  # type: ignore[arg-type]
    billed = sum(float(r[2]) - float(r[3]) for r in table)  # type: ignore[arg-type]
    naive = sum(float(r[4]) for r in table)  # type: ignore[arg-type]
    assert billed == pytest.approx(busy, rel=0.01)  # the invariant
    assert naive > 1.3 * busy  # what summing the overlapping wall-clock times would have billed


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_postgres_daily_rollup_follows_the_re_billed_shares(data_dir: Path) -> None:
    """PostgreSQL: finishing shared requests re-bills earlier ones (and settling makes them final); the daily
    rollup that reports read for closed days moves with every re-bill, so it stays what the raw rows add up to."""
    from conftest import db_rows, open_db, store_target

    from usage.ledger import rebuild_rollup

    target = store_target(data_dir)
    ledger = Ledger(target, heartbeat=False)
    try:
        running = ledger.start(conversation_id="held", route="faq")  # keeps the windows open until it ends
        now = time.time()
        rids = []
        for i in range(6):  # overlapping on two replicas, ending after `running` began: provisional
            rid = ledger.start(conversation_id=f"c{i}", route="model")
            replica = ("http://r1", "http://r2")[i % 2]
            ledger.finish(rid, measurement=_served(replica, now - 10 + i, now + 1 + i))
            rids.append(rid)
        assert {_row(ledger, r)["billing"] for r in rids} == {"provisional"}
        ledger.finish(running)
        assert ledger.settle() == 6
        assert {_row(ledger, r)["billing"] for r in rids} == {"final"}
    finally:
        ledger.close()
    sums = (
        "SELECT day, route, status, profile, sum(requests), sum(compute_micros), sum(cost_micros), "
        "sum(prompt_tokens) FROM requests_daily GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    )
    maintained = db_rows(target, sums)
    db = open_db(target)
    try:
        rebuild_rollup(db)  # from the raw rows as they are billed now
    finally:
        db.close()
    assert maintained == db_rows(target, sums)
    assert sum(r[4] for r in maintained) == 7
