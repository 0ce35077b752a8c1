"""Served engines under failure and load: failover between replicas, retries only before the first byte (each
try its own ledger row), a replica dying mid-answer (row `error`, conversation escalated), full slots queueing,
a full queue, conversation affinity and readiness. Replicas are replay servers speaking recorded llama-server
HTTP (tests/engine_replay.py); the real llama-server tier is tests/test_llama_server.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import escalation
from models.errors import ModelUnavailableError
from models.replicas import EngineBusyError
from models.served import EngineDiedError, ServedChatModel, root_url
from models.settings import ModelSettings
from models.types import ChatMessage
from tests.engine_replay import ReplayServer, load_recordings, sse_events
from tests.test_model_failures import make_bot, rows

QUESTION = [ChatMessage("system", "Be brief."), ChatMessage("user", "How do I reset my router?")]
FLAVOUR = "llama-server"


def events() -> int:
    """How many SSE events the recorded streamed answer has."""
    return len(sse_events(load_recordings(FLAVOUR)["chat_stream"]["body"]))


@pytest.fixture
def replicas() -> Iterator[list[ReplayServer]]:
    servers = [ReplayServer(FLAVOUR).start() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def served(servers: list[ReplayServer], **overrides: Any) -> ServedChatModel:
    options: dict[str, Any] = {"engine_health_interval_s": 0.1, "engine_unavailable_s": 2.0, **overrides}
    settings = ModelSettings(engine="openai", engine_urls=",".join(s.url for s in servers), **options)
    return ServedChatModel(settings.url_list(), settings)


def test_a_replica_that_refuses_is_failed_over_and_its_try_is_billed_alone(
    replicas: list[ReplayServer], data_dir: Path
) -> None:
    bad, good = replicas
    bad.chat_status = 503  # "Loading model": it cannot start the answer
    model = served(replicas)
    try:
        with model.pool._cond:  # make the failing replica the preferred one
            model.pool.replicas[1].slots = 1
        reply = make_bot(data_dir, model).handle_message("c1", "How do I reset my router?")
    finally:
        model.close()
    assert reply.route == "model" and reply.text
    assert len(bad.chat_requests()) == 1 and len(good.chat_requests()) == 1
    # the failed try's row is written once the request knows it was retried, so it is the later one
    table = rows(data_dir, "SELECT status, reason, error, completion_tokens FROM requests ORDER BY status DESC")
    assert [r[0] for r in table] == ["error", "completed"]  # each try is its own ledger row
    assert table[0][1] == "engine_retry" and "503" in table[0][2] and root_url(bad.url) in table[0][2]
    assert table[1][3] > 0


def test_a_dead_replica_is_taken_out_and_everything_goes_to_the_other(replicas: list[ReplayServer]) -> None:
    dead_url = replicas[0].url
    replicas[0].stop()  # connection refused from now on
    model = served(replicas)
    try:
        assert not model.pool.replicas[0].healthy and model.readiness().ready
        for _ in range(3):
            gen = model.stream(QUESTION)
            assert "".join(gen)
            assert gen.usage is not None and gen.usage.replica == root_url(replicas[1].url)
            assert not gen.failed_attempts  # never tried: the probe had taken it out
    finally:
        model.close()
    assert "connect" in model.pool.replicas[0].detail.lower(), (dead_url, model.pool.replicas[0].detail)


def test_a_replica_dying_before_its_first_token_is_retried_elsewhere(replicas: list[ReplayServer]) -> None:
    replicas[0].die_after_events = 1  # only the role chunk, then the connection is cut
    replicas[1].die_after_events = 1
    model = served(replicas, engine_attempts=2)
    try:
        replicas[1].die_after_events = None
        gen = model.stream(QUESTION)
        pieces = list(gen)
        usage, failed = gen.usage, gen.failed_attempts
    finally:
        model.close()
    assert pieces and usage is not None and usage.finish_reason != "error"
    tried = [u.replica for u in failed] + [usage.replica]
    if failed:  # the pool may have picked the healthy replica first; when it did not, one retry
        assert tried == [root_url(replicas[0].url), root_url(replicas[1].url)]
        assert failed[0].finish_reason == "error" and failed[0].estimated and failed[0].attempt == 1
        assert usage.attempt == 2


def test_a_replica_dying_mid_answer_fails_the_row_and_escalates(data_dir: Path) -> None:
    server = ReplayServer(FLAVOUR).start()
    server.die_after_events = events() // 2  # part of the answer went out: no retry, the customer saw it
    model = served([server])
    try:
        reply = make_bot(data_dir, model).handle_message("c1", "How do I reset my router?")
        assert model.pool.replicas[0].in_flight == 0
    finally:
        model.close()
        server.stop()
    assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE and reply.ticket_id
    assert len(server.chat_requests()) == 1
    (status, route, error, estimated_tokens), = rows(
        data_dir, "SELECT status, route, error, completion_tokens FROM requests"
    )  # fmt: skip
    assert status == "error" and route == "model"  # failed spend stays on the model route (#15)
    assert "mid-answer" in error or "failed while answering" in error
    assert estimated_tokens > 0  # what it streamed before dying is on the row


def test_engine_died_error_carries_estimated_usage() -> None:
    server = ReplayServer(FLAVOUR).start()
    server.die_after_events = events() // 2
    model = served([server])
    try:
        gen = model.stream(QUESTION)
        got = []
        with pytest.raises(EngineDiedError):
            for piece in gen:
                got.append(piece)
    finally:
        model.close()
        server.stop()
    assert got and gen.usage is not None
    assert gen.usage.estimated and gen.usage.finish_reason == "error" and gen.usage.timings is None
    assert gen.usage.completion_tokens == len(got)


def test_full_slots_queue_and_the_cap_holds(replicas: list[ReplayServer]) -> None:
    server = replicas[0]
    server.hold = threading.Event()
    model = served([server], engine_slots=2)
    results: list[Any] = []

    def ask() -> None:
        gen = model.stream(QUESTION)
        results.append(("".join(gen), gen.usage))

    try:
        threads = [threading.Thread(target=ask) for _ in range(5)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20  # a busy machine: the two sent requests may reach the server late
        while (model.pool.queued < 3 or server.active < 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.active == 2 and model.pool.queued == 3  # two in flight, three wait in the queue
        assert model.readiness().queued == 3
        time.sleep(0.3)
        server.hold.set()
        for t in threads:
            t.join(timeout=20)
    finally:
        model.close()
    assert server.max_active == 2 and len(results) == 5
    waits = sorted(u.queue_wait_s for _, u in results)
    assert waits[-1] >= 0.3 and waits[0] < 0.3  # the queued ones waited for a slot, recorded as queue wait


def test_a_full_queue_escalates_at_once(replicas: list[ReplayServer], data_dir: Path) -> None:
    server = replicas[0]
    server.hold = threading.Event()
    model = served([server], engine_slots=1, engine_queue=0)
    try:
        blocker = model.stream(QUESTION)
        t = threading.Thread(target=lambda: list(blocker))
        t.start()
        while server.active < 1:
            time.sleep(0.01)
        with pytest.raises(EngineBusyError):
            next(model.stream(QUESTION))
        reply = make_bot(data_dir, model).handle_message("c2", "How do I reset my router?")
        assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE
        (status, error), = rows(data_dir, "SELECT status, error FROM requests")  # fmt: skip
        assert status == "error" and "busy" in error
        server.hold.set()
        t.join(timeout=10)
    finally:
        model.close()


def test_a_conversation_s_turns_stay_on_one_replica(replicas: list[ReplayServer]) -> None:
    model = served(replicas)
    try:
        seen = set()
        history = list(QUESTION)
        for turn in range(4):
            gen = model.stream(history)
            answer = "".join(gen)
            assert gen.usage is not None
            seen.add(gen.usage.replica)
            history += [ChatMessage("assistant", answer), ChatMessage("user", f"And then? ({turn})")]
        other = [ChatMessage("system", "Be brief."), ChatMessage("user", "Where is my invoice?")]
        gen2 = model.stream(other)
        "".join(gen2)
    finally:
        model.close()
    assert len(seen) == 1  # every turn where its prompt cache is
    assert gen2.usage is not None and gen2.usage.replica not in seen  # a new conversation goes to the idle one


def test_readiness_follows_health(replicas: list[ReplayServer]) -> None:
    server = replicas[0]
    model = served([server])
    try:
        assert model.readiness().ready
        server.health_status = 503
        deadline = time.monotonic() + 5
        while model.readiness().ready and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = model.readiness()
        assert not ready.ready and "503" in ready.detail
        with pytest.raises(ModelUnavailableError):
            next(model.stream(QUESTION))  # after engine_unavailable_s without a healthy replica
        server.health_status = None
        deadline = time.monotonic() + 5
        while not model.readiness().ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model.readiness().ready
        assert "".join(model.stream(QUESTION))
    finally:
        model.close()


def test_every_try_failing_escalates_with_one_row_per_try(replicas: list[ReplayServer], data_dir: Path) -> None:
    for s in replicas:
        s.chat_status = 500
    model = served(replicas)
    try:
        reply = make_bot(data_dir, model).handle_message("c1", "How do I reset my router?")
    finally:
        model.close()
    assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE
    table = rows(data_dir, "SELECT status, route, reason FROM requests ORDER BY started_at")
    assert len(table) == 3 and all(r[0] == "error" for r in table)  # engine_attempts tries, one row each
    assert [len(s.chat_requests()) for s in replicas] in ([2, 1], [1, 2])  # the other replica first
