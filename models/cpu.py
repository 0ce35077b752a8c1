"""What this CPU can do, what the installed llama.cpp build expects of it, and the decisions that follow.

Two native failures are decided here, both from plain text so tests can inject any CPU:

* **AMX.** On Intel CPUs with AMX (Sapphire Rapids and later: `amx_tile amx_int8` in /proc/cpuinfo) a
  llama.cpp built with `GGML_NATIVE` puts quantized weights into AMX buffers and segfaults in
  `ggml_backend_amx_mul_mat` on the first generation (upstream llama.cpp #20824). Loading without llama.cpp's
  "extra buffer types" (`llama_model_params.use_extra_bufts = false`) avoids it. The guard is on only where
  both the CPU and the build have AMX: elsewhere the extra buffer types are CPU_REPACK, which speeds up
  Q4_0 / Q4_K / IQ4_NL / Q8_0 models, and turning them off would only cost speed (docs/performance.md).
* **A build for another CPU.** pip caches the llama-cpp-python wheel it compiled with `-march=native`;
  a wheel built on a newer CPU and reused on an older one dies with SIGILL. llama.cpp reports the
  instruction sets it was compiled with (`llama_print_system_info`, e.g. `AVX512 = 1`); any the CPU lacks
  means the build must be redone on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ExtraBuffers = Literal["auto", "on", "off"]

CPUINFO = Path("/proc/cpuinfo")
AMX_FLAGS = frozenset({"amx_tile", "amx_int8"})
# llama.cpp's CPU feature names (ggml-cpu.cpp, compiled-in instruction sets on x86) -> the /proc/cpuinfo flag
FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
REBUILD_HINT = (
    "rebuild llama-cpp-python on this machine: "
    ".venv/bin/pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==0.3.36"
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (from /proc/cpuinfo; empty where there is none)."""

    model: str
    flags: frozenset[str]

    @property
    def has_amx(self) -> bool:
        return self.flags >= AMX_FLAGS


def read_cpuinfo(text: str | None = None) -> CpuInfo:
    """Parse /proc/cpuinfo (or the given text): the first processor's model name and flags."""
    if text is None:
        try:
            text = CPUINFO.read_text(errors="replace")
        except OSError:
            return CpuInfo("unknown", frozenset())
    model, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


def build_features(system_info: str) -> frozenset[str]:
    """The CPU features a llama.cpp build reports as on (`CPU : AVX2 = 1 | ...` -> {"AVX2", ...})."""
    cpu_part = system_info
    match = re.search(r"\bCPU\s*:(.*?)(?:\b[A-Z][A-Za-z0-9_]*\s*:\s|$)", system_info, re.S)
    if match:
        cpu_part = match.group(1)
    return frozenset(name for name, value in re.findall(r"([A-Z][A-Z0-9_]*)\s*=\s*(\w+)", cpu_part) if value == "1")


def missing_instructions(features: frozenset[str], cpu: CpuInfo) -> list[str]:
    """Instruction sets the build was compiled with that this CPU lacks (non-empty: it will crash, SIGILL).

    Unknown when /proc/cpuinfo has no flags (not Linux x86): then nothing is reported missing."""
    if not cpu.flags:
        return []
    return sorted(name for name, flag in FEATURE_FLAGS.items() if name in features and flag not in cpu.flags)


@dataclass(frozen=True)
class BufferDecision:
    """Whether the model is loaded with llama.cpp's extra CPU buffer types, and why."""

    use_extra_bufts: bool
    reason: str


def extra_buffers(setting: ExtraBuffers, cpu: CpuInfo, features: frozenset[str]) -> BufferDecision:
    """Decide `use_extra_bufts`: `auto` turns it off only where the CPU and the build both have AMX."""
    if setting == "on":
        return BufferDecision(True, "on (FIRSTLINE_CPU_EXTRA_BUFFERS=on)")
    if setting == "off":
        return BufferDecision(False, "off (FIRSTLINE_CPU_EXTRA_BUFFERS=off)")
    if cpu.has_amx and "AMX_INT8" in features:
        return BufferDecision(
            False,
            "off: this CPU and the llama.cpp build have AMX, whose weight buffers crash llama.cpp "
            "(upstream #20824); weights stay in plain CPU buffers",
        )
    if cpu.has_amx:
        return BufferDecision(True, "on: the CPU has AMX but the llama.cpp build does not use it")
    return BufferDecision(True, "on: no AMX on this CPU")


def crash_fix(cause: str, cpu: CpuInfo | None = None) -> str:
    """What an operator can do about a model worker that died, hung or could not load (one sentence)."""
    facts = cpu or read_cpuinfo()
    if "SIGILL" in cause:
        return REBUILD_HINT + " (pip reused a wheel compiled for another CPU)"
    if "SIGSEGV" in cause or "SIGBUS" in cause:
        if facts.has_amx:
            return (
                "this CPU has AMX: make sure FIRSTLINE_CPU_EXTRA_BUFFERS is auto or off (upstream llama.cpp #20824), "
                "or rebuild llama-cpp-python without AMX (README, Requirements); `firstline doctor` shows the details"
            )
        return (
            "check the model file (FIRSTLINE_MODEL_PATH, FIRSTLINE_MODEL_SHA256) and run `firstline doctor`; "
            f"if it persists, {REBUILD_HINT}"
        )
    if "SIGKILL" in cause or "SIGABRT" in cause:
        return "likely out of memory: use a smaller model or FIRSTLINE_N_CTX, or give the machine more memory"
    if "within" in cause or "hung" in cause:
        return (
            "a large model on a slow disk needs more time: raise FIRSTLINE_WORKER_START_TIMEOUT_S; "
            "otherwise run `firstline doctor`"
        )
    return "run `firstline doctor` for each step of loading and generating, one at a time"
