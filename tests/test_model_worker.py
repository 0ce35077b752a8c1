"""The supervised model worker process (issue #11, item 2), with the scripted model inside the worker.

A native crash of the model must end the worker, never the web process: the request in flight fails with
a GenerationError naming the cause, the worker is restarted, the next request is served. Also: a hung
worker is killed by the watchdog, a worker never outlives the web process, the parent measures queue wait
and the worker measures compute. The real model in the worker, through the real server: test_worker_crash.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot import escalation
from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.tickets import TicketStore
from models.errors import GenerationError, ModelFileError, ModelUnavailableError
from models.remote import WorkerChatModel, WorkerDiedError, WorkerStartError
from models.settings import ModelSettings
from models.supervisor import Supervisor, exit_cause
from models.types import ChatMessage
from usage.ledger import Ledger

HELLO = [ChatMessage("user", "hello there")]
ROOT = Path(__file__).resolve().parent.parent


def scripted(seconds_per_token: float = 0.0, **settings: object) -> WorkerChatModel:
    return WorkerChatModel(
        ModelSettings(worker_restart_backoff_s=0.05, **settings),  # type: ignore[arg-type]
        backend="scripted",
        scripted_seconds_per_token=seconds_per_token,
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting to be reaped is gone too
        return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_the_worker_serves_the_chat_model_protocol() -> None:
    model = scripted(0.01)
    try:
        pid = model.info["pid"]
        assert pid != os.getpid() and model.model_id == "scripted-fake" and model.n_ctx == 2048
        assert model.device == "CPU" and model.count_tokens(HELLO) == 9
        gen = model.stream(HELLO, max_tokens=3)
        assert list(gen) == ["This", " is", " a"]
        usage = gen.usage
        assert usage is not None and usage.completion_tokens == 3 and usage.finish_reason == "length"
        assert usage.decode_s > 0.015  # measured in the worker: it slept 10 ms per token
        model.reset_cache()
        assert "".join(model.stream(HELLO)) == "This is a scripted answer."
    finally:
        model.close()
    wait_until(lambda: gone(pid))


def test_queue_wait_is_measured_in_the_web_process() -> None:
    model = scripted(0.05)
    try:
        usages = []

        def ask() -> None:
            gen = model.stream(HELLO)
            "".join(gen)
            usages.append(gen.usage)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        waits = sorted(u.queue_wait_s for u in usages)
        assert waits[0] < 0.1 and waits[1] > 0.15  # the second waited for the first's ~0.25 s of compute
        assert all(u.compute_s < waits[1] + 0.2 for u in usages)
    finally:
        model.close()


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGSEGV, "SIGSEGV"), (signal.SIGABRT, "SIGABRT")])
def test_a_worker_that_crashes_mid_answer_fails_that_answer_and_is_replaced(sig: int, name: str) -> None:
    model = scripted(0.2)
    try:
        first_pid = model.info["pid"]
        gen = model.stream(HELLO)
        assert next(gen) == "This"
        os.kill(first_pid, sig)
        with pytest.raises(WorkerDiedError, match=f"model worker died: {name}"):
            list(gen)
        assert isinstance(WorkerDiedError("x"), GenerationError)  # the bot escalates GenerationErrors
        usage = gen.usage
        assert usage is not None and usage.finish_reason == "error" and usage.completion_tokens == 1
        assert 0 < usage.compute_s < 5  # what the parent saw of the work, not a phantom
        text, _ = model.complete(HELLO)  # the next request is served by a new worker
        assert text == "This is a scripted answer." and model.info["pid"] != first_pid
        assert model.supervisor.deaths == 1 and model.supervisor.starts == 2
    finally:
        model.close()


def test_a_hung_worker_is_killed_by_the_watchdog_and_replaced() -> None:
    model = scripted(0.05, worker_stall_s=1.0)
    try:
        pid = model.info["pid"]
        gen = model.stream(HELLO)
        next(gen)
        os.kill(pid, signal.SIGSTOP)  # frozen: no progress, no exit
        t0 = time.monotonic()
        with pytest.raises(WorkerDiedError, match="hang watchdog"):
            list(gen)
        assert time.monotonic() - t0 < 10
        usage = gen.usage  # billed to its last piece: the stall was waiting, not work
        assert usage is not None and usage.compute_s < 0.5 and usage.finish_reason == "error"
        assert model.complete(HELLO)[0] == "This is a scripted answer."
    finally:
        model.close()


def test_a_worker_that_cannot_start_says_why() -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        WorkerChatModel(ModelSettings(model_path=Path("/nonexistent/model.gguf")))
    with pytest.raises(WorkerStartError, match="no self-check result within"):
        WorkerChatModel(ModelSettings(worker_start_timeout_s=0.001), backend="scripted")


def test_the_worker_never_outlives_the_web_process() -> None:
    code = (
        "from models.remote import WorkerChatModel\n"
        "from models.settings import ModelSettings\n"
        "m = WorkerChatModel(ModelSettings(), backend='scripted')\n"
        "print(m.info['pid'], flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        assert not gone(worker_pid)
        parent.kill()  # kill -9 of the web process: the worker sees its pipe close and exits
        parent.wait()
        wait_until(lambda: gone(worker_pid), timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_bot_escalates_a_crash_and_serves_the_next_customer(data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    store = ConversationStore(db)
    model = scripted(0.2)
    ledger = Ledger(db, heartbeat=False)
    bot = Bot(model=model, store=store, ledger=ledger, tickets=TicketStore(db, conversations=store))
    try:
        stream = bot.stream_message("c1", "How do I restart my router?")
        next(stream)  # the first piece is on its way to the customer
        os.kill(model.info["pid"], signal.SIGSEGV)
        events = list(stream)
        reply = events[-1]
        assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE and reply.ticket_id
        row = bot.ledger.get(reply.request_id)
        assert row is not None and row["status"] == "error" and row["route"] == "model"  # failed model spend (#15)
        assert row["error"].startswith("model worker died: SIGSEGV")
        assert 0 < row["compute_s"] < 5
        nxt = bot.handle_message("c2", "How do I reset my password?")
        assert nxt.route == "model" and nxt.text == "This is a scripted answer."
    finally:
        model.close()


def test_supervisor_backs_off_while_a_child_keeps_dying_and_fails_fast_after_a_failed_start() -> None:
    class Dead:
        alive, pid, exit_cause = False, 1, "SIGSEGV (segmentation fault in native code)"

        def stop(self, timeout: float = 5.0) -> None:
            pass

    attempts: list[float] = []

    def start() -> Dead:
        attempts.append(time.monotonic())
        if len(attempts) >= 3:
            raise OSError("cannot load")
        return Dead()

    sup: Supervisor[Dead] = Supervisor(start, backoff_s=0.1, max_backoff_s=1.0)  # type: ignore[type-var]
    sup.get()
    sup.get()  # the first "died" (not alive): the second start waits its backoff
    assert attempts[1] - attempts[0] >= 0.09
    with pytest.raises(ModelUnavailableError, match="could not be started: cannot load"):
        sup.get()
    with pytest.raises(ModelUnavailableError, match="is down: cannot load"):
        sup.get()  # during the backoff after a failed start: at once, not after a wait
    sup.close()
    with pytest.raises(ModelUnavailableError, match="stopped"):
        sup.get()


def test_exit_causes_are_named() -> None:
    assert exit_cause(-signal.SIGSEGV) == "SIGSEGV (segmentation fault in native code)"
    assert exit_cause(-signal.SIGILL).startswith("SIGILL (illegal instruction")
    assert exit_cause(3) == "exit status 3"


def test_a_timed_out_request_is_billed_for_the_model_s_work_not_for_the_wait(data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    store = ConversationStore(db)
    model = scripted(0.1)  # ~0.5 s per full answer
    ledger = Ledger(db, heartbeat=False)
    bot = Bot(model=model, store=store, ledger=ledger, tickets=TicketStore(db, conversations=store))
    bot.settings.model_timeout_s = 0.25
    try:
        busy = model.stream(HELLO)
        next(busy)  # another request holds the model
        replies = []
        waiting = threading.Thread(target=lambda: replies.append(bot.handle_message("c1", "How do I pay my bill?")))
        waiting.start()
        time.sleep(1.0)  # the customer's request waits in the queue meanwhile
        busy.close()
        waiting.join(timeout=30)
        [reply] = replies
        assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE
        row = ledger.get(reply.request_id)
        assert row is not None and row["status"] == "error" and "timeout" in row["error"]
        assert row["queue_wait_s"] >= 0.8  # the wait is recorded, apart from the compute
        assert row["compute_s"] < 0.7  # prefill + decode until the timeout (and the token in flight)
    finally:
        model.close()


def test_an_abandoned_generation_releases_the_model() -> None:
    model = scripted(0.05)
    try:
        gen = model.stream(HELLO)
        next(gen)
        del gen  # dropped mid-answer without close(): the lock must not stay taken
        t0 = time.monotonic()
        assert model.complete(HELLO)[0] == "This is a scripted answer."
        assert time.monotonic() - t0 < 5
    finally:
        model.close()


@pytest.mark.real_model
def test_the_real_model_in_the_worker_keeps_its_kv_cache_between_requests() -> None:
    """Prefix reuse lives in the worker: a follow-up re-reads only what is new (and after a crash, all of it)."""
    model = WorkerChatModel(ModelSettings(temperature=0.0, n_ctx=1024, worker_restart_backoff_s=0.05))
    try:
        first = [ChatMessage("system", "You are a helpful support assistant."), ChatMessage("user", "Hi, who are you?")]
        answer, u1 = model.complete(first, max_tokens=8)
        follow = [*first, ChatMessage("assistant", answer), ChatMessage("user", "And what can you help me with?")]
        _, u2 = model.complete(follow, max_tokens=8)
        assert u1.cached_tokens == 0 and u2.cached_tokens >= model.count_tokens(first) - 2
        assert u2.prefill_s > 0 and u2.decode_s > 0 and u2.device == "CPU"
        os.kill(model.info["pid"], signal.SIGKILL)
        wait_until(lambda: model.supervisor.deaths == 1)
        _, u3 = model.complete(follow, max_tokens=8)  # a new worker: its cache starts empty
        assert u3.cached_tokens == 0
    finally:
        model.close()
