"""The AMX guard and the build/CPU check (issue #11, item 1).

On Intel CPUs with AMX a GGML_NATIVE llama.cpp puts weights into AMX buffers and segfaults on the first
generation (upstream llama.cpp #20824); loading without llama.cpp's extra buffer types avoids it. The guard
must be active exactly where the CPU and the build have AMX and change nothing elsewhere. The decision
logic is tested with injected /proc/cpuinfo texts and llama.cpp system-info strings (this machine may
have no AMX); the real-model tests check, on whatever CPU runs them, that the loaded model follows the
decision and that the setting really reaches llama.cpp (the weight buffer types it allocates change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models import cpu

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 avx512f avx512dq avx512cd avx512bw \
avx512vl avx512_bf16 avx512vbmi avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu
"""
EPYC_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu pni ssse3 fma avx f16c avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 \
avx512vbmi avx512_vnni
"""
CASCADE_LAKE = """model name\t: Intel(R) Xeon(R) CPU @ 2.80GHz
flags\t\t: fpu pni ssse3 fma avx f16c avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
HASWELL = """model name\t: Intel(R) Xeon(R) CPU E5-2680 v3
flags\t\t: fpu pni ssse3 fma avx f16c avx2 bmi2
"""
# llama_print_system_info() of GGML_NATIVE builds compiled on those CPUs (0.3.36)
AMX_BUILD = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
ZEN4_BUILD = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
AVX2_BUILD = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 |"
)
CUDA_BUILD = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + AMX_BUILD


def decide(cpuinfo: str, system_info: str, setting: cpu.ExtraBuffers = "auto") -> bool:
    return cpu.extra_buffers(setting, cpu.read_cpuinfo(cpuinfo), cpu.build_features(system_info)).use_extra_bufts


def test_cpuinfo_and_system_info_are_parsed() -> None:
    spr = cpu.read_cpuinfo(SAPPHIRE_RAPIDS)
    assert spr.model.startswith("Intel(R) Xeon(R) Platinum 8481C") and spr.has_amx
    assert not cpu.read_cpuinfo(EPYC_ZEN4).has_amx
    assert cpu.read_cpuinfo("").flags == frozenset() and not cpu.read_cpuinfo("").has_amx
    assert {"AVX512", "AMX_INT8", "REPACK", "OPENMP"} <= cpu.build_features(AMX_BUILD)
    assert "AMX_INT8" not in cpu.build_features(ZEN4_BUILD)
    # a CUDA build lists its own backend first; the CPU part is still found, CUDA's keys are not CPU features
    features = cpu.build_features(CUDA_BUILD)
    assert "AMX_INT8" in features and "USE_GRAPHS" not in features


@pytest.mark.parametrize(
    ("cpuinfo", "system_info", "expected"),
    [
        (SAPPHIRE_RAPIDS, AMX_BUILD, False),  # the crash: AMX CPU and AMX build -> guard on (no extra buffers)
        (SAPPHIRE_RAPIDS, CUDA_BUILD, False),
        (SAPPHIRE_RAPIDS, AVX2_BUILD, True),  # built without AMX: nothing to guard, keep repacking
        (EPYC_ZEN4, ZEN4_BUILD, True),  # no AMX anywhere: unchanged
        (CASCADE_LAKE, ZEN4_BUILD.replace("AVX512_VBMI = 1 | ", ""), True),
        (HASWELL, AVX2_BUILD, True),
        ("", AMX_BUILD, True),  # no /proc/cpuinfo (not Linux): AMX cannot be confirmed, llama.cpp's default
    ],
)
def test_the_guard_is_on_only_where_cpu_and_build_have_amx(cpuinfo: str, system_info: str, expected: bool) -> None:
    assert decide(cpuinfo, system_info) is expected


def test_the_setting_forces_either_way() -> None:
    assert decide(EPYC_ZEN4, ZEN4_BUILD, "off") is False
    assert decide(SAPPHIRE_RAPIDS, AMX_BUILD, "on") is True
    reason = cpu.extra_buffers("auto", cpu.read_cpuinfo(SAPPHIRE_RAPIDS), cpu.build_features(AMX_BUILD)).reason
    assert "AMX" in reason and "#20824" in reason


