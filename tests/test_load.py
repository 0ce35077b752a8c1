"""Load: many concurrent customer sessions over HTTP (gradio_client) against `firstline serve`.

The fake model (backend "scripted"): FIRSTLINE_STRESS=1 (`make stress`) runs 100 sessions of 5 turns,
CI 20 of 3. The real model: 20 sessions of 3 turns under stress, 4 of 2 in CI. Checked on the database:
no lost or duplicated ledger rows (one per customer message), no server errors, every session's messages
in exactly one conversation of its own, and what each client saw is what its conversation holds. While
the chat queue is busy a staff member works in the console; the latency of those actions is measured and
reported (p95; not asserted: tests never assert on speed). The queue is bounded: a caller over the limit
gets a clear "queue is full" error at once instead of waiting for a timeout.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, LiveServer
from gradio_client import Client
from gradio_raw import call, config, fn_index

from ui.auth import SESSION_COOKIE, UserStore
from ui.web.chat_view import TEXTS

STRESS = os.environ.get("FIRSTLINE_STRESS", "") not in ("", "0")
FAKE_SESSIONS, FAKE_TURNS = (100, 5) if STRESS else (20, 3)
REAL_SESSIONS, REAL_TURNS = (20, 3) if STRESS else (4, 2)
QUESTIONS = [
    "How do I reset my password?",
    "When is my bill debited?",
    "How can I improve my Wi-Fi?",
    "Wie kündige ich meinen Vertrag?",
    "What does the red light on my LumeBox mean?",
    "Wo finde ich meine Rechnung?",
    "How do I report a fault?",
    "Can I take my contract with me when I move?",
]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _session(url: str, index: int, turns: int) -> dict[str, Any]:
    """One customer: `turns` questions, each tagged with the session's own token."""
    token = f"s{index:03d}-{uuid.uuid4().hex[:8]}"
    client = Client(url + "/chat/", verbose=False)
    sent: list[str] = []
    history: list[dict[str, Any]] = []
    latencies = []
    for t in range(turns):
        question = f"{QUESTIONS[(index + t) % len(QUESTIONS)]} (ref {token} #{t})"
        t0 = time.monotonic()
        _, history = client.predict(question, history, "auto", api_name="/chat")
        latencies.append(time.monotonic() - t0)
        sent.append(question)
    return {"token": token, "sent": sent, "history": history, "latencies": latencies}


def _staff_worker(
    url: str, cookie: str, ticket: str, stop: threading.Event, out: list[float], errors: list[str]
) -> None:
    """A staff member refreshing the queue and opening a ticket while customers chat."""
    base = url + "/staff"
    cookies = {SESSION_COOKIE: cookie}
    try:
        cfg = config(base, cookies)
        refresh = fn_index(cfg, api_name="live")
        open_ticket = fn_index(cfg, api_name="open_ticket")
        click = {"index": [0, 0], "value": ticket, "row_value": [ticket], "col_value": None, "selected": True}
        while not stop.is_set():
            for index, data, event in ((refresh, ["open", "", None, {}], None), (open_ticket, ["open", "", {}], click)):
                t0 = time.monotonic()
                result = call(base, index, data, cookies=cookies, timeout=120, event_data=event)
                out.append(time.monotonic() - t0)
                if not result.success or ticket not in result.text():
                    errors.append(f"staff action failed: {result.error}")
            time.sleep(0.2)
    except Exception as exc:  # reported by the test, not lost in the thread
        errors.append(repr(exc))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)] if ordered else 0.0


def _check_database(db: Path, results: list[dict[str, Any]]) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for r in results:
            convs = conn.execute(
                "SELECT DISTINCT conversation_id FROM messages WHERE role = 'user' AND content LIKE ?",
                [f"%(ref {r['token']} #%"],
            ).fetchall()
            assert len(convs) == 1, (r["token"], convs)  # one conversation per session, never shared
            conv = convs[0][0]
            rows = conn.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id", [conv]
            ).fetchall()
            users = [c for role, c in rows if role == "user"]
            assert users == r["sent"], (r["token"], users)  # all of its messages, and only its messages
            # what the client saw is its conversation, as stored
            seen = r["history"]
            assert [_text(m) for m in seen if m["role"] == "user"] == users
            bot_rows = [c for role, c in rows if role != "user"]
            bot_seen = [_text(m) for m in seen if m["role"] != "user"]
            assert len(bot_seen) == len(bot_rows)
            for shown, stored in zip(bot_seen, bot_rows, strict=True):
                assert stored.split("\n")[0][:40] in shown
            assert all(t["sorry"] not in s for s in bot_seen for t in TEXTS.values())
            ledger = conn.execute("SELECT status FROM requests WHERE conversation_id = ?", [conv]).fetchall()
            assert len(ledger) == len(users), (r["token"], ledger)  # one row per message: none lost, none twice
            assert {s for (s,) in ledger} <= {"completed"}, ledger
        started = conn.execute("SELECT count(*) FROM requests WHERE status != 'completed'").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages WHERE role = 'user'").fetchone()[0]
        return {"ledger_rows": total, "unfinished_rows": started, "user_messages": messages}
    finally:
        conn.close()


@pytest.fixture
def staff_cookie(data_dir: Path) -> Iterator[str]:
    users = UserStore(data_dir / "firstline.db")
    users.add_user("sam", "staff", "correct horse battery")
    token = users.login("sam", "correct horse battery", "load-test")
    users.close()
    yield token


