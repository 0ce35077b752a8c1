"""OnDemandModel: a ChatModel that loads its model on first use and unloads it after an idle time.

A GPU billed per instance-hour costs money while a model is loaded, busy or not; unloading after
`idle_s` seconds without a request trades a cold start for idle cost. The wrapper counts requests in
flight (a generation holds the model until it is exhausted or closed), so a model is never unloaded
mid-answer. A background thread unloads it once nothing has used it for `idle_s` seconds.

Lifecycle events go to `on_event(kind, at, seconds)` (the model layer does not import `usage`):
`load_start` (seconds 0), `load_end` (how long loading took), `load_failed` (how long the failed attempt
took) and `unload` (how long the model was provisioned, from load start to unload). A failing callback
is logged and ignored: accounting must not break answering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from models.errors import GenerationError, ModelUnavailableError
from models.types import ChatMessage, ChatModel, Generation, Readiness, readiness

log = logging.getLogger(__name__)

T = TypeVar("T")
EventSink = Callable[[str, datetime, float], None]


class OnDemandModel:
    """Wraps a model factory: load on first use, unload after `idle_s` seconds unused."""

    def __init__(
        self,
        factory: Callable[[], ChatModel],
        *,
        idle_s: float = 900.0,
        on_event: EventSink | None = None,
        model_id: str = "",
        device: str = "",
        n_ctx: int | None = None,
    ) -> None:
        if idle_s <= 0:
            raise ValueError("idle_s must be positive")
        self.factory = factory
        self.idle_s = idle_s
        self.on_event = on_event
        self._hint = {"model_id": model_id, "device": device}
        self._n_ctx = n_ctx
        self._model: ChatModel | None = None
        self._loaded_at = 0.0  # monotonic time the current load started
        self._last_used = 0.0
        self._in_use = 0
        self._stopped = False
        self.loads = 0
        self.unloads = 0
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="ondemand-idle", daemon=True)
        self._watcher.start()

    # -- the ChatModel protocol --------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._hint["model_id"] or self._with_model(lambda m: m.model_id)

    @property
    def device(self) -> str:
        return self._hint["device"] or self._with_model(lambda m: m.device)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx if self._n_ctx is not None else self._with_model(lambda m: m.n_ctx)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return self._with_model(lambda m: m.count_tokens(messages))

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        model = self._acquire()
        try:
            inner = model.stream(messages, max_tokens=max_tokens, temperature=temperature, grammar=grammar)
        except BaseException:
            self._release()
            raise
        return _HeldGeneration(inner, self._release)

    def readiness(self) -> Readiness:
        """The loaded model's readiness; unloaded, ready (it loads at the next request)."""
        with self._cond:
            model = self._model
        if model is None:
            return Readiness(True, "the model is unloaded; it loads on demand at the next request")
        return readiness(model)

    # -- state -------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Is the wrapped model in memory right now?"""
        with self._cond:
            return self._model is not None

    @property
    def in_use(self) -> int:
        """Requests holding the model right now."""
        with self._cond:
            return self._in_use

    def unload(self) -> bool:
        """Unload now if nothing is using the model; returns whether it was unloaded."""
        with self._cond:
            if self._model is None or self._in_use:
                return False
            model, self._model = self._model, None
            loaded_for = time.monotonic() - self._loaded_at
        self._drop(model, loaded_for)
        return True

    def close(self) -> None:
        """Stop the idle watcher and unload the model (even if in use: the process is stopping)."""
        with self._cond:
            self._stopped = True
            model, self._model = self._model, None
            loaded_for = time.monotonic() - self._loaded_at
            self._cond.notify_all()
        if model is not None:
            self._drop(model, loaded_for)
        self._watcher.join(timeout=5)

    # -- internals ---------------------------------------------------------------------------------
    def _with_model(self, use: Callable[[ChatModel], T]) -> T:
        model = self._acquire()
        try:
            return use(model)
        finally:
            self._release()

    def _acquire(self) -> ChatModel:
        with self._cond:
            if self._stopped:
                raise ModelUnavailableError("the on-demand model is closed (the process is stopping)")
            self._in_use += 1
        try:
            return self._ensure_loaded()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        with self._cond:
            self._in_use = max(0, self._in_use - 1)
            self._last_used = time.monotonic()
            self._cond.notify_all()

    def _ensure_loaded(self) -> ChatModel:
        with self._load_lock:
            with self._cond:
                if self._model is not None:
                    return self._model
            started = time.monotonic()
            self._emit("load_start", 0.0)
            try:
                model = self.factory()
            except BaseException as exc:
                self._emit("load_failed", time.monotonic() - started)
                if isinstance(exc, GenerationError) or not isinstance(exc, Exception):
                    raise
                # whatever the factory raised (a bad file, out of memory, a GPU that is busy), the caller sees
                # a model failure it handles: the bot escalates and finishes the request's ledger row
                cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ModelUnavailableError(f"the model could not be loaded: {cause}") from exc
            self._emit("load_end", time.monotonic() - started)
            self._hint = {"model_id": model.model_id, "device": model.device}
            self._n_ctx = model.n_ctx
            with self._cond:
                self._model, self._loaded_at = model, started
                self._last_used = time.monotonic()
                self.loads += 1
                self._cond.notify_all()
            log.info("loaded %s on demand in %.2fs", model.model_id, time.monotonic() - started)
            return model

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._model is None or self._in_use:
                    self._cond.wait()
                    continue
                remaining = self._last_used + self.idle_s - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                model, self._model = self._model, None
                loaded_for = time.monotonic() - self._loaded_at
                self._cond.release()
                try:
                    self._drop(model, loaded_for)
                finally:
                    self._cond.acquire()

    def _drop(self, model: ChatModel, loaded_for: float) -> None:
        close = getattr(model, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("closing the unloaded model failed")
        del model
        self.unloads += 1
        self._emit("unload", loaded_for)
        log.info("unloaded the model after %.1fs provisioned", loaded_for)

    def _emit(self, kind: str, seconds: float) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, datetime.now(UTC), seconds)
        except Exception:
            log.exception("on-demand model event callback failed (%s)", kind)


class _HeldGeneration(Generation):
    """A generation that releases the on-demand model once exhausted, failed or closed."""

    def __init__(self, inner: Generation, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release_fn: Callable[[], None] | None = release
        self.usage = None

    def __next__(self) -> str:
        try:
            return next(self._inner)
        except BaseException:
            self.usage = self._inner.usage
            self._release()
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self.usage = self._inner.usage
            self._release()

    def _release(self) -> None:
        release, self._release_fn = self._release_fn, None
        if release is not None:
            release()

    def __del__(self) -> None:  # a generation dropped without close() must not pin the model forever
        self._release()
