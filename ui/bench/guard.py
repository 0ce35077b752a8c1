"""Benchmark section: what the grounding guard costs the customer in waiting (issue #12).

The guard releases a model answer sentence by checked sentence, so the first visible text arrives one
sentence (plus one check) later than the first token did. On the same dev-set questions, each asked in a
new conversation with a cold prompt cache, this section times the first visible text (first streamed
piece, or the whole reply when nothing streamed: a replacement) through Bot.stream_message

- unguarded: `generate` mode with FIRSTLINE_GROUNDING_GUARD off, as before the guard,
- guarded: the default `auto` mode (guard on, extractive answer when the guard rejects),

and the latency of a pure `extractive` answer. Target: guarded first text within 1.5x of unguarded.
The other sections run with the guard off (their figures are about the model path: decode speed from
streamed pieces, ledger accounting against an outside clock).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bot.answering import AnswerModes
from bot.types import Delta, Reply
from ui.bench.core import fmt, median, percentile, ratio
from ui.bench.harness import bot_for, close_services, ensure_model

if TYPE_CHECKING:
    from ui.bench.core import Bench, Shared

QUESTIONS = (
    ("the internet lamp on my router is blinking red what does that mean", "en"),
    ("how do i pair my cordless handset with the router", "en"),
    ("If I want out when my 2 years are up, by when do I have to tell you?", "en"),
    ("can i pay with paypal or visa??", "en"),
    ("Router ist heute gekommen, wie schließe ich den an?", "de"),
    ("Kostet das was, wenn ich mit meinem Anschluss umziehe?", "de"),
    ("Passwort vergessn, wie komm ich wieder rein", "de"),
    ("Im Kinderzimmer hab ich kaum Empfang, was kann man da machen?", "de"),
)
TARGET_RATIO = 1.5


def first_text(services: Any, conversation_id: str, text: str, lang: str) -> tuple[float, Reply | None]:
    """Seconds from sending a message to its first visible text, and the reply."""
    t0 = time.perf_counter()
    first: float | None = None
    reply: Reply | None = None
    for event in services.bot.stream_message(conversation_id, text, lang):
        if first is None and isinstance(event, Delta | Reply):
            first = time.perf_counter() - t0
        if isinstance(event, Reply):
            reply = event
    return (first if first is not None else time.perf_counter() - t0), reply


def guard(bench: Bench, shared: Shared) -> None:
    """First visible text with and without the guard; replacement share; extractive latency."""
    model = ensure_model(bench, shared)
    plain = bot_for(bench, model, "guard-off", guarded=False)
    guarded = bot_for(bench, model, "guard-on", guarded=True)
    quoting = bot_for(bench, model, "extractive", guarded=True)
    quoting.bot.answers = AnswerModes("extractive", quoting.knowledge)
    reps = 1 if bench.options.quick else 2
    questions = QUESTIONS[:4] if bench.options.quick else QUESTIONS
    try:
        guarded.bot.answers.warm()
        off: list[float] = []
        on: list[float] = []
        replaced = 0
        total = 0
        extractive: list[float] = []
        bench.progress(f"grounding guard: {reps} x {len(questions)} questions with and without the guard ...")
        for rep in range(reps):
            for i, (text, lang) in enumerate(questions):
                model.reset_cache()
                t_off, _ = first_text(plain, f"bench-guard-off-{rep}-{i}", text, lang)
                model.reset_cache()
                t_on, reply = first_text(guarded, f"bench-guard-on-{rep}-{i}", text, lang)
                t_ext, _ = first_text(quoting, f"bench-guard-ext-{rep}-{i}", text, lang)
                off.append(t_off)
                on.append(t_on)
                extractive.append(t_ext)
                total += 1
                replaced += bool(reply is not None and reply.reason.startswith("guard_") and reply.route != "model")
        m_off, m_on = median(off), median(on)
        bench.add("guard.first_text.unguarded", (m_off or 0) * 1000, "ms", "first visible text, guard off (median)")
        bench.add(
            "guard.first_text.guarded", (m_on or 0) * 1000, "ms", "first visible text, auto mode + guard (median)"
        )
        bench.add("guard.first_text.guarded_p95", (percentile(on, 95) or 0) * 1000, "ms",
                  "first visible text, auto mode + guard (p95)")  # fmt: skip
        bench.add("guard.first_text.ratio", ratio(m_on, m_off), "ratio", "guarded / unguarded first visible text")
        bench.add("guard.replaced_share", replaced / total if total else None, "share",
                  "model answers replaced by an extractive answer or a question")  # fmt: skip
        bench.add("guard.extractive_answer", (median(extractive) or 0) * 1000, "ms",
                  "extractive mode: whole answer, Bot.stream_message (median)")  # fmt: skip
        r = ratio(m_on, m_off)
        bench.details["cause.guard_first_text"] = (
            f"The guard holds back each sentence until it is complete and checked: the first visible text "
            f"came after {fmt((m_on or 0) * 1000, 0)} ms instead of {fmt((m_off or 0) * 1000, 0)} ms "
            f"(median over {total} questions); {replaced} of {total} answers were replaced, and a replacement "
            f"shows at once."
        )
        bench.note(bench.details["cause.guard_first_text"] + f" Ratio {fmt(r, 2)} (target <= {TARGET_RATIO}).")
    finally:
        close_services(bench)
