"""ReplicaPool: which replica of a served engine computes the next request, and how many wait.

Each replica (a llama-server or vLLM process) computes at most `slots` requests at once (its in-flight cap:
llama-server's parallel slots); further requests wait in one bounded FIFO queue in front of all replicas and
fail at once when that queue is full (the bot escalates; nothing waits unbounded). The pool picks:

1. the replica that served this conversation last (`affinity` key: it holds the conversation's prompt in its
   KV cache, so the next turn is prefilled from the cache) unless it is full or unhealthy,
2. else the healthy replica with the largest share of free slots, the one that served fewer requests among
   equals (the conversation moves there).

Health: a replica is taken out when a request fails on it at the connection level (refused, reset, timed
out, a 503) and when its `/health` probe fails; a background thread probes every replica every
`interval_s` with a short timeout and puts a failed one back once its `/health` answers 200 again.
Readiness (`/ready`) is "at least one replica healthy". The pool does no HTTP itself: `probe(replica)`
is given (models.served does the requests).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from models.errors import ModelUnavailableError
from models.types import Readiness, ReplicaState

log = logging.getLogger(__name__)

AFFINITY_KEYS = 10_000  # conversations remembered per pool (least recently used forgotten first)


class EngineBusyError(ModelUnavailableError):
    """Every replica slot is taken and the queue in front of them is full (or the wait timed out)."""


@dataclass
class Replica:
    """One OpenAI-compatible server; mutable state guarded by the pool's lock."""

    url: str  # root URL, without /v1
    slots: int
    healthy: bool = False
    in_flight: int = 0
    detail: str = "not probed yet"
    flavour: str = ""  # llama-server | vllm | openai ("" until probed)
    info: dict[str, object] = field(default_factory=dict)  # what the probe learnt (n_ctx, model, version, ...)
    served: int = 0
    failures: int = 0

    @property
    def free(self) -> int:
        return self.slots - self.in_flight

    def state(self) -> ReplicaState:
        return ReplicaState(self.url, self.healthy, self.slots, self.in_flight, self.detail)


Probe = Callable[[Replica], tuple[bool, str]]


