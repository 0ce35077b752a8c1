"""Two `firstline serve` processes on one database (SQLite: one file; PostgreSQL: two data directories, as
two hosts would have, and one database URL).

- a customer on process A and a staff member on process B see each other's messages within seconds
  (browser tier: the customer's page polls A, the staff console polls B);
- two staff members clicking "Claim" at the same moment, one on A and one on B: the ticket is claimed once;
- the "interrupted" recovery of a starting process only touches rows of processes that are really gone
  (per-process heartbeats): B's request in flight survives A's restart after a kill -9.
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveServer, db_execute, db_rows, store_target
from gradio_client import Client
from gradio_raw import call, config, fn_index

from ui.auth import SESSION_COOKIE, UserStore
from usage.ledger import iso, utcnow

pytestmark = pytest.mark.stores


@pytest.fixture
def pair(data_dir: Path, store_kind: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Processes A and B (the fake model): one database; on PostgreSQL each with a data directory of its own."""
    other = data_dir if store_kind == "sqlite" else tmp_path / "host-b"
    other.mkdir(exist_ok=True)
    users = UserStore(store_target(data_dir))
    for name in ("sam", "kim"):
        users.add_user(name, "staff", "correct horse battery")
    users.close()
    env = {"FIRSTLINE_CHAT_RATE_LIMIT": "0", "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0"}
    a = LiveServer(data_dir, "scripted", env, name="server-a")
    try:
        b = LiveServer(other, "scripted", env, name="server-b")
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        for s in (a, b):
            if s.proc.poll() is None:
                s.stop()


def _cookie(data_dir: Path, name: str) -> dict[str, str]:
    users = UserStore(store_target(data_dir))
    try:
        return {SESSION_COOKIE: users.login(name, "correct horse battery", "two-process-test")}
    finally:
        users.close()


def _fn(cfg: dict[str, Any], elem_id: str, event: str = "click") -> int:
    """The event index of the component with this elem_id (what the browser calls)."""
    component = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == elem_id)
    return next(int(d["id"]) for d in cfg["dependencies"] if [component, event] in [list(t) for t in d["targets"]])


def _open_ticket(server: LiveServer) -> str:
    client = Client(server.url + "/chat/", verbose=False)
    _, history = client.predict("I want to talk to a real person please", [], "auto", api_name="/chat")
    found = re.search(r"T-[A-Z0-9]{6}", str(history))
    assert found, history
    return found.group(0)


