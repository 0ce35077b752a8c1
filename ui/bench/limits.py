"""Benchmark section against the hardware: the machine's memory bandwidth (a small STREAM-like C program,
numpy when no compiler is present; a CUDA kernel for GPU memory) and the decode ceilings it implies for
the loaded model, bandwidth-bound and compute-bound.

Bytes read per generated token: decoding one token multiplies every weight matrix by one vector, so it
streams every weight tensor from memory once (the token embedding table too when it doubles as the
output projection, as in SmolLM2; otherwise only one row of it), plus the KV cache of the tokens so far.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, BinaryIO

from ui.bench.core import Bench, Shared, fmt, ratio
from ui.bench.native import CACHE_DIR

# -- memory bandwidth ---------------------------------------------------------------------------------
STREAM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], 0, 10) : (1u << 25);
    int reps = argc > 2 ? atoi(argv[2]) : 8;
    double *a = aligned_alloc(64, n * sizeof(double)), *b = aligned_alloc(64, n * sizeof(double)),
           *c = aligned_alloc(64, n * sizeof(double));
    if (!a || !b || !c) return 1;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = 1.0; b[i] = 2.0; c[i] = 0.5; }
    double copy = 1e30, triad = 1e30, rd = 1e30, sink = 0;
    for (int r = 0; r < reps; r++) {
        double t = now();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) c[i] = a[i];
        t = now() - t; if (t < copy) copy = t;
        t = now();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
        t = now() - t; if (t < triad) triad = t;
        double s = 0;
        t = now();
        #pragma omp parallel for simd schedule(static) reduction(+:s)
        for (size_t i = 0; i < n; i++) s += b[i];
        t = now() - t; if (t < rd) rd = t;
        sink += s;
    }
    printf("{\"threads\": %d, \"n\": %zu, \"copy_gbs\": %.3f, \"triad_gbs\": %.3f, "
           "\"read_gbs\": %.3f, \"sink\": %.1f}\n",
           omp_get_max_threads(), n, 16.0 * n / copy / 1e9, 24.0 * n / triad / 1e9, 8.0 * n / rd / 1e9, sink);
    return 0;
}
"""


CUDA_READ = r"""
#include <cstdio>
#include <cuda_runtime.h>
__global__ void readk(const float4 *a, float *out, size_t n) {
    float s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = a[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 1234.5f) out[0] = s;
}
int main() {
    size_t bytes = 1ull << 30, n = bytes / sizeof(float4);
    float4 *a; float *o;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&o, 4) != cudaSuccess) return 1;
    cudaMemset(a, 0, bytes);
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    int sms = 0; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    float best = 1e30f;
    for (int r = 0; r < 20; r++) {
        cudaEventRecord(e0);
        readk<<<sms * 8, 512>>>(a, o, n);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms; cudaEventElapsedTime(&ms, e0, e1);
        if (ms < best) best = ms;
    }
    printf("{\"read_gbs\": %.1f}\n", bytes / best / 1e6);
    return 0;
}
"""


