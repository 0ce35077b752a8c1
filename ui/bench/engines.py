"""Benchmark section `engines`: many customers at once, in-process vs llama-server with 4 and 8 slots (issue #16).

For each engine configuration (the in-process model in its worker process, one request at a time; a local
llama-server with 4 and with 8 parallel slots, continuous batching) and each level of 1, 4, 16 and 64
concurrent sessions, every session sends customer turns back to back through the full chat path
(Bot.stream_message: routing, retrieval, the model, the ledger), each turn a new conversation so no
session ends in a hand-over. The clients are threads in this process; Gradio and HTTP are not part of it
(the `server` section measures those). Per level we report:

* total generated tokens/s over all sessions (completion tokens in the ledger / wall clock),
* time to first streamed piece p50/p95 and request latency p95 (from the call, queueing included),
* compute billed per request (the ledger's compute_s) and the conservation check: per replica, the
  billed seconds (the ledger's processor-sharing shares, usage.sharing) against the replica's busy time (the
  union of its requests' active intervals, from the ledger's instants), which must agree within 1 %; beside
  it, what summing the requests' own wall-clock times would bill (several times the busy time under load).

The answers are generated without the grounding guard (as the `decode` section does): the figures are about
the engines. Every configuration gets a fresh data directory and the same questions.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from typing import Any

from ui.bench.core import Bench, Shared, fmt, ratio
from ui.bench.harness import QUESTIONS, bot_for, close_services, run_turn
from usage.sharing import Interval, busy_seconds
from usage.stats import percentile

CONFIGS = (("inprocess", None), ("llama-server", 4), ("llama-server", 8))


def conservation(services: Any, tag: str) -> dict[str, dict[str, float]]:
    """Per replica, from the ledger rows of one run (conversation ids starting with `tag`), once settled: the
    busy seconds (union of the requests' active intervals), the seconds billed for them (compute_s without
    retrieval: the processor-sharing shares on served engines, the measured seconds in-process) and what
    summing each request's own prefill + decode would have billed."""
    services.ledger.settle()
    rows = services.ledger.rows("replica IS NOT NULL AND sent_at IS NOT NULL AND conversation_id LIKE ?",
                                [tag + "-%"])  # fmt: skip
    by_replica: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_replica[row["replica"]].append(row)
    out: dict[str, dict[str, float]] = {}
    for replica, items in by_replica.items():
        busy = busy_seconds(Interval(r["request_id"], r["sent_at"], r["ended_at"] or r["sent_at"]) for r in items)
        billed = sum((r["compute_s"] or 0.0) - (r["retrieval_s"] or 0.0) for r in items)
        naive = sum((r["prefill_s"] or 0.0) + (r["decode_s"] or 0.0) for r in items)
        out[replica] = {"busy_s": busy, "billed_s": billed, "naive_s": naive, "requests": len(items),
                        "provisional": sum(r["billing"] == "provisional" for r in items)}  # fmt: skip
    return out


def start_engine(bench: Bench, engine: str, slots: int | None) -> Any:
    """The model under test, started as `firstline serve` would start it."""
    from models.engine import load_engine
    from models.settings import ModelSettings

    settings = ModelSettings(engine=engine, engine_slots=slots, max_tokens=bench.options.server_max_tokens)  # type: ignore[arg-type]
    if bench.options.threads:
        settings.n_threads = bench.options.threads
    return load_engine(settings)


def run_level(services: Any, sessions: int, turns_total: int, tag: str) -> dict[str, Any]:
    """`sessions` concurrent sessions sending turns back to back, `turns_total` turns in all."""
    per_session = max(1, math.ceil(turns_total / sessions))
    barrier = threading.Barrier(sessions + 1)
    turns: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def session(index: int) -> None:
        barrier.wait()
        for k in range(per_session):
            text = QUESTIONS[(index + k) % len(QUESTIONS)]
            try:
                turn = run_turn(services, f"{tag}-s{index}-t{k}", text)
            except Exception as exc:  # one failed turn must not end the session
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                turns.append(turn)

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    for t in threads:
        t.start()
    barrier.wait(timeout=120)
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [t for t in turns if t.ok]
    return {
        "sessions": sessions,
        "turns": len(turns),
        "ok": len(ok),
        "errors": errors + [str(t.row.get("error")) for t in turns if not t.ok and t.row.get("error")],
        "wall_s": wall,
        "tokens": sum(t.tokens for t in ok),
        "ttfts": [t.ttft_s for t in ok if t.ttft_s is not None],
        "latencies": [t.piece_times[-1] - t.started for t in ok if t.piece_times],
        "compute": [float(t.row.get("compute_s") or 0) for t in ok],
    }