def test_two_staff_claiming_at_once_on_different_processes_claim_once(
    pair: tuple[LiveServer, LiveServer], data_dir: Path
) -> None:
    a, b = pair
    results: dict[str, str] = {}
    for round_ in range(3):  # a few rounds: a race lost by luck once would hide a missing lock
        ticket = _open_ticket(a)
        barrier = threading.Barrier(2)

        def click(server: LiveServer, name: str, ticket: str = ticket, barrier: threading.Barrier = barrier) -> None:
            cookies = _cookie(data_dir, name)
            base = server.url + "/staff"
            cfg, session = config(base, cookies), secrets.token_hex(6)
            # as in the browser: click the ticket in the queue (the console keeps it in the session), then Claim
            row = {"index": [0, 0], "value": ticket, "row_value": [ticket], "col_value": None, "selected": True}
            opened = call(base, fn_index(cfg, api_name="open_ticket"), ["all", "", {}], session_hash=session,
                          cookies=cookies, timeout=60, event_data=row)  # fmt: skip
            if not (opened.success and ticket in opened.text()):
                results[name] = f"opening the ticket failed: {opened.text()}"
                barrier.abort()  # the other click must not wait for this one
                return
            barrier.wait(timeout=60)
            out = call(base, _fn(cfg, "claim"), ["all", "", None, "", {}], session_hash=session, cookies=cookies,
                       timeout=60)  # fmt: skip
            results[name] = out.text()

        threads = [threading.Thread(target=click, args=(s, n)) for s, n in ((a, "sam"), (b, "kim"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        done = [n for n, text in results.items() if "Done: claim" in text]
        refused = [n for n, text in results.items() if "already claimed by" in text]
        assert len(done) == 1 and len(refused) == 1, (round_, results)
        events = db_rows(
            store_target(data_dir), "SELECT actor FROM ticket_events WHERE ticket_id = ? AND kind = 'claimed'", [ticket]
        )
        assert events == [(done[0],)]
        [(owner,)] = db_rows(store_target(data_dir), "SELECT claimed_by FROM tickets WHERE id = ?", [ticket])
        assert owner == done[0]


def test_recovery_after_a_kill_touches_only_rows_of_processes_that_are_gone(
    pair: tuple[LiveServer, LiveServer], data_dir: Path
) -> None:
    a, b = pair
    db = store_target(data_dir)
    owners = dict(db_rows(db, "SELECT pid, owner FROM instances WHERE stopped_at IS NULL"))
    owner_a, owner_b = owners[a.proc.pid], owners[b.proc.pid]
    started = iso(utcnow())
    for rid, owner in (("in-flight-a", owner_a), ("in-flight-b", owner_b)):
        db_execute(
            db,
            "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
            "VALUES (?, 'c', 'model', 'started', ?, ?)",
            [rid, started, owner],
        )
    # a process on another host: alive while its heartbeat is fresh, gone once it is stale
    for rid, owner, age in (("other-host-alive", "h2:1:a", 1), ("other-host-gone", "h2:2:b", 600)):
        beat = iso(utcnow() - timedelta(seconds=age))
        db_execute(
            db,
            "INSERT INTO instances (owner, host, pid, started_at, heartbeat_at) VALUES (?, 'other-host', 1, ?, ?)",
            [owner, beat, beat],
        )
        db_execute(
            db,
            "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
            "VALUES (?, 'c', 'model', 'started', ?, ?)",
            [rid, beat, owner],
        )
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    a._fh.close()
    again = LiveServer(data_dir, "scripted", name="server-a2")  # A restarts: its start-up recovery runs
    try:
        status = dict(db_rows(db, "SELECT request_id, status FROM requests WHERE owner != ''"))
        assert status["in-flight-a"] == "interrupted"
        assert status["other-host-gone"] == "interrupted"
        assert status["in-flight-b"] == "started"  # B is alive: its request is not touched
        assert status["other-host-alive"] == "started"
    finally:
        again.stop()


@pytest.mark.browser
def test_customer_on_one_process_and_staff_on_another_see_each_other(
    browser: Any, pair: tuple[LiveServer, LiveServer], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    a, b = pair
    customer_ctx, staff_ctx = browser.new_context(), browser.new_context()
    customer, staff = customer_ctx.new_page(), staff_ctx.new_page()
    request.node._pages = [customer, staff]
    customer.goto(a.url + "/")
    box = customer.locator("#message textarea")
    box.fill("I want to talk to a real person please")
    box.press("Enter")
    chat = customer.locator("#chat")
    expect(chat).to_contain_text(re.compile(r"T-[A-Z0-9]{6}"), timeout=30_000)
    ticket = re.search(r"T-[A-Z0-9]{6}", chat.inner_text()).group(0)  # type: ignore[union-attr]

    staff.goto(b.url + "/staff/")
    staff.locator("#username").fill("sam")
    staff.locator("#password").fill("correct horse battery")
    staff.locator("#login").click()
    expect(staff.locator("#queue")).to_contain_text(ticket, timeout=30_000)
    # a click on the ticket's visible cell opens it (Gradio also renders rows into a hidden sizing table)
    staff.locator("#queue").get_by_text(ticket, exact=True).filter(visible=True).first.click()
    expect(staff.locator("#ticket-head")).to_contain_text(ticket, timeout=15_000)
    expect(staff.locator("#transcript-box")).to_contain_text("talk to a real person", timeout=15_000)
    staff.locator("#reply textarea").fill("Hello from Sam on process B")
    t0 = time.monotonic()
    staff.locator("#send-reply").click()
    expect(chat).to_contain_text("Hello from Sam on process B", timeout=15_000)  # A's page polls A
    to_customer = time.monotonic() - t0

    box.fill("Thanks, my router blinks red")
    t0 = time.monotonic()
    box.press("Enter")
    expect(staff.locator("#transcript-box")).to_contain_text("blinks red", timeout=20_000)  # B's timer refresh
    to_staff = time.monotonic() - t0
    print(f"\ntwo processes: staff reply on B seen by the customer on A after {to_customer:.1f} s, "
          f"customer message on A seen by staff on B after {to_staff:.1f} s")  # fmt: skip
    customer_ctx.close()
    staff_ctx.close()
