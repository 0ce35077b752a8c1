"""Benchmark sections of issue #11: what the model worker process costs, and what the AMX guard costs.

* `worker`: the same model, settings and prompt in this process (LlamaChatModel) and in a model worker
  process (WorkerChatModel, what `firstline serve` runs), alternating rounds: decode tokens/s (per token),
  time to first token with the prompt cached and a token-count round trip (per request). Target: the hop
  costs under 3 % of decode speed.
* `buffers`: llama.cpp's extra CPU buffer types on and off (`use_extra_bufts`, what the AMX guard turns
  off where the CPU and the build have AMX), prompt and decode tokens/s, for the bundled Q4_1 model (which
  llama.cpp does not repack) and the same model re-quantized to Q4_0 (which it repacks on AVX2 and up), in
  llama-cpp-python (each configuration in its own worker) and in native llama-bench (`--repack 0,1`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from models.types import ChatMessage
from ui.bench.core import Bench, Shared, fmt, median, ratio
from ui.bench.harness import LONG_QUESTION, ensure_model, timed_stream

HOP_TARGET = 0.97  # the worker decodes at >= 97 % of in-process speed (the hop costs < 3 %)


def worker_hop(bench: Bench, shared: Shared) -> None:
    """In-process vs worker process: decode per token, first token and a round trip per request."""
    from models.remote import WorkerChatModel

    opts = bench.options
    local = ensure_model(bench, shared)
    bench.progress("starting a model worker with the same settings ...")
    remote = WorkerChatModel(local.settings)
    try:
        messages = shared.messages or [ChatMessage("user", LONG_QUESTION)]
        for model in (local, remote):  # warm both: the prompt is in each one's KV cache from here on
            timed_stream(model, messages, 8)
        local_tps: list[float | None] = []
        remote_tps: list[float | None] = []
        local_ttft: list[float | None] = []
        remote_ttft: list[float | None] = []
        for i in range(max(3, opts.reps)):
            order = (local, remote) if i % 2 == 0 else (remote, local)
            for model in order:
                ttft, tps, n = timed_stream(model, messages, opts.gen_tokens)
                (local_tps if model is local else remote_tps).append(tps)
                (local_ttft if model is local else remote_ttft).append(ttft)
            bench.progress(f"round {i + 1}: in-process {fmt(local_tps[-1], 1)}, worker {fmt(remote_tps[-1], 1)} tok/s")
        count_ms = _round_trip_ms(local, remote, messages, 30 if opts.quick else 100)
        info = remote.info
    finally:
        remote.close()
    a, b = median(local_tps), median(remote_tps)
    hop = ratio(b, a)
    bench.add("worker.decode.inprocess", a, "tok/s", "decode in this process (LlamaChatModel)")
    bench.add("worker.decode.worker", b, "tok/s", "decode through the model worker process")
    bench.add("worker.decode.ratio", hop, "x", "worker / in-process decode speed")
    per_token = None if a is None or b is None else (1000 / b - 1000 / a)
    bench.add("worker.hop.per_token", per_token, "ms", "extra time per token through the worker")
    ttft_a, ttft_b = median(local_ttft), median(remote_ttft)
    per_request = None if ttft_a is None or ttft_b is None else (ttft_b - ttft_a) * 1000
    bench.add("worker.ttft.inprocess", None if ttft_a is None else ttft_a * 1000, "ms", "first token, prompt cached")
    bench.add("worker.ttft.worker", None if ttft_b is None else ttft_b * 1000, "ms", "first token via the worker")
    bench.add("worker.hop.per_request", per_request, "ms", "extra time to the first token through the worker")
    bench.add("worker.count_tokens.inprocess", count_ms[0], "ms", "count_tokens of the prompt, in-process")
    bench.add("worker.count_tokens.worker", count_ms[1], "ms", "count_tokens of the prompt, through the worker")
    bench.add("worker.start", float(info.get("load_s") or 0) + float(info.get("self_check_s") or 0), "s",
              "worker: model load + self-check generation (process start not included)")  # fmt: skip
    bench.target(
        "worker_hop",
        "the model worker process costs < 3 % of decode speed",
        None if hop is None else hop >= HOP_TARGET,
        f"{fmt(None if hop is None else hop * 100, 1)}% of in-process ({fmt(per_token, 3)} ms per token, "
        f"{fmt(per_request, 1)} ms per request)",
    )


def _round_trip_ms(local: Any, remote: Any, messages: list[ChatMessage], n: int) -> tuple[float | None, float | None]:
    out = []
    for model in (local, remote):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            model.count_tokens(messages)
            times.append((time.perf_counter() - t0) * 1000)
        out.append(median(times))
    return out[0], out[1]


# -- the AMX guard's price --------------------------------------------------------------------------------
def requantize(source: Path, target: Path, ftype: str = "LLAMA_FTYPE_MOSTLY_Q4_0") -> Path:
    """The model re-quantized (in a child process; llama.cpp's own quantizer) for a speed comparison."""
    if target.exists():
        return target
    code = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        f"p.ftype = llama_cpp.{ftype}\n"
        "p.allow_requantize = True\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(f"re-quantizing failed: {done.stderr[-300:]}")
    return target


def extra_buffers(bench: Bench, shared: Shared) -> None:
    """Prompt and decode tok/s with llama.cpp's extra buffer types on and off (llama-cpp-python and native)."""
    from models import loader
    from models.settings import ModelSettings
    from ui.bench import native as bench_native

    opts = bench.options
    base = ModelSettings()
    path, _ = loader.resolve_model(base.model_path, base.model_sha256)
    q4_0 = requantize(path, bench.workspace("buffers") / "model-q4_0.gguf")
    reps = 2 if opts.quick else 3
    amx = _amx_build_and_cpu()
    for label, model_path in (("q4_1", path), ("q4_0", q4_0)):
        for setting in ("on", "off"):
            if setting == "on" and amx:
                bench.note(f"{label}: extra buffers 'on' not measured: this CPU and build have AMX (it would crash)")
                continue
            pp, tg, buffers = _worker_speeds(base, model_path, setting, opts.gen_tokens, reps, opts.threads)
            key = f"buffers.{label}.{setting}"
            bench.add(f"{key}.prompt", pp, "tok/s", f"{label}, extra buffers {setting}: prompt processing")
            bench.add(f"{key}.decode", tg, "tok/s", f"{label}, extra buffers {setting}: decode")
            bench.details.setdefault("buffers", {})[key] = buffers
            bench.progress(f"{key}: prompt {fmt(pp, 0)}, decode {fmt(tg, 1)} tok/s, weights in {', '.join(buffers)}")
        for kind in ("prompt", "decode"):
            bench.add(
                f"buffers.{label}.{kind}.cost",
                ratio(bench.value(f"buffers.{label}.off.{kind}"), bench.value(f"buffers.{label}.on.{kind}")),
                "x",
                f"{label}: {kind} speed with the AMX guard's setting (off) / llama.cpp's default (on)",
            )
    binary = bench_native.find_llama_bench(opts.llama_bench)
    if binary is None:
        bench.note("native llama-bench not built (scripts/build-llama-bench.sh): native --repack figures skipped")
        return
    threads = opts.threads or base.n_threads or os.cpu_count() or 1
    for label, model_path in (("q4_1", path), ("q4_0", q4_0)):
        cmd = [str(binary), "-m", str(model_path), "-t", str(threads), "-p", "512", "-n", str(opts.gen_tokens),
               "-r", str(reps), "--repack", "0,1", "-o", "json"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=bench_native.LLAMA_BENCH_TIMEOUT_S * 2)
        records = bench_native.parse_llama_bench(done.stdout)
        for rec in records:
            setting = "on" if str(rec.get("repack", 1)).lower() in ("1", "true") else "off"
            kind = "prompt" if int(rec.get("n_prompt", 0)) else "decode"
            bench.add(f"buffers.native.{label}.{setting}.{kind}", bench_native.tokens_per_s(rec), "tok/s",
                      f"llama-bench {label}, --repack {1 if setting == 'on' else 0}: {kind}")  # fmt: skip


def _worker_speeds(
    base: Any, model_path: Path, setting: str, tokens: int, reps: int, threads: int | None
) -> tuple[float | None, float | None, list[str]]:
    """Median prompt tok/s (full prefill of the long prompt) and decode tok/s in a worker with this setting."""
    from models.remote import WorkerChatModel

    settings = base.model_copy(
        update={"model_path": model_path, "model_sha256": "skip", "cpu_extra_buffers": setting, "temperature": 0.0}
    )
    if threads:
        settings.n_threads = threads
    model = WorkerChatModel(settings)
    try:
        messages = [ChatMessage("user", LONG_QUESTION)]
        n_prompt = model.count_tokens(messages)
        pps, tgs = [], []
        timed_stream(model, messages, 4)  # warm-up
        for _ in range(reps):
            model.reset_cache()
            ttft, tps, _n = timed_stream(model, messages, tokens)
            pps.append(None if not ttft else n_prompt / ttft)
            tgs.append(tps)
        return median(pps), median(tgs), list(model.info.get("buffers") or {})
    finally:
        model.close()


def _amx_build_and_cpu() -> bool:
    """Do this CPU and the llama.cpp build have AMX (where llama.cpp's default crashes)?"""
    from models.selfcheck import probe_build

    report, _ = probe_build()
    return bool(report and report["cpu_amx"] and "AMX_INT8" in report["build_features"])
