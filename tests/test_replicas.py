"""The replica pool: per-replica slot caps, the bounded FIFO queue, conversation affinity, health (models.replicas)."""

from __future__ import annotations

import threading
import time

import pytest

from models.errors import ModelUnavailableError
from models.replicas import EngineBusyError, Replica, ReplicaPool


def _pool(*slots: int, queue: int = 8, timeout: float = 5.0, unavailable: float = 0.5) -> ReplicaPool:
    replicas = [Replica(f"http://r{i}", n, healthy=True) for i, n in enumerate(slots)]
    return ReplicaPool(
        replicas,
        probe=lambda r: (True, "ok"),
        queue_size=queue,
        queue_timeout_s=timeout,
        unavailable_s=unavailable,
        start_prober=False,
    )


def test_in_flight_never_exceeds_a_replicas_slots() -> None:
    pool = _pool(2, 1)
    taken = [pool.acquire() for _ in range(3)]
    assert sorted(r.url for r in taken) == ["http://r0", "http://r0", "http://r1"]
    assert all(r.in_flight == r.slots for r in pool.replicas)
    got: list[Replica] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    time.sleep(0.2)
    assert not got and pool.queued == 1  # full: the fourth request waits in the queue
    pool.release(next(r for r in taken if r.url == "http://r1"))
    waiter.join(timeout=5)
    assert [r.url for r in got] == ["http://r1"]
    assert max(r.in_flight for r in pool.replicas if r.url == "http://r1") == 1


def test_a_full_queue_refuses_at_once() -> None:
    pool = _pool(1, queue=1, timeout=1.0)
    pool.acquire()
    outcome: list[str] = []

    def wait() -> None:
        try:
            pool.acquire()
        except EngineBusyError as exc:
            outcome.append(str(exc))

    waiter = threading.Thread(target=wait)
    waiter.start()  # takes the only queue place
    time.sleep(0.2)
    t0 = time.monotonic()
    with pytest.raises(EngineBusyError, match="already wait"):
        pool.acquire()
    assert time.monotonic() - t0 < 0.5
    assert pool.rejected == 1
    waiter.join(timeout=5)
    assert outcome and "within" in outcome[0]  # the queued one timed out later


def test_a_wait_longer_than_the_queue_timeout_fails() -> None:
    pool = _pool(1, timeout=0.3)
    pool.acquire()
    with pytest.raises(EngineBusyError, match="within"):
        pool.acquire()


def test_waiters_are_served_first_come_first_served() -> None:
    pool = _pool(1)
    first = pool.acquire()
    order: list[int] = []

    def wait(n: int) -> None:
        r = pool.acquire()
        order.append(n)
        time.sleep(0.05)
        pool.release(r)

    threads = []
    for n in range(4):
        t = threading.Thread(target=wait, args=(n,))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # queue them in this order
    pool.release(first)
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3]


def test_a_conversation_stays_on_its_replica_unless_it_is_full() -> None:
    pool = _pool(2, 2)
    home = pool.acquire("conversation-a")
    pool.release(home)
    for _ in range(3):  # later turns go where its prompt cache is
        again = pool.acquire("conversation-a")
        assert again.url == home.url
        pool.release(again)
    other = next(r.url for r in pool.replicas if r.url != home.url)
    while home.in_flight < home.slots:  # other conversations fill its home replica
        pool.acquire(exclude={other})
    moved = pool.acquire("conversation-a")
    assert moved.url != home.url  # full: the turn goes elsewhere, and the conversation follows it
    assert pool.replica_for("conversation-a") == moved.url


def test_new_conversations_spread_over_the_replicas() -> None:
    pool = _pool(4, 4)
    urls = [pool.acquire(f"c{i}").url for i in range(4)]
    assert urls.count("http://r0") == 2 and urls.count("http://r1") == 2


def test_a_failed_replica_is_taken_out_and_probed_back() -> None:
    states = {"http://r0": False, "http://r1": True}
    replicas = [Replica("http://r0", 1, healthy=True), Replica("http://r1", 1, healthy=True)]
    pool = ReplicaPool(replicas, probe=lambda r: (states[r.url], "probe"), interval_s=0.05)
    try:
        pool.mark_failed(replicas[0], "connection refused")
        assert pool.acquire().url == "http://r1"
        assert pool.readiness().ready
        states["http://r0"] = True
        deadline = time.monotonic() + 5
        while not replicas[0].healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert replicas[0].healthy  # the prober put it back
        assert pool.acquire().url == "http://r0"
    finally:
        pool.close()


def test_no_healthy_replica_fails_after_the_unavailable_wait() -> None:
    pool = _pool(1, unavailable=0.3)
    pool.mark_failed(pool.replicas[0], "connection refused")
    ready = pool.readiness()
    assert not ready.ready and "connection refused" in ready.detail
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="no replica of the engine is available"):
        pool.acquire()
    assert 0.25 < time.monotonic() - t0 < 3


def test_a_replica_that_comes_back_while_requests_wait_serves_them() -> None:
    pool = _pool(1, unavailable=5.0)
    pool.mark_failed(pool.replicas[0], "restarting")
    got: list[Replica] = []
    t = threading.Thread(target=lambda: got.append(pool.acquire()))
    t.start()
    time.sleep(0.2)
    pool.mark_healthy(pool.replicas[0])
    t.join(timeout=5)
    assert got and got[0].url == "http://r0"


def test_readiness_names_slots_and_queue() -> None:
    pool = _pool(2, 3)
    pool.acquire()
    ready = pool.readiness()
    assert ready.ready and "2 of 2 replicas healthy" in ready.detail and "1 of 5 slots busy" in ready.detail
    assert [s.in_flight for s in ready.replicas] in ([1, 0], [0, 1])