def _run_load(server: LiveServer, sessions: int, turns: int, cookie: str | None, label: str) -> dict[str, Any]:
    staff_latencies: list[float] = []
    staff_errors: list[str] = []
    stop = threading.Event()
    staff_thread = None
    if cookie is not None:
        first = Client(server.url + "/chat/", verbose=False)
        first.predict("auto", api_name="/talk_to_person")  # a ticket for the staff member to open
        conn = sqlite3.connect(server.data_dir / "firstline.db")
        ticket = conn.execute("SELECT id FROM tickets").fetchone()[0]
        conn.close()
        staff_thread = threading.Thread(
            target=_staff_worker, args=(server.url, cookie, ticket, stop, staff_latencies, staff_errors), daemon=True
        )
        staff_thread.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        results = list(pool.map(lambda i: _session(server.url, i, turns), range(sessions)))
    elapsed = time.monotonic() - t0
    stop.set()
    if staff_thread is not None:
        staff_thread.join(timeout=120)
    assert not staff_errors, staff_errors[:5]
    figures = _check_database(server.data_dir / "firstline.db", results)
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    latencies = [x for r in results for x in r["latencies"]]
    report = {
        "label": label,
        "sessions": sessions,
        "turns": turns,
        "requests": len(latencies),
        "errors": 0,
        "seconds": round(elapsed, 1),
        "chat_p50_s": round(statistics.median(latencies), 3),
        "chat_p95_s": round(p95(latencies), 3),
        "staff_actions": len(staff_latencies),
        "staff_p95_s": round(p95(staff_latencies), 3),
        "staff_max_s": round(max(staff_latencies, default=0.0), 3),
        **figures,
    }
    print("\nload:", json.dumps(report))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"load-{label}.json").write_text(json.dumps(report, indent=2))
    return report


def test_load_with_the_fake_model(data_dir: Path, staff_cookie: str) -> None:
    server = LiveServer(
        data_dir,
        "scripted",
        env={
            "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.01",
            "FIRSTLINE_ASK_MODEL_WHEN_UNSURE": "false",  # exactly one ledger row per customer message
            "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0",  # every session comes from 127.0.0.1
            "FIRSTLINE_QUEUE_SIZE": str(FAKE_SESSIONS * 2),
        },
    )
    try:
        report = _run_load(server, FAKE_SESSIONS, FAKE_TURNS, staff_cookie, "fake")
    finally:
        server.stop()
    assert report["requests"] == FAKE_SESSIONS * FAKE_TURNS
    assert report["user_messages"] == FAKE_SESSIONS * FAKE_TURNS  # the ticket opener only pressed the button
    assert report["staff_actions"] > 0


@pytest.mark.real_model
def test_load_with_the_real_model(data_dir: Path) -> None:
    server = LiveServer(
        data_dir,
        "llama",
        env={
            "FIRSTLINE_MAX_TOKENS": "32",
            "FIRSTLINE_MODEL_TIMEOUT_S": "600",
            "FIRSTLINE_ASK_MODEL_WHEN_UNSURE": "false",
            "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0",
        },
    )
    try:
        report = _run_load(server, REAL_SESSIONS, REAL_TURNS, None, "real")
    finally:
        server.stop()
    assert report["requests"] == REAL_SESSIONS * REAL_TURNS


def test_a_full_queue_tells_the_caller_to_wait(data_dir: Path) -> None:
    server = LiveServer(
        data_dir,
        "scripted",
        env={
            "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.4",
            "FIRSTLINE_CHAT_CONCURRENCY": "1",
            "FIRSTLINE_QUEUE_SIZE": "2",
            "FIRSTLINE_ASK_MODEL_WHEN_UNSURE": "false",
            "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0",
        },
    )
    try:
        clients = [Client(server.url + "/chat/", verbose=False) for _ in range(6)]
        question = "How can I set up my new router and Wi-Fi at home?"  # answered by the (slow) model
        jobs = [c.submit(question, [], "auto", api_name="/chat") for c in clients]
        outcomes: list[str] = []
        for job in jobs:
            try:
                job.result(timeout=120)
                outcomes.append("answered")
            except Exception as exc:  # gradio_client's QueueError
                outcomes.append(str(exc))
        full = [o for o in outcomes if o != "answered"]
        assert full and all("queue is full" in o.lower() and "try again" in o.lower() for o in full), outcomes
        assert outcomes.count("answered") >= 3  # one running plus two waiting
        # an over-the-limit caller was refused at once, and the server is fine afterwards
        again = Client(server.url + "/chat/", verbose=False).predict("How do I reset my password?", [], "auto",
                                                                      api_name="/chat")  # fmt: skip
        assert again[1]
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()


@pytest.mark.browser
def test_the_chat_page_says_so_when_the_queue_is_full(
    browser: Any, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = LiveServer(
        data_dir,
        "scripted",
        env={
            "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "1.0",
            "FIRSTLINE_CHAT_CONCURRENCY": "1",
            "FIRSTLINE_QUEUE_SIZE": "1",
            "FIRSTLINE_ASK_MODEL_WHEN_UNSURE": "false",
            "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0",
        },
    )
    try:
        page = browser.new_page()
        request.node._pages = [page]
        page.goto(server.url + "/chat/")
        box = page.locator("#message textarea")
        expect(box).to_be_visible(timeout=30_000)
        question = "How can I set up my new router and Wi-Fi at home?"
        jobs = [
            Client(server.url + "/chat/", verbose=False).submit(question, [], "auto", api_name="/chat")
            for _ in range(2)
        ]  # fmt: skip  (one running, one waiting: the queue is full)
        time.sleep(1.0)
        box.fill(question)
        box.press("Enter")
        expect(page.get_by_text(re.compile("busy|queue is full", re.IGNORECASE)).first).to_be_visible(timeout=20_000)
        for job in jobs:
            job.result(timeout=120)
    finally:
        server.stop()
