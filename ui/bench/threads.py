"""Benchmark section `threads` (issue #11, item 5): decode speed idle and with one core taken by another process.

The product's default is the adaptive thread count (models/threads.py): all threads while the machine is
free, one fewer per core other processes keep busy.

llama.cpp's CPU threads meet at a barrier after every graph node (OpenMP's `omp barrier` in this build).
With OpenMP's default wait policy a thread that arrives first spins (libgomp: 300,000 iterations) before
it sleeps, so when another process takes one of two cores, the thread that still has work waits for a
core that the spinning thread holds: decoding collapsed from ~70 to ~3 tokens/s in the field. Each
configuration here runs in its own model worker (OpenMP reads its environment when llama.cpp loads),
first idle, then beside a busy neighbour (`python -c "while True: pass"`, not pinned: the scheduler
places it as it would place an ingest or a training run). The chosen default must stay within 5 % of
today's idle speed and degrade in proportion (at worst ~2x slower with one of two cores taken).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from models.types import ChatMessage
from ui.bench.core import Bench, Shared, fmt, median, ratio
from ui.bench.harness import LONG_QUESTION, timed_stream

BUSY_LOOP = "while True: pass"


@dataclass(frozen=True)
class ThreadConfig:
    """One way to run llama.cpp's threads: how many, and OpenMP's environment."""

    name: str
    threads: int | None  # None: the product's default
    env: dict[str, str] = field(default_factory=dict)
    inherit_defaults: bool = False  # True: the product's defaults (FIRSTLINE_* settings, adaptive threads) apply


def configurations(cores: int) -> list[ThreadConfig]:
    """Today's setting, the OpenMP wait policies, fewer threads, and the product's default (adaptive threads)."""
    raw = {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""}  # "" = unset: libgomp's own default
    return [
        ThreadConfig(f"{cores} threads, OpenMP default (before #11)", cores, raw),
        ThreadConfig(f"{cores} threads, OMP_WAIT_POLICY=passive", cores, {**raw, "OMP_WAIT_POLICY": "passive"}),
        ThreadConfig(f"{cores} threads, GOMP_SPINCOUNT=10000", cores, {**raw, "GOMP_SPINCOUNT": "10000"}),
        ThreadConfig(f"{cores} threads, OMP_WAIT_POLICY=active", cores, {**raw, "OMP_WAIT_POLICY": "active"}),
        ThreadConfig(f"{max(1, cores - 1)} thread(s), OpenMP default", max(1, cores - 1), raw),
        ThreadConfig(f"firstline default (adaptive, up to {cores} threads)", None, {}, inherit_defaults=True),
    ]


def decode_speed(config: ThreadConfig, tokens: int, reps: int, threads_override: int | None) -> dict[str, Any]:
    """Median decode tok/s and prompt tok/s of one configuration in its own worker (prompt cached for decode)."""
    from models.remote import WorkerChatModel
    from models.settings import ModelSettings

    settings = ModelSettings(temperature=0.0)
    settings.adaptive_threads = config.inherit_defaults  # the fixed configurations are measured as they are
    if config.threads is not None:
        settings.n_threads = config.threads
    elif threads_override:
        settings.n_threads = threads_override
    if config.inherit_defaults:  # the product's defaults (FIRSTLINE_* settings and their OpenMP environment)
        model = WorkerChatModel(settings)
    else:  # exactly this environment: unset ("") variables are removed, not inherited
        env = {k: v for k, v in {**os.environ, **config.env}.items() if v != ""}
        model = WorkerChatModel(settings, env=env, replace_env=True)
    try:
        messages = [ChatMessage("user", LONG_QUESTION)]
        n_prompt = model.count_tokens(messages)
        timed_stream(model, messages, 4)
        tps, pps = [], []
        for _ in range(reps):
            model.reset_cache()
            ttft, rate, _n = timed_stream(model, messages, tokens)
            tps.append(rate)
            pps.append(None if not ttft else n_prompt / ttft)
        info = model.info
    finally:
        model.close()
    return {"decode": median(tps), "prompt": median(pps), "threads": info["load_kwargs"].get("n_threads"),
            "omp": info.get("omp", {}), "adaptive": settings.adaptive_threads}  # fmt: skip


class BusyNeighbour:
    """Another process that keeps one core busy while it lives (`with BusyNeighbour(): ...`)."""

    def __enter__(self) -> BusyNeighbour:
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)  # let the scheduler place it
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def threads(bench: Bench, shared: Shared) -> None:
    """Decode and prompt tok/s idle and beside a busy neighbour, for each thread configuration."""
    opts = bench.options
    cores = len(os.sched_getaffinity(0))
    tokens = min(opts.gen_tokens, 64)
    reps = 2 if opts.quick else 3
    rows = []
    for config in configurations(cores):
        idle = decode_speed(config, tokens, reps, opts.threads)
        with BusyNeighbour():
            busy = decode_speed(config, tokens, reps, opts.threads)
        rows.append((config, idle, busy))
        bench.progress(
            f"{config.name}: idle {fmt(idle['decode'], 1)}, busy {fmt(busy['decode'], 1)} tok/s decode; "
            f"prompt {fmt(idle['prompt'], 0)} / {fmt(busy['prompt'], 0)} tok/s"
        )
    base_idle = rows[0][1]["decode"]
    for i, (config, idle, busy) in enumerate(rows):
        key = f"threads.{i}"
        bench.add(f"{key}.idle.decode", idle["decode"], "tok/s", f"{config.name}: decode, idle")
        bench.add(f"{key}.busy.decode", busy["decode"], "tok/s", f"{config.name}: decode, one core busy")
        bench.add(f"{key}.idle.prompt", idle["prompt"], "tok/s", f"{config.name}: prompt, idle")
        bench.add(f"{key}.busy.prompt", busy["prompt"], "tok/s", f"{config.name}: prompt, one core busy")
        bench.add(f"{key}.slowdown", ratio(idle["decode"], busy["decode"]), "x", f"{config.name}: idle / busy decode")
        bench.add(f"{key}.vs_before", ratio(idle["decode"], base_idle), "x", f"{config.name}: idle decode / before")
        bench.details.setdefault("threads", []).append(
            {"name": config.name, "threads": idle["threads"], "omp": idle["omp"], "idle": idle, "busy": busy}
        )
    config, idle, busy = rows[-1]
    slow = ratio(idle["decode"], busy["decode"])
    keep = ratio(idle["decode"], base_idle)
    bench.target(
        "busy_neighbour",
        "default threads: <= ~2x slower with one core busy, idle within 5 % of before",
        None if slow is None or keep is None else (slow <= 2.2 and keep >= 0.95),
        f"{fmt(slow, 2)}x slower beside a busy core; idle {fmt(None if keep is None else keep * 100, 1)}% of before",
    )
