"""The start-up self-check and `firstline doctor` (issue #11, item 3).

`firstline serve` and `firstline doctor` make the model generate in a child process before anything else;
when that child crashes or hangs they print one line naming the cause and the fix and exit non-zero
within 30 s. The crash and the hang are real: a `sitecustomize` module (on PYTHONPATH for these
processes only) makes the model worker process kill itself with SIGSEGV, or stop itself, while it loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port

SITECUSTOMIZE = """
import os, signal, sys, threading
argv = " ".join(getattr(sys, "orig_argv", []))
if "models.worker" in argv and "--probe" not in argv:
    threading.Timer(0.2, lambda: os.kill(os.getpid(), getattr(signal, {sig!r}))).start()
"""


def misbehaving_worker(tmp_path: Path, sig: str) -> dict[str, str]:
    """Environment whose model worker processes die (SIGSEGV) or freeze (SIGSTOP) while loading."""
    hook = tmp_path / f"hook-{sig}"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(sig=sig))
    return {**os.environ, "PYTHONPATH": str(hook), "FIRSTLINE_WORKER_START_TIMEOUT_S": "5"}


Run = subprocess.CompletedProcess[str]


def firstline(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[Run, float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ui.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return done, time.monotonic() - t0


@pytest.mark.parametrize(("sig", "cause"), [("SIGSEGV", "SIGSEGV (segmentation fault"), ("SIGSTOP", "hung")])
def test_serve_refuses_to_start_on_a_model_that_crashes_or_hangs(tmp_path: Path, sig: str, cause: str) -> None:
    env = misbehaving_worker(tmp_path, sig)
    done, took = firstline(["serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")], env)
    assert done.returncode != 0 and took < 30
    errors = [line for line in done.stderr.splitlines() if line.startswith("firstline: error:")]
    assert len(errors) == 1 and cause in errors[0] and "fix:" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "serving on" not in done.stdout  # it never accepted traffic


def test_doctor_names_the_crash_and_fails(tmp_path: Path) -> None:
    env = misbehaving_worker(tmp_path, "SIGSEGV")
    done, took = firstline(["doctor", "--json", "--data-dir", str(tmp_path / "data")], env)
    assert done.returncode == 1 and took < 30
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["llama.cpp build"]["ok"] and checks["model file"]["ok"] and checks["database"]["ok"]
    assert not checks["generation"]["ok"] and "SIGSEGV" in checks["generation"]["detail"]
    assert "fix:" in checks["generation"]["detail"]


@pytest.mark.real_model
def test_doctor_passes_on_a_working_install(tmp_path: Path) -> None:
    done, took = firstline(["doctor", "--data-dir", str(tmp_path / "data")], dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   llama.cpp build",
        "ok   cpu buffers",
        "ok   model file",
        "ok   generation",
        "ok   database",
    ]
    assert "in a child process" in lines[3]
    assert took < 30
