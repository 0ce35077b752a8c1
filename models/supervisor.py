"""Supervision of a model child process: start it, notice when it dies and why, restart it with backoff.

`Supervisor` is engine-neutral: it keeps one *handle* (anything with `alive`, `pid`, `exit_cause` and
`stop()`) running, built by a `start` callable that returns once the child is ready or raises. The embedded
model worker (models.remote) uses it; another engine run as a local process (llama-server) can use it too.

* A dead child is replaced in the background after a backoff (0.5 s, doubling to 30 s while it keeps dying
  young), so the next customer does not wait for the load unless the child died a moment ago.
* A caller that needs the child waits for the current (re)start; if that fails, it gets
  `ModelUnavailableError` naming the cause at once, and the next caller triggers the next attempt after
  the backoff. Nothing here raises anything else, so the bot escalates and finishes the ledger row.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from models.errors import ModelError, ModelUnavailableError

log = logging.getLogger(__name__)

SIGNAL_MEANINGS = {
    signal.SIGSEGV: "segmentation fault in native code",
    signal.SIGILL: "illegal instruction: the llama.cpp build uses CPU instructions this CPU lacks",
    signal.SIGABRT: "aborted (a llama.cpp assertion, or out of memory)",
    signal.SIGBUS: "bus error (the model file changed or the disk failed while it was mapped)",
    signal.SIGFPE: "arithmetic fault in native code",
    signal.SIGKILL: "killed (the out-of-memory killer, an operator, or the hang watchdog)",
    signal.SIGTERM: "terminated",
}


def exit_cause(returncode: int | None) -> str:
    """'SIGSEGV (segmentation fault in native code)', 'exit status 3', ... for a child's return code."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"signal {-returncode}"
        meaning = SIGNAL_MEANINGS.get(sig)
        return f"{sig.name} ({meaning})" if meaning else sig.name
    return f"exit status {returncode}"


class Child(Protocol):
    """What the supervisor needs of a started child."""

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int: ...

    @property
    def exit_cause(self) -> str | None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


H = TypeVar("H", bound=Child)


class Supervisor(Generic[H]):
    """Keeps one child running; restarts it with backoff after it dies."""

    def __init__(
        self,
        start: Callable[[], H],
        *,
        name: str = "model worker",
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._start = start
        self.name = name
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.on_event = on_event
        self._cond = threading.Condition()
        self._child: H | None = None
        self._starting = False
        self._closed = False
        self._failures = 0  # deaths / failed starts in a row (reset once a child stays up)
        self._not_before = 0.0  # monotonic time before which no new start is attempted (backoff)
        self._last_error: str | None = None
        self._start_failed = False  # the last start attempt failed (a death only waits for the restart)
        self._started_at = 0.0
        self.starts = 0
        self.deaths = 0

    # -- for callers ----------------------------------------------------------------------------------
    def get(self, timeout: float = 60.0) -> H:
        """A live child, starting one if needed; raises ModelUnavailableError with the cause when none can be had."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ModelUnavailableError(f"the {self.name} is stopped (the process is shutting down)")
                child = self._child
                if child is not None and child.alive:
                    return child
                if child is not None:  # died and not yet noticed by its reader
                    self._record_death_locked(child)
                if not self._starting:
                    wait = self._not_before - time.monotonic()
                    if wait <= 0:
                        self._starting = True
                        break
                    if self._start_failed:
                        # the last start failed a moment ago: fail fast instead of queueing customers behind it
                        raise ModelUnavailableError(f"the {self.name} is down: {self._last_error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ModelUnavailableError(
                        f"the {self.name} did not become ready within {timeout:.0f}s"
                        + (f" (last failure: {self._last_error})" if self._last_error else "")
                    )
                self._cond.wait(min(remaining, 0.5))
        return self._do_start()

    def died(self, child: H) -> None:
        """Called (by whoever noticed) when `child` has ended; schedules its replacement."""
        with self._cond:
            if self._child is not child:
                return
            self._record_death_locked(child)
        threading.Thread(target=self._restart_soon, name=f"{self.name}-restart", daemon=True).start()

    @property
    def current(self) -> H | None:
        """The child right now (may be None or dead)."""
        with self._cond:
            return self._child

    @property
    def last_error(self) -> str | None:
        with self._cond:
            return self._last_error

    def close(self) -> None:
        """Stop the child; no more restarts."""
        with self._cond:
            self._closed = True
            child, self._child = self._child, None
            self._cond.notify_all()
        if child is not None:
            child.stop()

    # -- internals ------------------------------------------------------------------------------------
    def _record_death_locked(self, child: H) -> None:
        self._child = None
        self.deaths += 1
        cause = child.exit_cause or "ended"
        lived = time.monotonic() - self._started_at
        if lived >= self.stable_after_s:
            self._failures = 0
        self._failures += 1
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (self._failures - 1))
        self._not_before = time.monotonic() + delay
        self._last_error = f"{self.name} died: {cause}"
        log.error("%s (pid %s) died after %.1fs: %s; restarting in %.1fs", self.name, child.pid, lived, cause, delay)
        self._emit("died", cause)
        self._cond.notify_all()

    def _restart_soon(self) -> None:
        with self._cond:
            delay = self._not_before - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            self.get(timeout=self.max_backoff_s + 60)
        except ModelError as exc:
            log.error("%s could not be restarted: %s", self.name, exc)

    def _do_start(self) -> H:
        try:
            child = self._start()
        except BaseException as exc:
            with self._cond:
                self._starting = False
                self._failures += 1
                self._not_before = time.monotonic() + min(
                    self.max_backoff_s, self.backoff_s * 2 ** (self._failures - 1)
                )
                self._last_error = str(exc) or type(exc).__name__
                self._start_failed = True
                self._cond.notify_all()
            self._emit("start_failed", str(exc))
            if isinstance(exc, ModelError):
                raise
            if not isinstance(exc, Exception):
                raise
            raise ModelUnavailableError(f"the {self.name} could not be started: {exc}") from exc
        with self._cond:
            self._starting = False
            self.starts += 1
            self._started_at = time.monotonic()
            if self._closed:
                self._cond.notify_all()
                closed = True
            else:
                self._child, closed = child, False
                self._start_failed = False
                self._cond.notify_all()
        if closed:
            child.stop()
            raise ModelUnavailableError(f"the {self.name} is stopped (the process is shutting down)")
        self._emit("started", str(child.pid))
        return child

    def _emit(self, kind: str, detail: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, detail)
        except Exception:
            log.exception("%s event callback failed (%s)", self.name, kind)