def engines(bench: Bench, shared: Shared) -> None:
    """1/4/16/64 concurrent sessions on each engine configuration; figures per configuration and level."""
    opts = bench.options
    levels = opts.engine_sessions
    for engine, slots in CONFIGS:
        name = engine if slots is None else f"{engine}_{slots}"
        bench.progress(f"starting {name} ...")
        try:
            model = start_engine(bench, engine, slots)
        except Exception as exc:
            bench.note(f"{name}: not measured, the engine did not start: {type(exc).__name__}: {exc}")
            continue
        services = bot_for(bench, model, f"engines-{name}")
        try:
            run_turn(services, f"warm-{name}", QUESTIONS[0])  # first-use costs are not throughput
            for n in levels:
                bench.progress(f"{name}: {n} concurrent session(s) ...")
                lv = run_level(services, n, max(n, opts.engine_turns), f"{name}-{n}")
                report_level(bench, name, lv, conservation(services, f"{name}-{n}"))
        finally:
            close_services(bench)  # closes `services` and takes it out of the figures (report.json)
            close = getattr(model, "close", None)
            if callable(close):
                close()
    explain(bench)


def report_level(bench: Bench, name: str, lv: dict[str, Any], cons: dict[str, dict[str, float]]) -> None:
    n = lv["sessions"]
    key = f"engines.{name}.sessions_{n}"
    label = f"{name.replace('_', ' ')} slots" if "_" in name else name
    bench.add(f"{key}.total_tokens_per_s", ratio(lv["tokens"], lv["wall_s"]), "tok/s",
              f"{label}, {n} session(s): generated tokens/s, all sessions")  # fmt: skip
    for q in (50, 95):
        p = percentile(lv["ttfts"], q)
        bench.add(f"{key}.ttft.p{q}", p and p * 1000, "ms", f"{label}, {n} session(s): first streamed piece p{q}")
    p95 = percentile(lv["latencies"], 95)
    bench.add(f"{key}.latency.p95", p95 and p95 * 1000, "ms", f"{label}, {n} session(s): request latency p95")
    bench.add(f"{key}.compute_per_request", ratio(sum(lv["compute"]), len(lv["compute"])), "s",
              f"{label}, {n} session(s): compute billed per request (ledger compute_s)")  # fmt: skip
    busy = sum(c["busy_s"] for c in cons.values())
    billed = sum(c["billed_s"] for c in cons.values())
    worst = max((ratio(c["billed_s"], c["busy_s"]) or 0.0 for c in cons.values()), key=lambda x: abs(x - 1.0),
                default=None)  # fmt: skip
    bench.add(f"{key}.billed_vs_busy", worst, "ratio",
              f"{label}, {n} session(s): billed / busy seconds, worst replica (1.00 = conserved)")  # fmt: skip
    bench.add(f"{key}.naive_vs_busy", ratio(sum(c["naive_s"] for c in cons.values()), busy), "ratio",
              f"{label}, {n} session(s): summed per-request wall-clock seconds / busy seconds (the over-billing "
              "processor sharing avoids)")  # fmt: skip
    if any(c["provisional"] for c in cons.values()):
        bench.note(f"{label}, {n} sessions: {sum(int(c['provisional']) for c in cons.values())} rows still "
                   f"provisional after the run ({fmt(billed, 2)} s billed of {fmt(busy, 2)} s busy)")  # fmt: skip
    bench.details.setdefault("engines", []).append(
        {k: v for k, v in lv.items() if k not in ("ttfts", "latencies", "compute")} | {"name": name, "replicas": cons}
    )
    if lv["errors"] or lv["ok"] < lv["turns"]:
        bench.note(f"{label}, {n} sessions: {lv['turns'] - lv['ok']} of {lv['turns']} turns not answered by the "
                   f"model, e.g. {(lv['errors'] or ['(routed elsewhere)'])[0][:200]}")  # fmt: skip


def explain(bench: Bench) -> None:
    v = bench.value
    one = v("engines.inprocess.sessions_1.total_tokens_per_s")
    eight = v("engines.llama-server_8.sessions_16.total_tokens_per_s")
    bench.note(
        f"{os.cpu_count()} cores. In-process, one request computes at a time: concurrency only queues "
        f"(one session {fmt(one, 1)} tok/s). llama-server decodes the requests of all busy slots in one batch "
        f"per step, so the weights are read once for several tokens ({fmt(eight, 1)} tok/s with 8 slots at 16 "
        "sessions). naive_vs_busy above 1 is the over-billing of summing each request's wall-clock prefill + "
        "decode (it counts the steps shared with others in full); billed_vs_busy is the ledger's processor-"
        "sharing bill, which splits each stretch of a replica's time among the requests active in it."
    )