def gpu_bandwidth() -> dict[str, Any] | None:
    """GPU memory read bandwidth (GB/s) from a small CUDA kernel; None without nvcc or a GPU."""
    nvcc = shutil.which("nvcc") or next((str(p) for p in Path("/usr/local").glob("cuda*/bin/nvcc")), None)
    if nvcc is None:
        return None
    out_dir = CACHE_DIR / "stream"
    out_dir.mkdir(parents=True, exist_ok=True)
    source, binary = out_dir / "gpu_read.cu", out_dir / "gpu_read"
    if not binary.exists() or not source.exists() or source.read_text() != CUDA_READ:
        source.write_text(CUDA_READ)
        proc = subprocess.run([nvcc, "-O3", str(source), "-o", str(binary)], capture_output=True, text=True)
        if proc.returncode != 0:
            return None
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def stream_binary() -> Path | None:
    """Compile the STREAM-like kernel once (gcc -O3 -march=native -fopenmp); None without a compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    out_dir = CACHE_DIR / "stream"
    binary = out_dir / "stream_bw"
    source = out_dir / "stream_bw.c"
    if binary.exists() and source.exists() and source.read_text() == STREAM_C:
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    source.write_text(STREAM_C)
    proc = subprocess.run(
        [cc, "-O3", "-march=native", "-fopenmp", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
    )
    return binary if proc.returncode == 0 else None


def memory_bandwidth(quick: bool) -> dict[str, Any]:
    """Best-of-N GB/s for copy, triad and read, single-threaded and on every core."""
    n = (1 << 24) if quick else (1 << 25)  # 128 / 256 MiB per array: far beyond the caches
    reps = 5 if quick else 8
    binary = stream_binary()
    cores = os.cpu_count() or 1
    if binary is not None:
        results = {}
        for threads in sorted({1, cores}):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "spread"}
            proc = subprocess.run(
                [str(binary), str(n), str(reps)], capture_output=True, text=True, env=env, timeout=300
            )
            results[threads] = json.loads(proc.stdout)
        return {"method": "STREAM-like C kernel (gcc -O3 -march=native -fopenmp)", "by_threads": results}
    import numpy as np

    a = np.ones(n)
    b = np.empty_like(a)
    best_copy = best_read = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best_copy = min(best_copy, time.perf_counter() - t0)
        t0 = time.perf_counter()
        a.sum()
        best_read = min(best_read, time.perf_counter() - t0)
    one = {"threads": 1, "copy_gbs": 16 * n / best_copy / 1e9, "read_gbs": 8 * n / best_read / 1e9}
    return {"method": "numpy copy / sum (single thread; no C compiler found)", "by_threads": {1: one}}


# -- GGUF tensor sizes --------------------------------------------------------------------------------
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _read(fh: BinaryIO, fmt_: str) -> Any:
    size = struct.calcsize("<" + fmt_)
    return struct.unpack("<" + fmt_, fh.read(size))[0]


def _skip_value(fh: BinaryIO, vtype: int) -> None:
    if vtype in _GGUF_SCALAR:
        fh.read(struct.calcsize("<" + _GGUF_SCALAR[vtype]))
    elif vtype == 8:  # string
        fh.seek(_read(fh, "Q"), 1)
    elif vtype == 9:  # array
        item_type, count = _read(fh, "I"), _read(fh, "Q")
        if item_type in _GGUF_SCALAR:
            fh.seek(struct.calcsize("<" + _GGUF_SCALAR[item_type]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    """Bytes of every tensor in a GGUF file (from the tensor offsets; no llama.cpp needed)."""
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"not a GGUF file: {path}")
        _version, n_tensors, n_kv = _read(fh, "I"), _read(fh, "Q"), _read(fh, "Q")
        alignment = 32
        for _ in range(n_kv):
            key = fh.read(_read(fh, "Q")).decode("utf-8", "replace")
            vtype = _read(fh, "I")
            if key == "general.alignment" and vtype == 4:
                alignment = _read(fh, "I")
            else:
                _skip_value(fh, vtype)
        infos = []
        for _ in range(n_tensors):
            name = fh.read(_read(fh, "Q")).decode("utf-8", "replace")
            n_dims = _read(fh, "I")
            fh.seek(8 * n_dims + 4, 1)  # dims, type
            infos.append((_read(fh, "Q"), name))
        data_start = (fh.tell() + alignment - 1) // alignment * alignment
    file_size = path.stat().st_size
    infos.sort()
    sizes = {}
    for i, (offset, name) in enumerate(infos):
        end = infos[i + 1][0] if i + 1 < len(infos) else file_size - data_start
        sizes[name] = end - offset
    return sizes


def bytes_per_token(model: Any, depth: float) -> dict[str, float]:
    """Bytes one decode step reads: the weights (see module doc) and the KV cache at `depth` tokens."""
    sizes = gguf_tensor_bytes(model.path)
    total = sum(sizes.values())
    embd = sizes.get("token_embd.weight", 0)
    tied = "output.weight" not in sizes
    vocab = int(model.llama.n_vocab())
    weights = total if tied else total - embd + embd / max(vocab, 1)
    meta = model.llama.metadata
    arch = meta.get("general.architecture", "llama")
    n_layer = int(meta.get(f"{arch}.block_count", 0))
    n_embd = int(meta.get(f"{arch}.embedding_length", 0))
    n_head = int(meta.get(f"{arch}.attention.head_count", 1))
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(meta.get(f"{arch}.attention.key_length", n_embd // max(n_head, 1)))
    kv_per_token = 2 * n_layer * n_head_kv * head_dim * 2  # K and V, f16
    return {
        "tensor_bytes": float(total),
        "weights_read": float(weights),
        "tied_embeddings": float(tied),
        "kv_bytes_per_position": float(kv_per_token),
        "kv_read": float(kv_per_token * depth),
        "total": float(weights + kv_per_token * depth),
        "n_layer": float(n_layer),
        "n_head": float(n_head),
        "head_dim": float(head_dim),
    }


def limits(bench: Bench, shared: Shared) -> None:
    """Memory bandwidth, the bandwidth-bound decode ceiling, and the compute-bound estimate."""
    from ui.bench.harness import ensure_model

    model = ensure_model(bench, shared)
    bench.progress("memory bandwidth ...")
    bw = memory_bandwidth(bench.options.quick)
    bench.details["memory_bandwidth"] = bw
    by = bw["by_threads"]
    cores = max(by)
    threads = int(model.load_kwargs["n_threads"])
    for t, rec in sorted(by.items()):
        for kernel in ("read", "copy", "triad"):
            if f"{kernel}_gbs" in rec:
                bench.add(f"memory.{kernel}.threads_{t}", rec[f"{kernel}_gbs"], "GB/s", f"{kernel}, {t} thread(s)")
    read_bw = by.get(threads, by[cores]).get("read_gbs")
    if model.device != "CPU":  # the weights live in GPU memory: its bandwidth is the limit
        gpu = gpu_bandwidth()
        bench.details["gpu_bandwidth"] = gpu
        read_bw = gpu.get("read_gbs") if gpu else None
        bench.add("memory.gpu.read", read_bw, "GB/s", "GPU memory read (CUDA kernel)")
        if read_bw is None:
            bench.note("GPU memory bandwidth not measured (no nvcc, or the CUDA probe failed).")

    n_prompt = shared.prompt_tokens or 128
    depth = n_prompt + bench.options.gen_tokens / 2  # average context position while decoding
    b = bytes_per_token(model, depth)
    bench.details["bytes_per_token"] = b
    bench.add("model.tensor_bytes", b["tensor_bytes"] / 1e6, "MB", "sum of weight tensor sizes")
    bench.add("model.file_bytes", model.path.stat().st_size / 1e6, "MB", "GGUF file size")
    bench.add("decode.bytes_per_token", b["total"] / 1e6, "MB/token", f"weights + KV cache at {depth:.0f} tokens")
    ceiling = read_bw * 1e9 / b["total"] if read_bw else None
    bench.add("limit.bandwidth.tokens_per_s", ceiling, "tok/s", "bandwidth-bound decode ceiling")

    native = bench.value("decode.native.tokens_per_s")
    ours = bench.value("decode.firstline.tokens_per_s")
    bench.add("limit.native_vs_bandwidth", ratio(native, ceiling), "ratio", "native decode / bandwidth ceiling")
    bench.add("limit.firstline_vs_bandwidth", ratio(ours, ceiling), "ratio", "firstline decode / bandwidth ceiling")

    # compute: ~2 FLOPs per weight per token, plus attention over the context
    n_params = float(model.llama._model.n_params())
    attn = 4 * b["n_layer"] * b["n_head"] * b["head_dim"] * depth
    flops = 2 * n_params + attn
    bench.add("decode.flops_per_token", flops / 1e9, "GFLOP/token", "2 x parameters + attention")
    pp = bench.value("native.pp.tokens_per_s")
    pp_flops = pp * (2 * n_params + 4 * b["n_layer"] * b["n_head"] * b["head_dim"] * n_prompt / 2) if pp else None
    gflops = pp_flops / 1e9 if pp_flops else None
    bench.add("compute.prefill.gflops", gflops, "GFLOP/s", "achieved in batched prompt processing (native)")
    compute_ceiling = pp_flops / flops if pp_flops else None
    bench.add("limit.compute.tokens_per_s", compute_ceiling, "tok/s", "compute ceiling at the prefill FLOP rate")
    one = bench.value("native.tg.one_thread.tokens_per_s")
    lines = [
        f"Memory bandwidth ({bw['method']}): read {fmt(by[min(by)].get('read_gbs'), 1)} GB/s on 1 thread, "
        f"{fmt(by[cores].get('read_gbs'), 1)} GB/s on {cores}; copy/triad figures count STREAM's bytes "
        f"(no write-allocate).",
        f"One decode step reads {fmt(b['weights_read'] / 1e6, 1)} MB of weights "
        f"({'tied embeddings: the token embedding table is also the output projection, so all tensors are read' if b['tied_embeddings'] else 'all tensors except the input embedding table'}) "  # noqa: E501
        f"plus {fmt(b['kv_read'] / 1e6, 1)} MB of KV cache at {depth:.0f} tokens "
        f"({fmt(b['kv_bytes_per_position'] / 1e3, 1)} KB per position) = {fmt(b['total'] / 1e6, 1)} "
        f"MB/token, "
        f"so {fmt(read_bw, 1)} GB/s caps decode at {fmt(ceiling, 0)} tok/s.",
    ]
    if native and ceiling:
        lines.append(
            f"Native decode reaches {fmt(native, 1)} tok/s = {fmt(100 * native / ceiling, 0)}% of that "
            f"ceiling "
            f"({fmt(1000 / native, 2)} ms/token against {fmt(1000 / ceiling, 2)} ms of pure memory traffic)."
        )
    if pp_flops and compute_ceiling:
        lines.append(
            f"Compute: a token costs {fmt(flops / 1e9, 2)} GFLOP; batched prompt processing achieves "
            f"{fmt(pp_flops / 1e9, 0)} GFLOP/s here, which would allow {fmt(compute_ceiling, 0)} tok/s if "
            f"decode were as efficient. Decode multiplies matrices by a single vector, so per-token fixed "
            f"costs dominate a {fmt(n_params / 1e6, 0)}M-parameter model: {fmt(b['n_layer'], 0)} layers x "
            f"~20 graph nodes, each a barrier across the threads."
        )
    one_bw = by[min(by)].get("read_gbs")
    if one and native and one_bw:
        used = b["total"] * one / 1e9
        verdict = (
            "far below what one thread can read, so decode here is bound by compute and synchronisation, "
            "not by memory bandwidth"
            if used < 0.6 * one_bw
            else "close to what one thread can read, so memory bandwidth is the limit"
        )
        lines.append(
            f"Threads: 1 thread decodes {fmt(one, 1)} tok/s, {threads} threads {fmt(native, 1)} tok/s "
            f"(x{fmt(native / one, 2)}). One thread moves {fmt(used, 2)} GB/s of weights and KV cache, "
            f"against {fmt(one_bw, 1)} GB/s it can read: {verdict}."
        )
    for line in lines:
        bench.note(line)