def test_a_build_for_another_cpu_is_recognised() -> None:
    # pip's wheel cache reused a -march=native wheel from a newer CPU: it would die with SIGILL
    assert cpu.missing_instructions(cpu.build_features(AMX_BUILD), cpu.read_cpuinfo(EPYC_ZEN4)) == [
        "AMX_INT8",
        "AVX_VNNI",
    ]
    assert cpu.missing_instructions(cpu.build_features(ZEN4_BUILD), cpu.read_cpuinfo(HASWELL)) == [
        "AVX512",
        "AVX512_BF16",
        "AVX512_VBMI",
        "AVX512_VNNI",
    ]
    assert cpu.missing_instructions(cpu.build_features(AVX2_BUILD), cpu.read_cpuinfo(SAPPHIRE_RAPIDS)) == []
    assert cpu.missing_instructions(cpu.build_features(AMX_BUILD), cpu.read_cpuinfo("")) == []  # unknown CPU
    assert "--no-cache-dir" in cpu.crash_fix("SIGILL (illegal instruction)", cpu.read_cpuinfo(HASWELL))
    assert "FIRSTLINE_CPU_EXTRA_BUFFERS" in cpu.crash_fix("SIGSEGV (segfault)", cpu.read_cpuinfo(SAPPHIRE_RAPIDS))


# -- the real build on this machine ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    """llama.cpp's build report and this CPU's facts, from a child process (a bad build cannot kill pytest)."""
    from models.selfcheck import probe_build

    report, error = probe_build()
    assert report is not None, error
    return report


@pytest.mark.real_model
def test_this_build_fits_this_cpu(probe: dict[str, Any]) -> None:
    assert probe["missing_instructions"] == [], probe  # else: rebuild (make install does it; see README)
    assert "REPACK" in probe["build_features"]


@pytest.mark.real_model
def test_the_loaded_model_follows_the_decision_on_this_cpu(probe: dict[str, Any]) -> None:
    """On an AMX CPU with an AMX build: no extra buffers, no AMX weight buffer, and it generates. Elsewhere:
    llama.cpp's default (extra buffers on), i.e. the guard changes nothing."""
    from models.remote import WorkerChatModel
    from models.settings import ModelSettings
    from models.types import ChatMessage

    model = WorkerChatModel(ModelSettings(temperature=0.0, n_ctx=512))
    try:
        info = model.info
        text, usage = model.complete([ChatMessage("user", "Name a colour.")], max_tokens=8)
    finally:
        model.close()
    amx_here = probe["cpu_amx"] and "AMX_INT8" in probe["build_features"]
    assert info["use_extra_bufts"] is (not amx_here) is probe["use_extra_bufts"]
    assert info["load_kwargs"]["use_extra_bufts"] is info["use_extra_bufts"]
    assert info["buffers"], "llama.cpp reported no weight buffers"
    assert "AMX" not in info["buffers"]  # AMX never holds weights with the guard (and cannot without AMX)
    assert usage.completion_tokens > 0 and text.strip()


@pytest.fixture(scope="module")
def q4_0_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model re-quantized to Q4_0 (a type llama.cpp repacks on x86 with AVX2), in a child."""
    from models import loader
    from ui.bench.worker import requantize

    return requantize(loader.default_model_path(), tmp_path_factory.mktemp("q4_0") / "smollm2-q4_0.gguf")


@pytest.mark.real_model
def test_the_setting_reaches_llama_cpp(probe: dict[str, Any], q4_0_model: Path) -> None:
    """Forced on, a Q4_0 model's weights go to an extra buffer type (CPU_REPACK; AMX on an AMX build); off (what
    the guard does), none does. Loaded without the self-check generation: on an AMX CPU "on" would crash."""
    from models.remote import WorkerChatModel
    from models.settings import ModelSettings

    buffers: dict[str, dict[str, float]] = {}
    for setting in ("on", "off"):
        model = WorkerChatModel(
            ModelSettings(model_path=q4_0_model, model_sha256="skip", cpu_extra_buffers=setting, n_ctx=512),
            self_check=False,
        )
        try:
            buffers[setting] = model.info["buffers"]
            assert model.info["use_extra_bufts"] is (setting == "on")
        finally:
            model.close()
    plain = {"CPU", "CPU_Mapped"}
    assert set(buffers["off"]) <= plain, buffers
    if "AVX2" in probe["build_features"]:  # llama.cpp repacks Q4_0 for AVX2 (and uses AMX where it has it)
        assert set(buffers["on"]) - plain, buffers
    if probe["cpu_amx"] and "AMX_INT8" in probe["build_features"]:
        assert "AMX" in buffers["on"], buffers  # what the guard keeps out
