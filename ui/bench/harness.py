"""Benchmark sections on the model: decode speed and time to first token for firstline's full chat path,
plain llama-cpp-python and native llama.cpp; follow-up turns with and without prompt caching; and the
accuracy of the ledger's compute seconds against an outside clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from bot.types import Delta, Reply
from models.types import ChatMessage, ChatModel, Generation
from ui.bench.core import Bench, Shared, decode_rate, fmt, median, ratio
from usage.planning import DEFAULT_SECONDS_PER_REQUEST

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


def bot_for(bench: Bench, model: Any, name: str) -> Any:
    """Services composed as in production (ui.app) on a fresh data directory, with `model`."""
    from ui.app import build_services

    services = build_services(bench.workspace(name), model=cast(ChatModel, model))
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


# -- accounting accuracy ------------------------------------------------------------------------------
def accounting(bench: Bench, shared: Shared) -> None:
    """Ledger compute_s against an outside clock around the model's generator."""
    model = ensure_model(bench, shared)
    clocked = ClockedModel(model)
    services = bot_for(bench, clocked, "accounting")
    services.bot.max_tokens = min(64, bench.options.gen_tokens)
    n = bench.options.accounting_runs
    holds = [] if bench.options.quick else [0.005] * 2
    try:
        rows: list[dict[str, Any]] = []
        for i, hold in enumerate([0.0] * n + holds):

            def hold_piece(hold: float = hold) -> None:
                if hold:
                    time.sleep(hold)  # a slow consumer: not compute time, must not be billed

            t0 = time.perf_counter()
            turn = run_turn(services, f"bench-acct-{i}", LONG_QUESTION, hold_piece)
            wall = time.perf_counter() - t0
            clock = clocked.clocks[-1]
            if not turn.ok:
                bench.note(f"accounting run {i} skipped: {turn.row.get('status')} ({turn.row.get('error')})")
                continue
            # the ledger bills retrieval/routing (retrieval_s) plus model prefill + decode; the outside clock
            # is around the model, so it is compared with the model's part
            compute = float(turn.row.get("prefill_s") or 0.0) + float(turn.row.get("decode_s") or 0.0)
            rows.append(
                {
                    "hold_s": hold,
                    "compute_s": compute,
                    "billed_compute_s": float(turn.row.get("compute_s") or 0.0),
                    "retrieval_s": float(turn.row.get("retrieval_s") or 0.0),
                    "clock_inside_s": clock.inside_s,
                    "clock_wall_s": clock.wall_s,
                    "request_wall_s": wall,
                    "latency_s": float(turn.row.get("latency_s") or 0.0),
                    "error_pct": abs(compute - clock.inside_s) / clock.inside_s * 100 if clock.inside_s else None,
                }
            )
        bench.details["accounting_runs"] = rows
        plain = [r for r in rows if not r["hold_s"]]
        held = [r for r in rows if r["hold_s"]]
        err = median([r["error_pct"] for r in plain if r["error_pct"] is not None])
        bench.add(
            "accounting.error_pct", err, "%", "|ledger prefill_s + decode_s - outside clock| / outside clock (median)"
        )
        bench.add(
            "accounting.error_ms",
            median([abs(r["compute_s"] - r["clock_inside_s"]) * 1000 for r in plain]),
            "ms",
            "|ledger prefill_s + decode_s - outside clock| per request (median)",
        )
        bench.add(
            "accounting.slow_consumer.error_pct",
            median([r["error_pct"] for r in held if r["error_pct"] is not None]),
            "%",
            "same, while the consumer holds each piece 5 ms (not billed)",
        )
        bench.add(
            "accounting.slow_consumer.wall_vs_compute",
            median([x for r in held if (x := ratio(r["clock_wall_s"], r["compute_s"])) is not None]),
            "ratio",
            "generation wall clock / billed compute with the slow consumer",
        )
        bench.add(
            "accounting.request_overhead_ms",
            median([(r["request_wall_s"] - r["clock_wall_s"]) * 1000 for r in plain]),
            "ms",
            "request wall clock outside generation (store, prompt, ledger)",
        )
        bench.add(
            "accounting.retrieval_ms",
            median([r["retrieval_s"] * 1000 for r in plain]),
            "ms",
            "retrieval and routing billed per request (outside the model)",
        )
        cost_figures(bench, median([r["billed_compute_s"] for r in plain]), services.ledger.profile)
        bench.note(
            "The outside clock sums the time spent inside the model's generator (every `next()`), measured "
            "by a wrapper around the model with its own `perf_counter`, and is compared with the ledger's "
            "prefill_s + decode_s as the model layer measures them; the billed compute_s adds retrieval_s "
            "(knowledge-base search and routing before the model). Time the consumer holds a piece "
            "(streaming to a slow client) is excluded from compute_s by design, so the slow-consumer runs "
            "check that it is not billed."
        )
    finally:
        close_services(bench)


ASSUMED_COMPUTE_S = float(DEFAULT_SECONDS_PER_REQUEST)  # the default pricing example's compute s per request


def cost_figures(bench: Bench, compute_s: float | None, active: Any) -> None:
    """Measured compute seconds per request next to the pricing example's 3 s, priced under each profile."""
    from usage import pricing

    if compute_s is None:
        return
    device = (bench.details.get("model") or {}).get("device", "?")
    n_tokens = bench.options.gen_tokens if bench.options.gen_tokens < 64 else 64
    bench.add(
        "cost.compute_s_per_request",
        compute_s,
        "s",
        f"compute per chat request on {device} ({bench.value('decode.prompt_tokens') or '~150'}-token prompt, "
        f"up to {n_tokens} tokens answered)",
    )
    bench.add("cost.assumed_compute_s_per_request", ASSUMED_COMPUTE_S, "s", "the default pricing example's assumption")
    profiles = list(getattr(pricing, "DEFAULT_PROFILES", ())) or [active]
    if all(p.name != active.name for p in profiles):
        profiles.insert(0, active)
    lines = []
    for profile in profiles:
        measured = profile.request_cost(compute_s)
        assumed = profile.request_cost(ASSUMED_COMPUTE_S)
        bench.add(
            f"cost.profile.{profile.name}.per_request",
            float(measured),
            profile.currency,
            f"cost per request, profile {profile.name} (measured compute)",
        )
        bench.add(
            f"cost.profile.{profile.name}.per_request_at_3s",
            float(assumed),
            profile.currency,
            f"cost per request, profile {profile.name}, at the assumed 3 s",
        )
        lines.append(f"{profile.name}: {measured:.6f} {profile.currency} (at 3 s: {assumed:.6f})")
    bench.note(
        f"A chat request computed {fmt(compute_s, 3)} s on {device}; the default pricing example assumes "
        f"{ASSUMED_COMPUTE_S:.0f} s. Per request: " + "; ".join(lines) + ". Period-billed profiles (per "
        "instance-hour, on-premises) price a request at full utilisation; idle time costs extra."
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
