"""Benchmark section: time to first token of a follow-up turn, with and without prompt caching.

Two families, each with four variants (same conversation continues / cold / another conversation in
between with the state cache off / on):

* the chat path: Bot.stream_message, exactly as customers are answered, for a follow-up on the same
  topic and one on a new topic; every variant starts from an empty cache (its conversation is identical
  to the other variants', so nothing may be reused across them);
* the model with a stable prefix: LlamaChatModel.stream on [system prompt, history, question], the
  layout prefix caching is built for, to show what the KV cache and the state cache can do.

The bot sends each question with the knowledge-base excerpts retrieved for it and keeps earlier questions'
excerpts in place (bot.conversation.Bot.build_messages), so a follow-up's prompt extends the previous
turn's and only the new question and its excerpts are prefilled. (Until 2026-11-28 the excerpts of the
current question sat in the system message, in front of the history, and a follow-up shared only the
99-token base system prompt with the previous turn: 1.1x.)
"""

from __future__ import annotations

import time
from typing import Any

from models.types import ChatMessage
from ui.bench.core import Bench, Shared, fmt, median, ratio
from ui.bench.harness import (
    FOLLOW_UP_QUESTION,
    FOLLOW_UP_TURNS,
    OTHER_QUESTION,
    TOPIC_CHANGE_QUESTION,
    Turn,
    bot_for,
    close_services,
    ensure_model,
    run_turn,
)

VARIANTS = {
    "same_conversation": "same conversation continues (live KV cache)",
    "cold": "uncached: KV cache and saved states cleared",
    "interleaved_no_state_cache": "another conversation in between, state cache off",
    "interleaved_state_cache": "another conversation in between, state cache on",
}


def _intervene(model: Any, variant: str, other: Any) -> None:
    """What happens between the set-up turns and the measured follow-up."""
    states = model.state_cache
    if variant == "cold":
        model.reset_cache()
    elif variant.startswith("interleaved"):
        states.enabled = variant == "interleaved_state_cache"
        other()


def follow_up_cache(bench: Bench, shared: Shared) -> None:
    """Both families: follow-up TTFT per variant, speedups, and what a saved state costs."""
    model = ensure_model(bench, shared)
    try:
        chat = chat_path_runs(bench, model, FOLLOW_UP_QUESTION, tuple(VARIANTS), bench.options.cache_reps)
        topic = chat_path_runs(bench, model, TOPIC_CHANGE_QUESTION, ("same_conversation", "cold"), 2)
        stable = stable_prefix_runs(bench, model)
    finally:
        model.state_cache.enabled = True
    families = (
        ("chat", "chat path", chat),
        ("chat_topic", "chat path, new topic", topic),
        ("model", "model, stable prefix", stable),
    )
    for family, where, results in families:
        ttft: dict[str, float | None] = {}
        for variant, label in VARIANTS.items():
            if not results.get(variant):
                ttft[variant] = None
                continue
            ttft[variant] = median([t for t, _, _ in results[variant]])
            bench.add(f"cache.{family}.ttft.{variant}", _ms(ttft[variant]), "ms", f"{where}: {label}")
            bench.add(
                f"cache.{family}.cached_tokens.{variant}",
                median([c for _, c, _ in results[variant]]),
                "tokens",
                f"{where}: prompt tokens reused, {VARIANTS[variant].split(' (')[0]}",
            )
        bench.add(
            f"cache.{family}.prompt_tokens",
            median([n for _, _, n in results["cold"]]),
            "tokens",
            f"{where}: follow-up prompt length",
        )
        bench.add(
            f"cache.{family}.speedup.same_conversation",
            ratio(ttft["cold"], ttft["same_conversation"]),
            "x",
            f"{where}: uncached / cached TTFT, same conversation",
        )
        bench.add(
            f"cache.{family}.speedup.state_cache",
            ratio(ttft["interleaved_no_state_cache"], ttft["interleaved_state_cache"]),
            "x",
            f"{where}: another conversation in between, state cache off / on",
        )
    explain(bench)
    state_cost(bench, model)


def chat_path_runs(
    bench: Bench, model: Any, question: str, variants: tuple[str, ...], reps: int
) -> dict[str, list[tuple[float | None, float, float]]]:
    """(ttft_s, cached tokens, prompt tokens) of the measured follow-up through Bot.stream_message."""
    services = bot_for(bench, model, f"cache-{abs(hash(question)) % 10_000}")
    bot = services.bot
    out: dict[str, list[tuple[float | None, float, float]]] = {k: [] for k in variants}
    try:
        for r in range(reps):
            for k, variant in enumerate(variants):
                conv = f"bench-cache-{variant}-{r}"
                model.state_cache.enabled = True
                model.reset_cache()  # nothing left from the identical conversations of other variants
                bot.max_tokens = 32
                for text in FOLLOW_UP_TURNS:
                    run_turn(services, conv, text)

                def other(r: int = r, k: int = k) -> None:
                    run_turn(services, f"bench-cache-other-{r}-{k}", OTHER_QUESTION)

                _intervene(model, variant, other)
                bot.max_tokens = 8
                turn: Turn = run_turn(services, conv, question)
                model.state_cache.enabled = True
                out[variant].append(
                    (turn.ttft_s, float(turn.row.get("cached_tokens") or 0), float(turn.row.get("prompt_tokens") or 0))
                )
        bench.progress(f"follow-up turns, chat path: {reps} runs x {len(variants)} variants")
    finally:
        close_services(bench)
    return out


