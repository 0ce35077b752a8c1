"""Benchmark section: concurrent chat sessions through the running server.

`firstline serve` runs as a subprocess on a free port with the real model; each session is its own
gradio_client.Client in its own thread, sending turns back to back (two per conversation, then a new one). Per level we
report total generated tokens/s across sessions (tokens from the server's ledger / wall clock), requests/s,
and per-request latency and time to first streamed token (p50/p95).
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ui.bench.core import Bench, Shared, fmt, ratio
from ui.bench.harness import QUESTIONS
from usage.stats import percentile

TURNS_PER_CONVERSATION = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`firstline serve` with the real model on a free port, its log in the data directory."""

    def __init__(self, data_dir: Path, max_tokens: int, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = data_dir / "firstline.db"
        self.log = data_dir / "server.log"
        env = {
            **os.environ,
            "FIRSTLINE_DATA_DIR": str(data_dir),
            "FIRSTLINE_MODEL_BACKEND": "llama",
            "FIRSTLINE_MAX_TOKENS": str(max_tokens),
            "FIRSTLINE_MODEL_TIMEOUT_S": "900",  # measure slow requests rather than time them out
            **(extra_env or {}),
        }
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ui.cli", "serve", "--port", str(self.port)],
            cwd=data_dir,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()

    def ledger_since(self, since: str) -> dict[str, float]:
        """Requests, generated tokens and compute seconds the server's ledger recorded since `since`."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(prefill_s + decode_s), 0), "
                "COALESCE(SUM(queue_wait_s), 0), COALESCE(SUM(prefill_s), 0), COALESCE(SUM(decode_s), 0), "
                "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(prompt_tokens), 0) "
                "FROM requests WHERE started_at >= ? AND route = 'model'",
                [since],
            ).fetchone()
            routes = dict(
                conn.execute("SELECT route, COUNT(*) FROM requests WHERE started_at >= ? GROUP BY route", [since])
            )
        finally:
            conn.close()
        return {
            "requests": row[0],
            "tokens": row[1],
            "compute_s": row[2],
            "queue_wait_s": row[3],
            "prefill_s": row[4],
            "decode_s": row[5],
            "cached_tokens": row[6],
            "prompt_tokens": row[7],
            "routes": routes,
        }


def _assistant_text(history: Any) -> str:
    if not history:
        return ""
    last = history[-1]
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list):
        return "".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return str(content or "")


def _session(
    url: str, index: int, turns: int, barrier: threading.Barrier, out: list[dict[str, Any]], errors: list[str]
) -> None:
    from gradio_client import Client

    try:
        client = Client(url + "/chat/", verbose=False)
    except Exception as exc:
        errors.append(f"client {index}: {exc}")
        barrier.abort()
        return
    barrier.wait()
    history: Any = []
    for turn in range(turns):
        if turn and turn % TURNS_PER_CONVERSATION == 0:
            # a new conversation (new Gradio session, new server-side id): a long one would end in a
            # hand-over to staff (repeated questions), after which the bot stays silent
            client.reset_session()
            history = []
        text = QUESTIONS[(index + turn) % len(QUESTIONS)]
        t0 = time.perf_counter()
        first = None
        try:
            job = client.submit(text, history, "en", api_name="/chat")
            for update in job:
                if first is None and _assistant_text(update[1]):
                    first = time.perf_counter()
            result = job.result()
            history = result[1]
        except Exception as exc:
            errors.append(f"session {index} turn {turn}: {type(exc).__name__}: {exc}")
            continue
        end = time.perf_counter()
        out.append({"session": index, "turn": turn, "latency_s": end - t0, "ttft_s": (first or end) - t0})


def run_level(server: ServerProcess, sessions: int, requests: int) -> dict[str, Any]:
    """`sessions` concurrent sessions, about `requests` turns in all (at least one per session)."""
    turns = max(1, math.ceil(requests / sessions))
    barrier = threading.Barrier(sessions + 1)
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_session, args=(server.url, i, turns, barrier, out, errors), daemon=True)
        for i in range(sessions)
    ]
    for t in threads:
        t.start()
    barrier.wait(timeout=300)  # every client connected: start the clock together
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ledger = server.ledger_since(since)
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "wall_s": wall,
        "requests": len(out),
        "errors": errors,
        "latencies": [r["latency_s"] for r in out],
        "ttfts": [r["ttft_s"] for r in out],
        "ledger": ledger,
        "load_start": load0,
    }


def concurrency(bench: Bench, shared: Shared) -> None:
    """Throughput and latency with 1, 4 and 16 concurrent chat sessions through `firstline serve`."""
    opts = bench.options
    data = bench.workspace("server")
    bench.progress(f"starting firstline serve (FIRSTLINE_MAX_TOKENS={opts.server_max_tokens}) ...")
    threads_env = {"FIRSTLINE_N_THREADS": str(opts.threads)} if opts.threads else {}
    server = ServerProcess(data, opts.server_max_tokens, threads_env)
    levels = []
    try:
        server.wait_ready()
        # one warm-up request: first-use costs (Gradio queue, prompt template) are not throughput
        run_level(server, 1, 1)
        for n in opts.sessions:
            bench.progress(f"{n} concurrent session(s) ...")
            levels.append(run_level(server, n, opts.server_requests))
    finally:
        server.stop()
    cores = os.cpu_count() or 1
    top = max(opts.sessions)
    if not opts.quick and cores > 1 and not opts.threads and "FIRSTLINE_N_THREADS" not in os.environ:
        # the same top level with one core left to the server and the clients (see the note below)
        bench.progress(f"{top} sessions again with FIRSTLINE_N_THREADS={cores - 1} ...")
        server = ServerProcess(bench.workspace("server-threads"), opts.server_max_tokens,
                               {"FIRSTLINE_N_THREADS": str(cores - 1)})  # fmt: skip
        try:
            server.wait_ready()
            run_level(server, 1, 1)
            fewer = run_level(server, top, opts.server_requests)
        finally:
            server.stop()
        tps = ratio(fewer["ledger"]["tokens"], fewer["wall_s"])
        bench.add(
            f"server.sessions_{top}.threads_{cores - 1}.total_tokens_per_s",
            tps,
            "tok/s",
            f"{top} sessions, llama.cpp on {cores - 1} of {cores} cores: generated tokens/s",
        )
        p50 = percentile(fewer["latencies"], 50)
        bench.add(
            f"server.sessions_{top}.threads_{cores - 1}.latency.p50",
            p50 and p50 * 1000,
            "ms",
            f"{top} sessions, {cores - 1} thread(s): request latency p50",
        )
    bench.details["server_levels"] = [{k: v for k, v in lv.items() if k not in ("latencies", "ttfts")} for lv in levels]
    for lv in levels:
        n = lv["sessions"]
        tps = ratio(lv["ledger"]["tokens"], lv["wall_s"])
        key = f"server.sessions_{n}"
        bench.add(f"{key}.total_tokens_per_s", tps, "tok/s", f"{n} session(s): generated tokens/s, all sessions")
        bench.add(
            f"{key}.requests_per_s",
            ratio(lv["requests"], lv["wall_s"]),
            "req/s",
            f"{n} session(s): requests/s",
        )
        for q in (50, 95):
            p = percentile(lv["latencies"], q)
            bench.add(f"{key}.latency.p{q}", p and p * 1000, "ms", f"{n} session(s): request latency p{q}")
        for q in (50, 95):
            p = percentile(lv["ttfts"], q)
            bench.add(f"{key}.ttft.p{q}", p and p * 1000, "ms", f"{n} session(s): first streamed token p{q}")
        led = lv["ledger"]
        bench.add(
            f"{key}.decode_tokens_per_s",
            ratio(led["tokens"], led["decode_s"]),
            "tok/s",
            f"{n} session(s): decode speed of the model itself",
        )
        bench.add(
            f"{key}.prefill_s_per_request",
            ratio(led["prefill_s"], led["requests"]),
            "s",
            f"{n} session(s): prefill per request ({fmt(ratio(led['cached_tokens'], led['prompt_tokens']), 2)} of "
            f"prompt tokens cached)",
        )
        bench.add(
            f"{key}.cached_share",
            ratio(led["cached_tokens"], led["prompt_tokens"]),
            "ratio",
            f"{n} session(s): share of prompt tokens taken from the KV cache or a saved state",
        )
        bench.add(
            f"{key}.model_busy",
            ratio(lv["ledger"]["compute_s"], lv["wall_s"]),
            "ratio",
            f"{n} session(s): share of wall time the model computed",
        )
        if lv["errors"]:
            bench.note(f"{n} sessions: {len(lv['errors'])} failed requests, e.g. {lv['errors'][0][:200]}")
    one = bench.value("server.sessions_1.total_tokens_per_s")
    busy1 = bench.value("server.sessions_1.model_busy")
    bench.note(
        "One model serves every session (llama.cpp contexts are not thread-safe): requests queue for it, so "
        "concurrency cannot add decode throughput; it can only fill the gaps a single session leaves "
        f"(network, Gradio, prompt building). With one session the model computed "
        f"{fmt(busy1 and busy1 * 100, 0)}% "
        f"of the wall time. The clients run in the benchmark process on the same "
        f"{os.cpu_count()} cores as the server, so they compete with llama.cpp's threads."
    )
    worst = [(n, bench.value(f"server.sessions_{n}.total_tokens_per_s")) for n in opts.sessions if n > 1]
    slower = [(n, v) for n, v in worst if v is not None and one is not None and v < one]
    if slower:
        n, v = min(slower, key=lambda x: x[1] or 0)
        bench.details["cause.concurrency_throughput"] = concurrency_cause(bench, n, v, one)


def concurrency_cause(bench: Bench, n: int, total: float | None, one: float | None) -> str:
    """Why n sessions generated fewer tokens per second than one, from the figures both runs measured."""
    v = bench.value
    dec_n, dec_1 = v(f"server.sessions_{n}.decode_tokens_per_s"), v("server.sessions_1.decode_tokens_per_s")
    pre_n, pre_1 = v(f"server.sessions_{n}.prefill_s_per_request"), v("server.sessions_1.prefill_s_per_request")
    hit_n, hit_1 = v(f"server.sessions_{n}.cached_share"), v("server.sessions_1.cached_share")
    busy_n, busy_1 = v(f"server.sessions_{n}.model_busy"), v("server.sessions_1.model_busy")
    head = (
        f"{n} sessions: {fmt(total, 1)} vs {fmt(one, 1)} tok/s with one; the model is busy "
        f"{fmt((busy_n or 0) * 100, 0)}% vs {fmt((busy_1 or 0) * 100, 0)}% of the time"
    )
    if dec_n and dec_1 and dec_n < 0.9 * dec_1:
        return (
            f"{head} and itself decodes at {fmt(dec_n, 1)} vs {fmt(dec_1, 1)} tok/s: other work (the clients, "
            f"streaming) takes CPU from llama.cpp's threads on {os.cpu_count()} cores"
        )
    if pre_n and pre_1 and pre_n > 1.1 * pre_1:
        return (
            f"{head}, decodes at the same speed ({fmt(dec_n, 1)} vs {fmt(dec_1, 1)} tok/s), but spends "
            f"{fmt(pre_n, 2)} s vs {fmt(pre_1, 2)} s per request reading prompts: {fmt((hit_n or 0) * 100, 0)}% vs "
            f"{fmt((hit_1 or 0) * 100, 0)}% of prompt tokens came from the cache. Interleaved conversations "
            f"evict each other's saved KV states (FIRSTLINE_PROMPT_CACHE_MB, ~23 KB per token) and the "
            f"sessions' requests differ in length; a larger state budget or batching several conversations "
            f"per decode step (not offered by llama-cpp-python's high-level API) would close the gap"
        )
    return (
        f"{head}; decode {fmt(dec_n, 1)} vs {fmt(dec_1, 1)} tok/s, prefill {fmt(pre_n, 2)} vs {fmt(pre_1, 2)} s "
        f"per request"
    )
