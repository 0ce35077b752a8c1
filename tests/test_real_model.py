"""Real-model tier: the bundled GGUF model through the model layer and the whole bot path."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from models.types import ChatMessage, Generation
from usage.ledger import Ledger

pytestmark = pytest.mark.real_model


def test_streaming_reports_measured_usage(real_model: Any) -> None:
    gen = real_model.stream(
        [
            ChatMessage("system", "You are a support assistant."),
            ChatMessage("user", "How do I reset my password?"),
        ],
        max_tokens=24,
    )
    pieces = list(gen)
    assert len(pieces) > 3 and "".join(pieces).strip()
    u = gen.usage
    assert u is not None
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens <= 24
    assert u.prefill_s > 0 and u.decode_s > 0 and u.compute_s == pytest.approx(u.prefill_s + u.decode_s)
    assert u.queue_wait_s >= 0 and u.device == "CPU" and u.model_id.startswith("SmolLM2-135M")


def test_greedy_generation_is_reproducible(real_model: Any) -> None:
    msgs = [ChatMessage("user", "Name three colours.")]
    a, _ = real_model.complete(msgs, max_tokens=16)
    b, _ = real_model.complete(msgs, max_tokens=16)
    assert a == b


def test_follow_up_turn_reuses_the_cached_prefix(real_model: Any) -> None:
    first = [ChatMessage("system", "You are a support assistant. " * 10), ChatMessage("user", "Hello")]
    text, u1 = real_model.complete(first, max_tokens=8)
    follow = first + [ChatMessage("assistant", text), ChatMessage("user", "And my bill?")]
    _, u2 = real_model.complete(follow, max_tokens=8)
    assert u2.cached_tokens >= u1.prompt_tokens - 2


def test_queue_wait_is_measured_when_the_model_is_busy(real_model: Any) -> None:
    msgs = [ChatMessage("user", "Tell me a long story about routers.")]
    results: list[Any] = []

    def run() -> None:
        results.append(real_model.complete(msgs, max_tokens=32)[1])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits = sorted(u.queue_wait_s for u in results)
    assert waits[1] > 0.05  # the second caller waited for the first one's generation


class ClockedModel:
    """Wraps a model and measures, with an independent clock, how long each generation ran."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.walls: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self, messages: list[ChatMessage], **kw: Any) -> Generation:
        gen = self.inner.stream(messages, **kw)
        outer = self

        class Timed(Generation):
            usage = None

            def __init__(self) -> None:
                self.t0: float | None = None

            def __next__(self) -> str:
                if self.t0 is None:
                    self.t0 = time.perf_counter()
                try:
                    return next(gen)
                except StopIteration:
                    outer.walls.append(time.perf_counter() - self.t0)
                    self.usage = gen.usage
                    raise

            def close(self) -> None:
                gen.close()

        return Timed()


def test_ledger_compute_seconds_match_an_independent_clock(real_model: Any, data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    clocked = ClockedModel(real_model)
    bot = Bot(model=clocked, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), max_tokens=64)  # type: ignore[arg-type]
    reply = bot.handle_message("clock", "Explain in detail how to set up a new home router and Wi-Fi.")
    conn = sqlite3.connect(db)
    compute_s, status = conn.execute(
        "SELECT compute_s, status FROM requests WHERE request_id = ?", [reply.request_id]
    ).fetchone()
    conn.close()
    assert status == "completed"
    wall = clocked.walls[-1]
    assert compute_s > 0.2
    assert abs(compute_s - wall) / wall < 0.05, (compute_s, wall)


def test_long_real_conversation_never_overflows_the_context(data_dir: Path) -> None:
    from models.llama import LlamaChatModel
    from models.settings import ModelSettings

    small = LlamaChatModel(ModelSettings(n_ctx=512, max_tokens=32, temperature=0.0))
    db = data_dir / "firstline.db"
    bot = Bot(model=small, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), max_tokens=32)
    bot.settings.history_messages = 100
    # distinct questions (the same question again would rightly go to a person); long enough that the
    # history soon exceeds the 512-token context and must be trimmed
    questions = [
        "My router blinks red since this morning, what should I check first?",
        "Why does my invoice list calls to mobile networks separately?",
        "How long is the reset link for a forgotten password valid?",
        "The Wi-Fi signal upstairs is weak, would a repeater help?",
        "When can I leave the contract after the minimum term ends?",
        "The landline is silent although internet works, any idea?",
        "Can I add the TV package to my current tariff later on?",
        "Speed test shows eighty instead of two hundred fifty, normal?",
        "Where in the portal do I change the e-mail address for letters?",
        "Is there a status page listing current outages in Hamburg?",
        "I switched banks recently; where do I enter the new IBAN?",
        "We move to Kiel next month; does the connection come along?",
    ]
    for question in questions:
        reply = bot.handle_message("long", question + " Please explain it step by step in detail.")
        assert reply.route == "model", (question, reply.reason)
    conn = sqlite3.connect(db)
    statuses = [r[0] for r in conn.execute("SELECT status FROM requests")]
    conn.close()
    assert statuses == ["completed"] * 12


def test_generations_from_many_threads_all_compute_on_one_thread(real_model: Any) -> None:
    """llama.cpp's OpenMP keeps a spinning team per calling thread: callers taking turns used to slow
    decoding by up to 40 % on 2 cores, so every step runs on the model's one compute thread."""
    llm = real_model.llama
    seen: list[str] = []
    original = llm.eval

    def recording_eval(tokens: Any) -> None:
        seen.append(threading.current_thread().name)
        original(tokens)

    llm.eval = recording_eval
    callers: list[str] = []

    def ask(i: int) -> None:
        callers.append(threading.current_thread().name)
        real_model.complete([ChatMessage("user", f"Say hello to caller {i}.")], max_tokens=4)

    try:
        threads = [threading.Thread(target=ask, args=(i,), name=f"caller-{i}") for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        del llm.eval
    assert sorted(callers) == ["caller-0", "caller-1", "caller-2"]
    assert seen and set(seen) == {"llama-compute"}


def test_an_abandoned_generation_releases_the_model(real_model: Any) -> None:
    import gc

    gen = real_model.stream([ChatMessage("user", "Write a long story about a router.")], max_tokens=64)
    assert next(gen)
    del gen  # the caller went away mid-answer without closing it
    gc.collect()
    done = threading.Event()

    def again() -> None:
        real_model.complete([ChatMessage("user", "Name a colour.")], max_tokens=4)
        done.set()

    threading.Thread(target=again, daemon=True).start()
    assert done.wait(60), "the model stayed locked by the abandoned generation"


def test_hand_overs_to_the_compute_thread_are_billed(real_model: Any) -> None:
    """The model is the request's from the first step to the last: a slow hand-over between the caller and
    the compute thread is part of its compute time (it used to be lost: the ledger ran 5 % under an
    outside clock on a busy machine), while time the caller holds a piece stays out."""
    inner = real_model.compute

    def slow_hand_over(fn: Any) -> Any:
        time.sleep(0.01)
        return inner(fn)

    real_model.compute = slow_hand_over
    try:
        gen = real_model.stream([ChatMessage("user", "Name five colours, one per line.")], max_tokens=16)
        t0 = time.perf_counter()
        pieces = list(gen)
        wall = time.perf_counter() - t0
    finally:
        real_model.compute = inner
    u = gen.usage
    assert u is not None and len(pieces) > 3
    assert u.compute_s >= 0.01 * len(pieces)  # every hand-over is in
    assert abs(u.queue_wait_s + u.compute_s - wall) / wall < 0.05, (u, wall)