def stable_prefix_runs(bench: Bench, model: Any) -> dict[str, list[tuple[float | None, float, float]]]:
    """The same through LlamaChatModel.stream with [system, history, question] and no retrieved excerpts."""
    from bot import prompts

    system = ChatMessage("system", prompts.system_prompt("en", "Lumenet"))
    out: dict[str, list[tuple[float | None, float, float]]] = {k: [] for k in VARIANTS}
    for r in range(bench.options.cache_reps):
        for k, variant in enumerate(VARIANTS):
            model.state_cache.enabled = True
            model.reset_cache()  # nothing left from the identical conversations of other variants
            messages = [system]
            for text in FOLLOW_UP_TURNS:
                messages.append(ChatMessage("user", text))
                answer, _ = model.complete(messages, max_tokens=48)
                messages.append(ChatMessage("assistant", answer.strip()))

            def other(r: int = r, k: int = k) -> None:
                model.complete([system, ChatMessage("user", OTHER_QUESTION)], max_tokens=32)

            _intervene(model, variant, other)
            gen = model.stream([*messages, ChatMessage("user", FOLLOW_UP_QUESTION)], max_tokens=8)
            t0 = time.perf_counter()
            next(gen, None)
            ttft = time.perf_counter() - t0
            for _ in gen:
                pass
            model.state_cache.enabled = True
            usage = gen.usage
            out[variant].append(
                (ttft, float(usage.cached_tokens if usage else 0), float(usage.prompt_tokens if usage else 0))
            )
    bench.progress(f"follow-up turns, stable prefix: {bench.options.cache_reps} runs x {len(VARIANTS)} variants")
    return out


def explain(bench: Bench) -> None:
    v = bench.value
    chat_same, chat_cold = v("cache.chat.ttft.same_conversation"), v("cache.chat.ttft.cold")
    shared_tokens = v("cache.chat.cached_tokens.same_conversation")
    n_chat = v("cache.chat.prompt_tokens")
    bench.note(
        f"Chat path, follow-up on the same topic: the prompt of {fmt(n_chat, 0)} tokens reuses "
        f"{fmt(shared_tokens, 0)} of them from the previous turn ({fmt(chat_same, 0)} ms to the first token "
        f"against {fmt(chat_cold, 0)} ms uncached). The bot builds the prompt as [base system prompt] [earlier "
        f"questions with the excerpts they were sent with, earlier answers] [excerpts for this question + "
        f"question]; an excerpt already in the prompt is named, not repeated. Only the new question and its new "
        f"excerpts are prefilled."
    )
    bench.note(
        f"Stable prefix (model level, [system prompt] [history] [question], no excerpts): the follow-up starts in "
        f"{fmt(v('cache.model.ttft.same_conversation'), 0)} ms instead of {fmt(v('cache.model.ttft.cold'), 0)} ms "
        f"uncached; after another conversation's turn it starts in "
        f"{fmt(v('cache.model.ttft.interleaved_state_cache'), 0)} ms with the state cache "
        f"(FIRSTLINE_PROMPT_CACHE_MB) and {fmt(v('cache.model.ttft.interleaved_no_state_cache'), 0)} ms without."
    )
    bench.note(
        f"Chat path, follow-up on a new topic (different excerpts): the prompt of "
        f"{fmt(v('cache.chat_topic.prompt_tokens'), 0)} tokens shares "
        f"{fmt(v('cache.chat_topic.cached_tokens.same_conversation'), 0)} with the previous turn, so it starts in "
        f"{fmt(v('cache.chat_topic.ttft.same_conversation'), 0)} ms against {fmt(v('cache.chat_topic.ttft.cold'), 0)} "
        f"ms uncached ({fmt(v('cache.chat_topic.speedup.same_conversation'), 1)}x)."
    )
    for family in ("chat", "chat_topic"):
        speedup = v(f"cache.{family}.speedup.same_conversation")
        if speedup is not None and speedup < 2.0:
            bench.details[f"cause.cached_follow_up.{family}"] = (
                f"reuses only {fmt(v(f'cache.{family}.cached_tokens.same_conversation'), 0)} of "
                f"{fmt(v(f'cache.{family}.prompt_tokens'), 0)} prompt tokens: the new question's own excerpts "
                f"must be prefilled (stable-prefix layout without excerpts: "
                f"{fmt(v('cache.model.speedup.same_conversation'), 1)}x)"
            )


def state_cost(bench: Bench, model: Any) -> None:
    """What saving and restoring one conversation's KV state costs."""
    from models import loader

    with model.lock:
        llm = model.llama
        n = int(llm.n_tokens)
        if n < 8:
            return
        tokens = list(llm.input_ids[:n])
        t0 = time.perf_counter()
        state = loader.save_sequence_state(llm)
        t1 = time.perf_counter()
        ok = loader.load_sequence_state(llm, state, tokens)
        t2 = time.perf_counter()
    bench.add("cache.state.tokens", n, "tokens", "saved state length")
    bench.add("cache.state.bytes_per_token", len(state) / n, "B/token", "saved KV state per token")
    bench.add("cache.state.save_ms", (t1 - t0) * 1000, "ms", f"save the state of {n} tokens")
    bench.add("cache.state.restore_ms", (t2 - t1) * 1000 if ok else None, "ms", f"restore {n} tokens")
    bench.add("cache.state.budget_mb", model.settings.prompt_cache_mb, "MiB", "FIRSTLINE_PROMPT_CACHE_MB")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
