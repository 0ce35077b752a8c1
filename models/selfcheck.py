"""The model checks of `firstline doctor` and of `firstline serve`'s start: each risky step in a child process.

A llama.cpp build that does not fit this CPU dies while the library loads (SIGILL); a model that crashes in
a CPU kernel dies on its first generation (SIGSEGV, as with AMX, upstream llama.cpp #20824). Both are
tried here in child processes, so the checking process survives to print one line naming the cause and
the fix. Each check is a `Check(name, ok, detail)`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from models import cpu, loader
from models.errors import ModelError
from models.settings import ModelSettings
from models.supervisor import exit_cause

PROBE_TIMEOUT_S = 20.0
CHECK_PROMPT = "Say OK."


@dataclass(frozen=True)
class Check:
    """One line of `firstline doctor`."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_build(timeout: float = PROBE_TIMEOUT_S) -> tuple[dict[str, Any] | None, str]:
    """Run `python -m models.worker --probe` in a child: (its report, '') or (None, why it failed)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "models.worker", "--probe"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"loading llama.cpp hung for {timeout:.0f}s"
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
        return None, f"loading llama.cpp failed: {exit_cause(done.returncode)} {tail[0]}".strip()
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"the llama.cpp probe printed no report: {done.stdout[-200:]!r}"


def build_checks(report: dict[str, Any] | None, error: str) -> list[Check]:
    """The CPU / build compatibility check and the AMX guard's decision, from a probe report."""
    facts = cpu.read_cpuinfo()
    if report is None:
        return [Check("llama.cpp build", False, f"{error}; fix: {cpu.crash_fix(error, facts)}")]
    features = " ".join(report["build_features"]) or "none reported"
    missing = report["missing_instructions"]
    if missing:
        build = Check(
            "llama.cpp build",
            False,
            f"compiled for another CPU: uses {', '.join(missing)}, which {facts.model} lacks; fix: {cpu.REBUILD_HINT}",
        )
    else:
        build = Check("llama.cpp build", True, f"fits {facts.model} (compiled with {features})")
    amx = "AMX" if report["cpu_amx"] else "no AMX"
    guard = Check("cpu buffers", True, f"{amx}; extra CPU buffer types {report['extra_buffers_reason']}")
    return [build, guard]


def model_file_check(settings: ModelSettings) -> Check:
    """The configured model file exists, is a GGUF and has its checksum."""
    try:
        path, sha = loader.resolve_model(settings.model_path, settings.model_sha256)
        loader.check_model_file(path, sha)
    except ModelError as exc:
        return Check("model file", False, str(exc))
    checked = "checksum ok" if sha and sha.lower() != "skip" else "no checksum configured"
    return Check("model file", True, f"{path} ({path.stat().st_size / 1e6:.0f} MB, {checked})")


def generation_check(settings: ModelSettings, backend: str = "llama") -> Check:
    """Start a model worker (it loads the model and runs its self-check), generate a few tokens, stop it."""
    from models.remote import WorkerChatModel

    t0 = time.perf_counter()
    try:
        model = WorkerChatModel(settings, backend=backend)
    except ModelError as exc:
        return Check("generation", False, str(exc))
    try:
        from models.types import ChatMessage

        text, usage = model.complete([ChatMessage("user", CHECK_PROMPT)], max_tokens=8, temperature=0.0)
        info = model.info
    except ModelError as exc:
        return Check("generation", False, f"{exc}; fix: {cpu.crash_fix(str(exc))}")
    finally:
        model.close()
    buffers = ", ".join(f"{k} {v:.0f} MiB" for k, v in (info.get("buffers") or {}).items()) or "not reported"
    return Check(
        "generation",
        True,
        f"{info.get('model_id')} on {info.get('device')} in a child process: {usage.completion_tokens} tokens "
        f"{text.strip()[:40]!r} in {time.perf_counter() - t0:.1f}s with loading (weights: {buffers})",
    )


def engine_check(settings: ModelSettings) -> Check:
    """A served engine (FIRSTLINE_ENGINE=llama-server / openai): start or reach it, show its replicas, generate."""
    from models.engine import load_engine
    from models.types import ChatMessage, readiness

    name = f"engine {settings.engine}"
    t0 = time.perf_counter()
    try:
        model = load_engine(settings)
    except (ModelError, ValueError) as exc:
        return Check(name, False, str(exc))
    try:
        ready = readiness(model)
        if not ready.ready:
            return Check(name, False, ready.detail)
        text, usage = model.complete([ChatMessage("user", CHECK_PROMPT)], max_tokens=8, temperature=0.0)  # type: ignore[attr-defined]
    except ModelError as exc:
        return Check(name, False, str(exc))
    finally:
        close = getattr(model, "close", None)
        if callable(close):
            close()
    return Check(
        name,
        True,
        f"{model.model_id} on {model.device}: {ready.detail}; {usage.completion_tokens} tokens {text.strip()[:40]!r} "
        f"from {usage.replica} in {time.perf_counter() - t0:.1f}s with starting",
    )


def model_checks(settings: ModelSettings, backend: str = "llama") -> list[Check]:
    """Every model check of `firstline doctor`, in order; later ones are skipped once one fails."""
    if backend == "scripted":
        return [generation_check(settings, backend)]
    if settings.engine == "openai":
        return [engine_check(settings)]
    report, error = probe_build()
    checks = build_checks(report, error)
    if not checks[0].ok:
        return checks
    checks.append(model_file_check(settings))
    if checks[-1].ok:
        served = settings.engine == "llama-server"
        checks.append(engine_check(settings) if served else generation_check(settings, backend))
    return checks
