"""ScriptedChatModel: a deterministic stand-in for the real model in fast tests and load tests.

Replies are taken from a queue (`enqueue`); with an empty queue it echoes a fixed answer. Every call is
recorded in `history`. Usage is deterministic: token counts from whitespace splitting, and an optional
`seconds_per_token` makes it spend real time so timing code paths are exercised.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field

from models.errors import ContextOverflowError, GenerationError
from models.types import ChatMessage, Generation, Usage, inprocess_replica


@dataclass
class ScriptedCall:
    """One recorded call to the fake model."""

    messages: list[ChatMessage]
    max_tokens: int | None
    grammar: str | None


@dataclass
class ScriptedChatModel:
    """A fake ChatModel: scripted answers, recorded calls, deterministic usage."""

    default_answer: str = "This is a scripted answer."
    seconds_per_token: float = 0.0
    context_size: int = 2048
    model_name: str = "scripted-fake"
    replica: str = ""  # Usage.replica (default: this process, types.inprocess_replica)
    history: list[ScriptedCall] = field(default_factory=list)
    _queue: deque[str | BaseException] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_id(self) -> str:
        return self.model_name

    @property
    def device(self) -> str:
        return "CPU"

    @property
    def n_ctx(self) -> int:
        return self.context_size

    def enqueue(self, *answers: str | BaseException) -> None:
        """Queue answers (or exceptions to raise) for the next calls, in order."""
        self._queue.extend(answers)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages) + 3

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        self.history.append(ScriptedCall(list(messages), max_tokens, grammar))
        script = self._queue.popleft() if self._queue else self.default_answer
        return _ScriptedGeneration(self, messages, script, max_tokens)


class _ScriptedGeneration(Generation):
    def __init__(
        self,
        owner: ScriptedChatModel,
        messages: list[ChatMessage],
        script: str | BaseException,
        limit: int | None,
    ) -> None:
        self.usage = None
        self._inner = self._run(owner, messages, script, limit)

    def __next__(self) -> str:
        return next(self._inner)

    def close(self) -> None:
        self._inner.close()

    def _run(
        self,
        owner: ScriptedChatModel,
        messages: list[ChatMessage],
        script: str | BaseException,
        limit: int | None,
    ) -> Generator[str, None, None]:
        t_call = time.perf_counter()
        with owner._lock:
            t_acq = time.perf_counter()
            wall_acq, wall_first = time.time(), None
            prompt = owner.count_tokens(messages)
            words: list[str] = []
            finish = "stop"
            t_first = t_acq
            try:
                if prompt >= owner.n_ctx:
                    raise ContextOverflowError(f"prompt of {prompt} tokens exceeds {owner.n_ctx}")
                if isinstance(script, BaseException):
                    raise GenerationError(str(script)) from script
                pieces = script.split(" ")
                if limit is not None and len(pieces) > limit:
                    pieces, finish = pieces[:limit], "length"
                for i, word in enumerate(pieces):
                    if owner.seconds_per_token:
                        time.sleep(owner.seconds_per_token)
                    if i == 0:
                        t_first, wall_first = time.perf_counter(), time.time()
                    words.append(word)
                    yield word if i == 0 else " " + word
            except GeneratorExit:
                finish = "cancelled"
                raise
            except Exception:
                finish = "error"
                raise
            finally:
                t_end = time.perf_counter()
                self.usage = Usage(
                    prompt_tokens=prompt,
                    completion_tokens=len(words),
                    queue_wait_s=t_acq - t_call,
                    prefill_s=t_first - t_acq,
                    decode_s=t_end - t_first,
                    model_id=owner.model_id,
                    device=owner.device,
                    finish_reason=finish,
                    engine="scripted",
                    replica=owner.replica or inprocess_replica(),
                    sent_at=wall_acq,
                    first_token_at=wall_first,
                    ended_at=time.time(),
                )
