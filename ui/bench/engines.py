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
  billed seconds against the replica's busy time (the union of its requests' active intervals, from the
  Usage instants). Summing the engines' per-request wall-clock times bills overlapping requests several
  times over; processor-sharing billing (usage/, issue #16 item 3) must bring the ratio to 1 within 1 %.

The answers are generated without the grounding guard (as the `decode` section does): the figures are about
the engines. Every configuration gets a fresh data directory and the same questions.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from models.types import ChatMessage, Generation, Usage
from ui.bench.core import Bench, Shared, fmt, ratio
from ui.bench.harness import QUESTIONS, bot_for, run_turn
from usage.stats import percentile

CONFIGS = (("inprocess", None), ("llama-server", 4), ("llama-server", 8))


@dataclass
class UsageLog:
    """Every Usage the engine reported during a run (the billing instants per replica)."""

    usages: list[Usage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, usage: Usage | None) -> None:
        if usage is not None:
            with self.lock:
                self.usages.append(usage)


class RecordingModel:
    """A ChatModel wrapper that keeps each generation's (and each failed try's) Usage."""

    def __init__(self, inner: Any, log: UsageLog) -> None:
        self._inner = inner
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stream(self, messages: list[ChatMessage], **kwargs: Any) -> Generation:
        return _Recorded(self._inner.stream(messages, **kwargs), self.log)


class _Recorded(Generation):
    def __init__(self, inner: Generation, log: UsageLog) -> None:
        self._inner, self._log, self._done = inner, log, False
        self.usage = None

    @property
    def failed_attempts(self) -> list[Usage]:
        return list(getattr(self._inner, "failed_attempts", ()))

    def __next__(self) -> str:
        try:
            return next(self._inner)
        except BaseException:
            self._record()
            raise

    def close(self) -> None:
        self._inner.close()
        self._record()

    def _record(self) -> None:
        if not self._done:
            self._done = True
            self.usage = self._inner.usage
            for attempt in self.failed_attempts:
                self._log.add(attempt)
            self._log.add(self.usage)


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals: how long a replica had at least one request active."""
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def conservation(usages: list[Usage], billed: dict[int, float] | None = None) -> dict[str, dict[str, float]]:
    """Per replica: busy seconds (union of active intervals) and the seconds billed for its requests
    (`billed` by id(usage) where given, else each request's own prefill + decode: the naive sum)."""
    out: dict[str, dict[str, float]] = {}
    by_replica: dict[str, list[Usage]] = defaultdict(list)
    for u in usages:
        if u.sent_at is not None and u.ended_at is not None:
            by_replica[u.replica or "?"].append(u)
    for replica, items in by_replica.items():
        busy = busy_seconds([(u.sent_at or 0.0, u.ended_at or 0.0) for u in items])
        charged = sum((billed or {}).get(id(u), u.prefill_s + u.decode_s) for u in items)
        out[replica] = {"busy_s": busy, "billed_s": charged, "requests": len(items), "ratio": ratio(charged, busy) or 0}
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
        log = UsageLog()
        services = bot_for(bench, RecordingModel(model, log), f"engines-{name}")
        try:
            run_turn(services, f"warm-{name}", QUESTIONS[0])  # first-use costs are not throughput
            for n in levels:
                bench.progress(f"{name}: {n} concurrent session(s) ...")
                log.usages.clear()
                lv = run_level(services, n, max(n, opts.engine_turns), f"{name}-{n}")
                report_level(bench, name, lv, conservation(list(log.usages)))
        finally:
            services.close()
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
    bench.add(f"{key}.billed_vs_busy", ratio(billed, busy), "ratio",
              f"{label}, {n} session(s): billed seconds / replica busy seconds (1.00 = conserved)")  # fmt: skip
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
        "sessions). billed_vs_busy above 1 is the issue #16 over-billing: each request's wall-clock prefill + "
        "decode counts the steps it shared with others in full."
    )
