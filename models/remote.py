"""WorkerChatModel: the ChatModel protocol served by a supervised model worker process (models.worker).

The web process never loads llama.cpp: a native crash ends the worker only. What the web process sees:

* the generation in flight raises `WorkerDiedError` ("model worker died: SIGSEGV (...)"), a
  `GenerationError`, so the bot finishes the ledger row as `error` with that cause and escalates;
  its usage is what the parent clock saw of the work (from sending the request to the death), never hours;
* the supervisor starts a new worker after a short backoff and the next customer is served by it;
* a worker that makes no progress for `worker_stall_s` is killed (and replaced) the same way.

One generation runs at a time (the worker has one llama.cpp context): the lock is taken here, on the first
iteration, and its wait is the request's queue wait; prefill and decode are measured in the worker.
Token counting goes to the worker at once, even while a generation runs. The KV-cache prefix reuse and
the state cache live in the worker, so they survive between requests (not across a restart).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from models import cpu, errors
from models.errors import GenerationError, ModelError, ModelFileError, ModelUnavailableError
from models.settings import ModelSettings
from models.supervisor import Supervisor, exit_cause
from models.types import ChatMessage, Generation, Readiness, Usage, inprocess_replica
from models.wire import Channel
from models.worker import WorkerConfig

log = logging.getLogger(__name__)


class WorkerDiedError(GenerationError):
    """The model worker process ended while serving this request (a native crash, a kill, the hang watchdog)."""


class WorkerStartError(ModelUnavailableError):
    """A new model worker could not load its model or failed its self-check (the cause says which)."""


_DIED = object()  # queued to every pending request when the worker's stream ends


class WorkerProcess:
    """One started worker: the process, its channel, a reader thread dispatching replies by request id."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        start_timeout_s: float = 30.0,
        on_exit: Callable[[WorkerProcess], None] | None = None,
    ) -> None:
        """Start `python -m models.worker` with `env` added to this process's environment (or, with
        `replace_env`, as its whole environment), send it `config` and wait for it to be ready."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "models.worker", "--fd-in", str(to_child_r), "--fd-out", str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                env=dict(env or {}) if replace_env else {**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.channel = Channel(from_child_r, to_child_w)
        self.info: dict[str, Any] = {}
        self._pending: dict[int, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._ended = False
        self._cause: str | None = None
        self._on_exit = on_exit
        self._ready = queue.SimpleQueue[Any]()
        self._pending[0] = self._ready
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, name=f"model-worker-{self.pid}", daemon=True)
        self._reader.start()
        with contextlib.suppress(OSError):  # died at once: the reader reports how
            self.channel.send("config", 0, config)
        self._await_ready(start_timeout_s)

    # -- the Child protocol ----------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        with self._lock:
            return not self._ended and self.proc.poll() is None

    @property
    def exit_cause(self) -> str | None:
        with self._lock:
            return self._cause

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish, then make sure it is gone."""
        with contextlib.suppress(OSError):
            self.channel.send("shutdown")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=timeout)

    def kill(self, cause: str) -> None:
        """End a worker that stopped making progress; `cause` replaces the signal's meaning."""
        with self._lock:
            self._cause = cause
        self.proc.kill()

    # -- requests ----------------------------------------------------------------------------------------
    def open(self, rid: int) -> queue.SimpleQueue[Any]:
        """Register a request id; its replies arrive on the returned queue (`_DIED` if the worker ends)."""
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            if self._ended:
                inbox.put(_DIED)
            else:
                self._pending[rid] = inbox
        return inbox

    def done(self, rid: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    def send(self, kind: str, rid: int, payload: Any = None) -> None:
        """Send a request; a dead worker shows up on the request's queue, not as an exception here."""
        with contextlib.suppress(OSError):
            self.channel.send(kind, rid, payload)

    # -- internals ---------------------------------------------------------------------------------------
    def _await_ready(self, timeout: float) -> None:
        try:
            message = self._ready.get(timeout=timeout)
        except queue.Empty:
            self.kill(f"no self-check result within {timeout:.0f}s (hung while loading or generating)")
            self.proc.wait()
            self._reader.join(timeout=5)
            cause = str(self._cause)
            raise WorkerStartError(f"model worker: {cause}; fix: {cpu.crash_fix(cause)}") from None
        if message is _DIED:
            cause = str(self._cause)
            raise WorkerStartError(
                f"model worker died while loading the model or in its self-check: {cause}; fix: {cpu.crash_fix(cause)}"
            )
        kind, _, payload = message
        if kind == "load_failed":
            self.stop()
            text = str(payload.get("message") or payload.get("type"))
            if payload.get("type") == "ModelFileError":
                raise ModelFileError(text)
            raise WorkerStartError(f"model worker could not load the model: {text}")
        self.info = dict(payload)
        with self._lock:
            self._pending.pop(0, None)

    def _read_loop(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except (OSError, ValueError) as exc:
                log.error("model worker %s: %s", self.pid, exc)
                message = None
            if message is None:
                break
            with self._lock:
                inbox = self._pending.get(message[1])
            if inbox is not None:
                inbox.put(message)
        try:
            returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # closed its end but lives on: not usable any more
            self.proc.kill()
            returncode = self.proc.wait()
        with self._lock:
            self._ended = True
            self._cause = self._cause or exit_cause(returncode)
            inboxes = list(self._pending.values())
            self._pending.clear()
        for inbox in inboxes:
            inbox.put(_DIED)
        self.channel.close()
        if self._on_exit is not None:
            self._on_exit(self)


class WorkerChatModel:
    """A ChatModel whose model runs in a supervised worker process; thread-safe, one generation at a time."""

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        backend: str = "llama",
        load_options: dict[str, Any] | None = None,
        model_id: str | None = None,
        scripted_seconds_per_token: float = 0.0,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        start: bool = True,
        self_check: bool = True,
    ) -> None:
        """Start the worker (and wait for its self-check) unless `start=False`; raises ModelFileError for a
        bad model file and WorkerStartError when the worker dies, hangs or fails while loading.
        `self_check=False` skips the worker's test generation (only to inspect how a model loads). `env` adds
        to the worker's environment (after the settings' OpenMP defaults); `replace_env` makes it the whole
        environment (benchmarks comparing thread settings)."""
        self.settings = settings or ModelSettings()
        self.config = WorkerConfig(
            settings=self.settings.model_dump(mode="json"),
            backend=backend,
            load_options=load_options,
            model_id=model_id,
            self_check=self_check,
            scripted_seconds_per_token=scripted_seconds_per_token,
            replica=inprocess_replica(),
        )
        self.env = dict(env or {}) if replace_env else {**self.settings.worker_environment(), **(env or {})}
        self.replace_env = replace_env
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._info: dict[str, Any] = {}
        self.supervisor: Supervisor[WorkerProcess] = Supervisor(
            self._start_worker, backoff_s=self.settings.worker_restart_backoff_s
        )
        if start:
            self._worker()

    # -- the ChatModel protocol --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return str(self._known("model_id"))

    @property
    def device(self) -> str:
        return str(self._known("device"))

    @property
    def n_ctx(self) -> int:
        return int(self._known("n_ctx"))

    @property
    def info(self) -> dict[str, Any]:
        """What the current (or last) worker reported when it became ready: pid, buffers, load time, ..."""
        return dict(self._info)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return int(self._call("count", list(messages)))

    def readiness(self) -> Readiness:
        """Ready while a worker is up; between a crash and its restart, not ready, with the cause."""
        child = self.supervisor.current
        if child is not None and child.alive:
            return Readiness(True, f"model worker {child.pid} serving {self._info.get('model_id', '?')}")
        return Readiness(False, self.supervisor.last_error or "the model worker is not running")

    def reset_cache(self) -> None:
        """Forget the worker's live KV cache and saved states (waits for a running generation)."""
        with self._lock:
            self._call("reset_cache", None)

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        request = {"messages": list(messages), "max_tokens": max_tokens, "temperature": temperature, "grammar": grammar}
        return WorkerGeneration(self, request)

    def complete(self, messages: list[ChatMessage], **kwargs: Any) -> tuple[str, Usage]:
        """Generate a whole answer; returns (text, usage)."""
        gen = self.stream(messages, **kwargs)
        text = "".join(gen)
        assert gen.usage is not None
        return text, gen.usage

    def ready(self) -> tuple[bool, str]:
        """Whether a worker process is up now, with a reason (GET /ready asks; this starts nothing)."""
        worker = self.supervisor.current
        if worker is not None and worker.alive:
            return True, f"model worker {worker.pid} is up"
        return False, f"the model worker is down: {self.supervisor.last_error or 'starting'} (restarting)"

    def close(self) -> None:
        """Stop the worker (waits for a running generation to finish its current token)."""
        self.supervisor.close()

    # -- internals ---------------------------------------------------------------------------------------
    def _start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            self.config,
            env=self.env,
            replace_env=self.replace_env,
            start_timeout_s=self.settings.worker_start_timeout_s,
            on_exit=self.supervisor.died,
        )
        self._info = worker.info
        log.info("model worker %s ready: %s on %s, loaded in %.2fs", worker.pid, worker.info.get("model_id"),
                 worker.info.get("device"), float(worker.info.get("load_s") or 0))  # fmt: skip
        return worker

    def _worker(self) -> WorkerProcess:
        return self.supervisor.get(timeout=self.settings.worker_start_timeout_s + 30)

    def _known(self, key: str) -> Any:
        if key not in self._info:
            self._worker()
        return self._info[key]

    def _call(self, kind: str, payload: Any) -> Any:
        """A request with one reply (count, reset_cache)."""
        worker = self._worker()
        rid = next(self._ids)
        inbox = worker.open(rid)
        try:
            worker.send(kind, rid, payload)
            try:
                message = inbox.get(timeout=self.settings.worker_stall_s)
            except queue.Empty:
                stall = self.settings.worker_stall_s
                worker.kill(f"killed by the hang watchdog: no reply to '{kind}' within {stall:.0f}s")
                raise WorkerDiedError(f"model worker did not answer within {stall:.0f}s") from None
            if message is _DIED:
                raise WorkerDiedError(f"model worker died: {worker.exit_cause}")
            kind_back, _, value = message
            if kind_back == "error":
                raise _rebuild_error(value)
            return value
        finally:
            worker.done(rid)


