"""Benchmark section `accounting`: the ledger's compute seconds against an outside clock around the model,
and what a measured request costs under every pricing profile.
"""

from __future__ import annotations

import time
from typing import Any

from ui.bench.core import Bench, Shared, fmt, median, ratio
from ui.bench.harness import LONG_QUESTION, ClockedModel, bot_for, close_services, ensure_model, run_turn
from usage.planning import DEFAULT_SECONDS_PER_REQUEST


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
