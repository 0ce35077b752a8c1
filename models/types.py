"""Plain types shared by every model implementation (no I/O), and the engine-neutral readiness check."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: Role
    content: str


@dataclass(frozen=True)
class EngineTimings:
    """An engine's own per-request figures, raw, exactly as it reported them (milliseconds, token counts).

    llama-server reports `timings` with each answer: `prompt_n`/`prompt_ms` (prompt tokens it evaluated and
    how long that took; tokens reused from the slot's cache are `cache_n`, not in `prompt_n`) and
    `predicted_n`/`predicted_ms` (tokens generated, decode time). These are wall-clock intervals *inside the
    engine*: requests that share decode steps (parallel slots, continuous batching) each report the shared
    steps in full, so summing them over concurrent requests bills the device several times over (llama.cpp
    #9505). They are kept for audit and for processor-sharing billing, never summed as compute.
    vLLM's OpenAI API reports no timings, only token counts (`usage.prompt_tokens`,
    `usage.completion_tokens`, `usage.prompt_tokens_details.cached_tokens`): then the `*_ms` fields are None.
    """

    prompt_n: int | None = None
    prompt_ms: float | None = None
    predicted_n: int | None = None
    predicted_ms: float | None = None
    cache_n: int | None = None
    source: str = ""  # "llama-server" (its `timings`) | "openai-usage" (token counts only, e.g. vLLM)


@dataclass(frozen=True)
class Usage:
    """What one generation cost, as firstline measured it (plus, for served engines, the engine's own figures).

    Timing fields, all in seconds:

    * `queue_wait_s`: waiting for the model (the in-process lock; for served engines, the bounded queue in
      front of the replicas until a slot was free),
    * `prefill_s`: model acquired (in-process) / request sent (served engines) -> first token,
    * `decode_s`: first token -> last token. In-process this excludes time the consumer held the stream;
      for served engines it is firstline's wall clock, so concurrent requests on one replica overlap here
      too: billing must not sum them (see `replica` and the instants below).

    Fields for billing under batching (issue #16; every engine fills them):

    * `engine`: which engine served it: "inprocess" (llama-cpp-python, in its worker or in this process),
      "llama-server" (a llama-server, local or in FIRSTLINE_ENGINE_URLS), "vllm", "openai" (another
      OpenAI-compatible server), "scripted" (the test fake).
    * `replica`: the timeline the request's compute ran on, one per independently computing model instance:
      "inprocess:<host>:<web process pid>" in-process; the replica's base URL for served engines (e.g.
      "http://10.0.0.5:8080"). Requests with the same `replica` share that device; requests on different
      replicas never do.
    * `sent_at`, `first_token_at`, `ended_at`: wall-clock instants (Unix epoch seconds, `time.time()`) as
      firstline saw them: the request handed to the engine (HTTP request sent / model lock acquired), the first
      generated piece received, and the end (last byte and usage received, the cancel done, or the failure
      noticed). None when it never got that far (e.g. `first_token_at` of a request that failed in prefill).
      `ended_at - sent_at` is the request's active interval on its replica's timeline.
    * `timings`: the engine's raw per-request figures (EngineTimings), None where the engine reports none
      (in-process: our own prefill/decode are exact, nothing overlaps; a request that failed before the
      engine answered).
    * `estimated`: True when the engine reported nothing for this request (failed or cancelled before its
      usage came back): the figures are firstline's clock only.
    * `attempt`: 1 for the first try; a request retried on another replica (only before any piece reached
      the caller) reports its failed tries separately (Generation.failed_attempts), each with its `error`.
    """

    prompt_tokens: int
    completion_tokens: int
    queue_wait_s: float  # waiting for the model lock / a free replica slot
    prefill_s: float  # model acquired or request sent -> first token sampled (prompt processing)
    decode_s: float  # first token -> last token, excluding time the consumer held the stream (in-process)
    model_id: str
    device: str
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (shared prefix)
    finish_reason: str = "stop"  # stop | length | cancelled | error
    engine: str = ""
    replica: str = ""
    sent_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    timings: EngineTimings | None = None
    estimated: bool = False
    attempt: int = 1
    error: str = ""  # why this attempt failed (finish_reason "error"), for its ledger row

    @property
    def compute_s(self) -> float:
        """Seconds the model computed for this request (prefill + decode)."""
        return self.prefill_s + self.decode_s


class Generation(Iterator[str]):
    """A streaming generation: iterate for text pieces; `usage` is set once it is exhausted or closed.

    `failed_attempts` (optional; read it with `getattr(gen, "failed_attempts", ())`): the Usage of each
    earlier try of this request that failed before any piece was yielded and was retried on another replica,
    in order. Each is billed as its own ledger row (status `error`, its `error` as the cause).
    """

    usage: Usage | None

    def close(self) -> None:  # pragma: no cover - protocol
        """Stop generating early and release the model."""


class ChatModel(Protocol):
    """Anything that can answer a chat prompt: the llama.cpp model or a scripted fake."""

    @property
    def model_id(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def n_ctx(self) -> int: ...

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the formatted prompt for these messages occupies (with the generation prompt)."""
        ...

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        """Start generating an answer; the lock is taken on first iteration."""
        ...


@dataclass(frozen=True)
class ReplicaState:
    """One replica of a served engine as the pool sees it (for /ready, /metrics and the admin)."""

    url: str
    healthy: bool
    slots: int
    in_flight: int
    detail: str = ""


@dataclass(frozen=True)
class Readiness:
    """Can the model answer now? `detail` says why not (or what answers); `replicas` for served engines."""

    ready: bool
    detail: str
    replicas: tuple[ReplicaState, ...] = ()
    queued: int = 0  # requests waiting for a free replica slot


def readiness(model: object) -> Readiness:
    """The model's readiness: its own `readiness()` where it has one (engines, workers), else ready."""
    check = getattr(model, "readiness", None)
    if callable(check):
        result = check()
        if isinstance(result, Readiness):
            return result
    return Readiness(True, f"{type(model).__name__} loaded in this process")


def inprocess_replica(pid: int | None = None) -> str:
    """The `replica` of a model computing inside a web process (or its worker): one timeline per process."""
    return f"inprocess:{socket.gethostname()}:{pid or os.getpid()}"
