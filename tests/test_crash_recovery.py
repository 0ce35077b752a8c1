"""Crash recovery: `kill -9` of the server mid-generation, repeated; nothing lost, nothing counted twice.

Each round starts `firstline serve` with the real model and a long answer budget, completes one request,
starts a long one, kills the server with SIGKILL while the answer is streaming, and starts it again. At the
end the database passes PRAGMA integrity_check, every request the client saw complete is in the ledger
exactly once, and every interrupted one is marked `interrupted` (by the next start). CI runs a few rounds;
`make stress` (FIRSTLINE_STRESS=1) runs 20.

Also: the liveness check that decides "is the owner of this started row still running?" must not be
fooled by a killed process that has not been reaped yet (a zombie) or by a new process that got the same
pid (a container restarted within seconds gets the same pid, often 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveServer, db_execute, db_rows, store_target
from gradio_client import Client
from gradio_client.utils import Status

from usage.ledger import Ledger, iso, utcnow

pytestmark = pytest.mark.stores
STRESS = os.environ.get("FIRSTLINE_STRESS", "") not in ("", "0")
ROUNDS = int(os.environ.get("FIRSTLINE_KILL_ROUNDS", "20" if STRESS else "5"))


def _plant_started_row(
    db: Path | str, owner: str, pid: int, heartbeat_age_s: float = 0.5, host: str | None = None
) -> None:
    now = utcnow()
    db_execute(
        db,
        "INSERT INTO instances (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        [owner, host or os.uname().nodename, pid, iso(now - timedelta(seconds=5)),
         iso(now - timedelta(seconds=heartbeat_age_s))],
    )  # fmt: skip
    db_execute(
        db,
        "INSERT INTO requests (request_id, conversation_id, route, status, started_at, owner) "
        "VALUES (?, 'c', 'model', 'started', ?, ?)",
        [f"r-{owner}", iso(now - timedelta(seconds=3)), owner],
    )


def test_rows_of_a_killed_but_unreaped_process_are_recovered(data_dir: Path) -> None:
    db = store_target(data_dir)
    Ledger(db, heartbeat=False).close()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while time.time() < deadline:  # wait until it has exited, but do not reap it: it stays a zombie
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    try:
        _plant_started_row(db, "zombie-owner", child.pid)
        ledger = Ledger(db, heartbeat=False)
        assert ledger.get("r-zombie-owner")["status"] == "interrupted"  # type: ignore[index]
        ledger.close()
    finally:
        child.wait()


def test_rows_of_an_earlier_process_with_the_same_pid_are_recovered(data_dir: Path) -> None:
    """A container restarted within seconds: the new server has the old one's pid and hostname."""
    db = store_target(data_dir)
    Ledger(db, heartbeat=False).close()
    db_execute(db, "DELETE FROM instances")  # the earlier process registered before this one was started
    _plant_started_row(db, "earlier-me", os.getpid())
    long_ago = iso(utcnow() - timedelta(days=3650))  # certainly before this test process started
    db_execute(db, "UPDATE instances SET started_at = ? WHERE owner = 'earlier-me'", [long_ago])
    ledger = Ledger(db, heartbeat=False)
    assert ledger.get("r-earlier-me")["status"] == "interrupted"  # type: ignore[index]
    ledger.close()


def test_rows_of_a_live_ledger_in_this_process_are_kept(data_dir: Path) -> None:
    db = store_target(data_dir)
    a = Ledger(db)
    rid = a.start(conversation_id="c", route="model")
    b = Ledger(db, heartbeat=False)
    assert b.get(rid)["status"] == "started"  # type: ignore[index]
    a.finish(rid)
    a.close()
    b.close()