class WorkerGeneration(Generation):
    """One streamed answer from the worker; the model lock is held from the first iteration to the end."""

    def __init__(self, owner: WorkerChatModel, request: dict[str, Any]) -> None:
        self.usage = None
        self._owner = owner
        self._request = request
        self._worker: WorkerProcess | None = None
        self._inbox: queue.SimpleQueue[Any] | None = None
        self._rid = 0
        self._locked = False
        self._finished = False
        self._queue_wait = 0.0
        self._t_sent = self._t_first = self._t_last = 0.0
        self._wall_sent = 0.0
        self._pieces = 0

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if not self._locked:
            self._begin()
        assert self._inbox is not None and self._worker is not None
        stall = self._owner.settings.worker_stall_s
        try:
            message = self._inbox.get(timeout=stall)
        except queue.Empty:
            self._worker.kill(f"killed by the hang watchdog: no progress for {stall:.0f}s")
            message = self._inbox.get()  # the reader delivers _DIED once the process is gone
        if message is _DIED:
            self._fail(WorkerDiedError(f"model worker died: {self._worker.exit_cause}"))
        kind, _, payload = message
        if kind == "piece":
            self._t_last = time.perf_counter()
            if not self._pieces:
                self._t_first = self._t_last
            self._pieces += 1
            return str(payload)
        if kind == "done":
            self._end(payload)
            raise StopIteration
        # kind == "error": the worker is fine, the generation failed (e.g. the prompt did not fit)
        self._end(payload.get("usage"))
        raise _rebuild_error(payload)

    def close(self) -> None:
        if self._finished:
            return
        if not self._locked:  # never started: nothing ran
            self._finished = True
            return
        assert self._inbox is not None and self._worker is not None
        self._worker.send("cancel", self._rid)
        deadline = time.monotonic() + self._owner.settings.worker_stall_s
        while True:  # drain to the generation's end: the worker reports what it spent
            try:
                message = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._worker.kill("killed by the hang watchdog: a cancelled generation did not stop")
                continue
            if message is _DIED:
                self._end(self._estimated_usage("cancelled"))
                return
            if message[0] in ("done", "error"):
                payload = message[2]
                self._end(payload if message[0] == "done" else payload.get("usage"), cancelled=True)
                return

    def __del__(self) -> None:
        # an abandoned generation must not keep the model locked; never wait here (a finalizer may run on any
        # thread, the reader's included): the worker stops at its next token and runs the next job after it
        if self._locked and not self._finished and self._worker is not None:
            self._worker.send("cancel", self._rid)
            self._release()

    # -- internals ---------------------------------------------------------------------------------------
    def _begin(self) -> None:
        owner = self._owner
        t_call = time.perf_counter()
        owner._lock.acquire()
        self._locked = True
        try:
            worker = owner._worker()  # may wait for a restart: that wait is queue wait, not compute
        except BaseException:
            self._locked = False
            self._finished = True
            owner._lock.release()
            raise
        self._worker = worker
        self._rid = next(owner._ids)
        self._inbox = worker.open(self._rid)
        self._queue_wait = time.perf_counter() - t_call
        self._t_sent = time.perf_counter()
        self._wall_sent = time.time()
        worker.send("stream", self._rid, self._request)

    def _end(self, usage: Usage | None, *, cancelled: bool = False) -> None:
        if usage is not None:
            usage = dataclasses.replace(usage, queue_wait_s=self._queue_wait)
            if cancelled and usage.finish_reason not in ("cancelled", "error"):
                usage = dataclasses.replace(usage, finish_reason="cancelled")
        self.usage = usage
        self._release()

    def _fail(self, exc: GenerationError) -> None:
        self._end(self._estimated_usage("error"))
        raise exc

    def _estimated_usage(self, finish: str) -> Usage:
        """The worker died before reporting its usage: bill what the parent's clock saw it work. A crash ends
        work in progress (request to death); a worker the watchdog killed for making no progress is billed
        to its last piece only (the stall was waiting, not work)."""
        now = time.perf_counter()
        assert self._worker is not None
        if "watchdog" in str(self._worker.exit_cause):
            now = self._t_last or self._t_sent
        first = self._t_first or now
        info = self._owner.info

        def wall(t: float) -> float:  # a perf_counter instant on the wall clock
            return self._wall_sent + (t - self._t_sent)

        return Usage(
            prompt_tokens=0,
            completion_tokens=self._pieces,
            queue_wait_s=self._queue_wait,
            prefill_s=first - self._t_sent,
            decode_s=now - first,
            model_id=str(info.get("model_id", "")),
            device=str(info.get("device", "")),
            finish_reason=finish,
            engine="inprocess",
            replica=self._owner.config.replica or "",
            sent_at=self._wall_sent,
            first_token_at=wall(self._t_first) if self._t_first else None,
            ended_at=wall(now),
            estimated=True,
        )

    def _release(self) -> None:
        self._finished = True
        if self._worker is not None:
            self._worker.done(self._rid)
        if self._locked:
            self._locked = False
            self._owner._lock.release()


def _rebuild_error(payload: dict[str, Any]) -> ModelError:
    """The worker's exception, as the same class here (GenerationError for anything unknown)."""
    cls = getattr(errors, str(payload.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, ModelError)):
        cls = GenerationError
    return cls(str(payload.get("message")))  # type: ignore[no-any-return]
