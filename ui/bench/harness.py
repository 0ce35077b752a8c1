"""The harness the model sections share: the model loaded once per run, the bot composed as in production
on a fresh data directory, one timed chat turn, and a clock around the model's generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from bot.types import Delta, Reply
from models.types import ChatMessage, ChatModel, Generation
from ui.bench.core import Bench, Shared, decode_rate

# A question that makes the model write long (so every run reaches the token budget) and that no FAQ
# entry answers, so the full model path runs.
LONG_QUESTION = (
    "Please write a very long and detailed step-by-step guide, with at least twenty numbered steps, "
    "for setting up a new home router, the Wi-Fi network and every device in a family home."
)
FOLLOW_UP_TURNS = (
    "My new router shows a blinking orange light after I plugged it in. What does that mean?",
    "I restarted it twice and the light is still orange. Which cable should I check first?",
)
FOLLOW_UP_QUESTION = "Should the grey cable go into the DSL port or the LAN port of the router?"
TOPIC_CHANGE_QUESTION = "Another thing: can I move my contract to my new flat in another city next month?"
OTHER_QUESTION = "The Wi-Fi in my kitchen is much weaker than in the living room. How can I improve it?"


# long answers on purpose: the concurrency sections (server, engines) measure generation, not routing
QUESTIONS = (
    "Explain in detail how I can make my home Wi-Fi faster and more reliable.",
    "Describe step by step how to set up the Lumebox 7 router after unpacking it.",
    "My router keeps losing the connection every evening. What can I try, step by step?",
    "Give me a detailed list of things to try when video calls keep freezing at home.",
    "Explain in detail how to protect my home network from strangers and phishing.",
    "Describe everything I should do before and after moving my internet line to a new flat.",
)


# -- an outside clock around the model -------------------------------------------------------------
class ClockedModel:
    """Delegates to the real model; records each prompt and times each generation with its own clock."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[ChatMessage]] = []
        self.clocks: list[GenerationClock] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self, messages: list[ChatMessage], **kwargs: Any) -> Generation:
        self.calls.append(list(messages))
        clock = GenerationClock()
        self.clocks.append(clock)
        return _ClockedGeneration(self.inner.stream(messages, **kwargs), clock)


@dataclass
class GenerationClock:
    """What the outside clock saw: time inside the model's generator, and first call to last return."""

    inside_s: float = 0.0
    first: float | None = None
    last: float | None = None

    @property
    def wall_s(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


class _ClockedGeneration(Generation):
    def __init__(self, inner: Generation, clock: GenerationClock) -> None:
        self.inner = inner
        self.clock = clock
        self.usage = None

    def __next__(self) -> str:
        t0 = time.perf_counter()
        if self.clock.first is None:
            self.clock.first = t0
        try:
            return next(self.inner)
        except StopIteration:
            self.usage = self.inner.usage
            raise
        finally:
            t1 = time.perf_counter()
            self.clock.inside_s += t1 - t0
            self.clock.last = t1

    def close(self) -> None:
        t0 = time.perf_counter()
        self.inner.close()
        self.clock.inside_s += time.perf_counter() - t0
        self.usage = self.inner.usage


# -- shared set-up ------------------------------------------------------------------------------------
def ensure_model(bench: Bench, shared: Shared) -> Any:
    """The run's one LlamaChatModel, loaded with the environment's settings (as `firstline serve` does)."""
    if shared.model is None:
        from models.llama import LlamaChatModel
        from models.settings import ModelSettings

        bench.progress("loading the model ...")
        settings = ModelSettings()
        if bench.options.threads:
            settings.n_threads = bench.options.threads
        shared.model = LlamaChatModel(settings)
        m = shared.model
        llm = m.llama
        bench.details["model"] = {
            "path": str(m.path),
            "model_id": m.model_id,
            "device": m.device,
            "file_bytes": m.path.stat().st_size,
            "tensor_bytes": int(llm._model.size()),
            "n_params": int(llm._model.n_params()),
            "load_s": round(m.load_s, 3),
            **m.load_kwargs,
            "sampling": {
                k: getattr(m.settings, k) for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")
            },
        }
    return shared.model


def bot_for(bench: Bench, model: Any, name: str, *, guarded: bool = False) -> Any:
    """Services composed as in production (ui.app) on a fresh data directory, with `model`.

    Unless `guarded`, the bot generates without the grounding guard: these figures are about the model
    path (decode speed from streamed pieces, compute against an outside clock); the guard's own cost is
    the `guard` section's (ui/bench/guard.py)."""
    from bot.answering import AnswerModes
    from ui.app import build_services

    services = build_services(bench.workspace(name), model=cast(ChatModel, model))
    if not guarded:
        services.bot.answers = AnswerModes("generate", services.knowledge, guard=False)
    if hasattr(services.bot.settings, "model_timeout_s"):
        # a busy machine can slow a run far beyond the production timeout; a benchmark wants the timing
        services.bot.settings.model_timeout_s = max(services.bot.settings.model_timeout_s, 900.0)
    bench.details.setdefault("_services", []).append(services)
    return services


def close_services(bench: Bench) -> None:
    for services in bench.details.pop("_services", []):
        services.close()


@dataclass
class Turn:
    """One customer turn through Bot.stream_message, timed from the call to each streamed piece."""

    started: float
    piece_times: list[float] = field(default_factory=list)
    reply: Reply | None = None
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The model answered (not an error, a timeout or another route)."""
        return self.row.get("status") == "completed" and self.row.get("route") == "model"

    @property
    def ttft_s(self) -> float | None:
        return self.piece_times[0] - self.started if self.piece_times and self.ok else None

    @property
    def tokens(self) -> int:
        return int(self.row.get("completion_tokens") or 0)

    @property
    def decode_tps(self) -> float | None:
        return decode_rate(self.piece_times, self.tokens) if self.ok else None


def run_turn(services: Any, conversation_id: str, text: str, on_piece: Callable[[], None] | None = None) -> Turn:
    """Send one message through the full chat path and time it."""
    turn = Turn(time.perf_counter())
    for event in services.bot.stream_message(conversation_id, text, "en"):
        if isinstance(event, Delta):
            turn.piece_times.append(time.perf_counter())
            if on_piece is not None:
                on_piece()
        elif isinstance(event, Reply):
            turn.reply = event
    if turn.reply is not None and turn.reply.request_id:
        turn.row = services.ledger.get(turn.reply.request_id) or {}
    return turn


def timed_stream(model: Any, messages: list[ChatMessage], tokens: int) -> tuple[float | None, float | None, int]:
    """(time to first piece in s, decode tok/s, tokens) of one greedy generation."""
    t0 = time.perf_counter()
    gen = model.stream(messages, max_tokens=tokens, temperature=0.0)
    times: list[float] = []
    for _ in gen:
        times.append(time.perf_counter())
    usage = gen.usage
    n = usage.completion_tokens if usage is not None else len(times)
    return (times[0] - t0 if times else None), decode_rate(times, n), n
