"""Plain types shared by every model implementation (no I/O)."""

from __future__ import annotations

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
class Usage:
    """What one generation cost, measured around llama.cpp by us (its own timings read zero)."""

    prompt_tokens: int
    completion_tokens: int
    queue_wait_s: float  # waiting for the model lock
    prefill_s: float  # lock acquired -> first token sampled (prompt processing)
    decode_s: float  # first token -> last token, excluding time the consumer held the stream
    model_id: str
    device: str
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (shared prefix)
    finish_reason: str = "stop"  # stop | length | cancelled | error

    @property
    def compute_s(self) -> float:
        """Seconds the model computed for this request (prefill + decode)."""
        return self.prefill_s + self.decode_s


class Generation(Iterator[str]):
    """A streaming generation: iterate for text pieces; `usage` is set once it is exhausted or closed."""

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