class ReplicaPool:
    """Slots, a bounded FIFO queue, conversation affinity and health for a set of replicas; thread-safe."""

    def __init__(
        self,
        replicas: Iterable[Replica],
        *,
        probe: Probe,
        queue_size: int = 64,
        queue_timeout_s: float = 120.0,
        unavailable_s: float = 15.0,
        interval_s: float = 2.0,
        start_prober: bool = True,
    ) -> None:
        self.replicas = list(replicas)
        if not self.replicas:
            raise ValueError("a replica pool needs at least one replica")
        self.probe_fn = probe
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self.unavailable_s = unavailable_s
        self.interval_s = interval_s
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, frozenset[str]]] = []  # FIFO of (ticket, replicas the waiter excludes)
        self._tickets = itertools.count()
        self._affinity: OrderedDict[str, str] = OrderedDict()  # conversation key -> replica url
        self._closed = False
        self._stop = threading.Event()  # wakes the prober for closing only (slot changes must not make it probe)
        self.rejected = 0  # requests refused because the queue was full
        self._prober: threading.Thread | None = None
        if start_prober:
            self._prober = threading.Thread(target=self._probe_loop, name="replica-prober", daemon=True)
            self._prober.start()

    # -- taking and giving back slots -------------------------------------------------------------------
    def acquire(self, key: str | None = None, exclude: Iterable[str] = ()) -> Replica:
        """A replica with a free slot (taken), waiting in the FIFO queue if all are full; raises EngineBusyError
        when the queue is full or the wait times out, ModelUnavailableError when no replica is healthy."""
        excluded = frozenset(exclude)
        deadline = time.monotonic() + self.queue_timeout_s
        down_since: float | None = None
        with self._cond:
            ticket = next(self._tickets)
            chosen = self._choose(key, excluded)
            if chosen is not None and not self._waiting:
                return self._take(chosen, key)
            if len(self._waiting) >= self.queue_size:
                self.rejected += 1
                raise EngineBusyError(
                    f"all {self.total_slots} replica slots are busy and {len(self._waiting)} requests already wait "
                    "(FIRSTLINE_ENGINE_QUEUE)"
                )
            self._waiting.append((ticket, excluded))
            try:
                while True:
                    if self._closed:
                        raise ModelUnavailableError("the engine is stopped (the process is shutting down)")
                    chosen = self._choose(key, excluded)
                    if chosen is not None and self._my_turn(ticket):
                        return self._take(chosen, key)
                    now = time.monotonic()
                    if not any(r.healthy and r.url not in excluded for r in self.replicas):
                        down_since = down_since or now
                        if now - down_since >= self.unavailable_s:
                            raise ModelUnavailableError(f"no replica of the engine is available: {self._causes()}")
                    else:
                        down_since = None
                    if now >= deadline:
                        raise EngineBusyError(
                            f"no replica slot became free within {self.queue_timeout_s:.0f}s "
                            "(FIRSTLINE_ENGINE_QUEUE_TIMEOUT_S)"
                        )
                    self._cond.wait(min(0.5, deadline - now))
            finally:
                self._waiting = [w for w in self._waiting if w[0] != ticket]
                self._cond.notify_all()

    def release(self, replica: Replica) -> None:
        """Give a slot back (after the request ended, whatever its outcome)."""
        with self._cond:
            replica.in_flight = max(0, replica.in_flight - 1)
            self._cond.notify_all()

    def mark_failed(self, replica: Replica, reason: str) -> None:
        """Take a replica out (a request failed on it at the connection level); the prober brings it back."""
        with self._cond:
            if replica.healthy:
                log.warning("replica %s taken out: %s", replica.url, reason)
            replica.healthy = False
            replica.failures += 1
            replica.detail = reason
            self._cond.notify_all()

    def mark_healthy(self, replica: Replica, detail: str = "ok") -> None:
        with self._cond:
            if not replica.healthy:
                log.info("replica %s is healthy: %s", replica.url, detail)
            replica.healthy = True
            replica.detail = detail
            self._cond.notify_all()

    def forget(self, key: str) -> None:
        """Drop a conversation's affinity (its replica no longer holds its cache, e.g. after a restart)."""
        with self._cond:
            self._affinity.pop(key, None)

    # -- looking -----------------------------------------------------------------------------------------
    @property
    def total_slots(self) -> int:
        return sum(r.slots for r in self.replicas)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._waiting)

    def replica_for(self, key: str) -> str | None:
        """The replica url a conversation key is bound to (tests, diagnostics)."""
        with self._cond:
            return self._affinity.get(key)

    def healthy(self) -> list[Replica]:
        with self._cond:
            return [r for r in self.replicas if r.healthy]

    def readiness(self) -> Readiness:
        """Ready while at least one replica is healthy; the detail names the replicas' states."""
        with self._cond:
            states = tuple(r.state() for r in self.replicas)
            queued = len(self._waiting)
        up = [s for s in states if s.healthy]
        if up:
            busy = sum(s.in_flight for s in states)
            detail = f"{len(up)} of {len(states)} replicas healthy, {busy} of {sum(s.slots for s in up)} slots busy"
            return Readiness(True, detail + (f", {queued} waiting" if queued else ""), states, queued)
        return Readiness(False, f"no replica healthy: {self._causes(states)}", states, queued)

    # -- probing -----------------------------------------------------------------------------------------
    def probe_all(self) -> None:
        """Probe every replica once now (in parallel with nothing: each probe has its own short timeout)."""
        for replica in list(self.replicas):
            if self._closed:
                return
            try:
                ok, detail = self.probe_fn(replica)
            except Exception as exc:  # a probe must never kill the prober
                ok, detail = False, f"probe failed: {type(exc).__name__}: {exc}"
            if ok:
                self.mark_healthy(replica, detail)
            elif replica.healthy:
                self.mark_failed(replica, detail)
            else:
                with self._cond:
                    replica.detail = detail

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        if self._prober is not None and self._prober is not threading.current_thread():
            self._prober.join(timeout=5)

    # -- internals (caller holds the lock) -----------------------------------------------------------------
    def _choose(self, key: str | None, excluded: frozenset[str]) -> Replica | None:
        usable = [r for r in self.replicas if r.healthy and r.free > 0 and r.url not in excluded]
        if not usable:
            return None
        if key is not None:
            bound = self._affinity.get(key)
            for r in usable:
                if r.url == bound:
                    return r
        return max(usable, key=lambda r: (r.free / r.slots, r.free, -r.served))  # ties: the less used one

    def _my_turn(self, ticket: int) -> bool:
        """FIFO: a waiter goes when no waiter before it could go now."""
        for other, excluded in self._waiting:
            if other == ticket:
                return True
            if self._choose(None, excluded) is not None:
                return False
        return True

    def _take(self, replica: Replica, key: str | None) -> Replica:
        replica.in_flight += 1
        replica.served += 1
        if key is not None:
            self._affinity[key] = replica.url
            self._affinity.move_to_end(key)
            while len(self._affinity) > AFFINITY_KEYS:
                self._affinity.popitem(last=False)
        return replica

    def _causes(self, states: Iterable[ReplicaState] | None = None) -> str:
        items = states if states is not None else (r.state() for r in self.replicas)
        return "; ".join(f"{s.url}: {s.detail}" for s in items)

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            self.probe_all()
            self._stop.wait(self.interval_s)