# -- the kill -9 rounds ----------------------------------------------------------------------------------------
def _last_assistant(outputs: list[Any]) -> str:
    for out in reversed(outputs):
        history = out[1] if isinstance(out, (list, tuple)) and len(out) > 1 else None
        if history:
            content = history[-1].get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _in_progress(db: Path | str, token: str) -> bool:
    """The request's ledger row is written (`started`): the server is working on it."""
    [(count,)] = db_rows(
        db,
        "SELECT count(*) FROM requests WHERE status = 'started' AND conversation_id IN "
        "(SELECT conversation_id FROM messages WHERE role = 'user' AND content LIKE ?)",
        [f"%ref {token}%"],
    )
    return bool(count)


@pytest.mark.real_model
@pytest.mark.timeout(600 + 120 * ROUNDS)
def test_kill_9_during_generation_loses_and_duplicates_nothing(data_dir: Path) -> None:
    # the grounding guard off: it may stop (and replace) the bundled model's answer after its first sentence,
    # and this test needs a long generation to kill; what is recorded does not depend on the guard
    env = {"FIRSTLINE_MAX_TOKENS": "400", "FIRSTLINE_MODEL_TIMEOUT_S": "600", "FIRSTLINE_CHAT_RATE_LIMIT": "0",
           "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0", "FIRSTLINE_GROUNDING_GUARD": "false"}  # fmt: skip
    completed: list[str] = []  # tokens of requests the client saw finish
    killed: list[str] = []  # tokens of requests that were streaming when the server died
    for _ in range(ROUNDS):
        server = LiveServer(data_dir, "llama", env)
        try:
            done = Client(server.url + "/chat/", verbose=False)
            token = uuid.uuid4().hex[:10]
            # an FAQ answer: finished at once, whatever else the machine is doing
            _, history = done.predict(f"How do I reset my password? (ref {token})", [], "auto", api_name="/chat")
            assert history, "no answer"
            completed.append(token)
            victim = Client(server.url + "/chat/", verbose=False)
            token = uuid.uuid4().hex[:10]
            job = victim.submit(f"How can I set up my new router and Wi-Fi at home? (ref {token})", [], "auto",
                                api_name="/chat")  # fmt: skip
            deadline = time.time() + 120
            while time.time() < deadline:  # wait until the answer is streaming
                if job.status().code == Status.ITERATING and _last_assistant(job.outputs()).strip():
                    break
                if job.done():
                    break
                # on a machine busy with other work prefill can take long: mid-request is enough then
                if time.time() > deadline - 90 and _in_progress(store_target(data_dir), token):
                    break
                time.sleep(0.05)
            if job.done():  # it finished before we could kill it: a completed request then
                completed.append(token)
            else:
                assert _in_progress(store_target(data_dir), token)
                killed.append(token)
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=30)
        finally:
            if server.proc.poll() is None:
                server.stop()
            else:
                server._fh.close()
    assert len(killed) >= max(1, ROUNDS - 1), "generation was never interrupted: raise FIRSTLINE_MAX_TOKENS"
    db = store_target(data_dir)
    Ledger(db, heartbeat=False).close()  # the next start: recovery of the last round's rows
    if isinstance(db, Path):
        assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]

    def rows_for(token: str) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in db_rows(
                db,
                "SELECT r.status, r.route FROM requests r WHERE r.conversation_id IN "
                "(SELECT conversation_id FROM messages WHERE role = 'user' AND content LIKE ?)",
                [f"%ref {token}%"],
            )
        ]

    for token in completed:
        rows = rows_for(token)
        assert len([r for r in rows if r[0] == "completed"]) == 1, (token, rows)
        assert all(r[0] in ("completed",) for r in rows), (token, rows)
    for token in killed:
        rows = rows_for(token)
        assert [r[0] for r in rows] == ["interrupted"], (token, rows)
    assert db_rows(db, "SELECT count(*) FROM requests WHERE status = 'started'") == [(0,)]
    [(total,)] = db_rows(db, "SELECT count(*) FROM requests")
    assert total == len(completed) + len(killed)  # nothing lost, nothing duplicated
    assert db_rows(db, "SELECT count(*) FROM instances") == [(ROUNDS + 1,)]
    print(f"\nkill -9 rounds: {ROUNDS}, completed requests: {len(completed)}, interrupted: {len(killed)}")
