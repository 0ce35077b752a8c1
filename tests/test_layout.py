"""The code's layout: one room per program under ui/, entry points where the docs say, a light bench core.

The import layers themselves are import-linter contracts (pyproject.toml, run by `make lint`).
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI_ENTRIES = {"__init__.py", "app.py", "auth.py", "settings.py", "bench", "cli", "web"}
HEAVY = ("gradio", "sqlite_utils", "pydantic", "numpy")


def test_python_m_ui_cli_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ui.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: python -m ui.cli [OPTIONS] COMMAND [ARGS]...")
    for command in ("ask", "bench", "cost", "eval", "housekeeping", "kb", "report", "serve", "tickets", "users"):
        assert f"\n  {command} " in result.stdout


def test_the_console_script_points_at_the_command_line() -> None:
    (script,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "firstline"]
    assert script.value == "ui.cli.main:main"
    from ui.cli.main import main

    assert script.load() is main


def test_the_bench_core_stays_light() -> None:
    """scripts/gpu_bench.py runs ui.bench.core and ui.bench.native on machines without the product."""
    probe = (
        "import sys, ui.bench.core, ui.bench.native, usage.stats; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"ui.bench.core pulled in {result.stdout.strip()}"


def test_nothing_but_the_listed_modules_sits_directly_under_ui() -> None:
    entries = {p.name for p in (ROOT / "ui").iterdir() if p.name != "__pycache__"}
    assert entries == UI_ENTRIES, (
        f"unexpected under ui/: {sorted(entries - UI_ENTRIES)}; missing: {sorted(UI_ENTRIES - entries)} "
        "(a new module belongs in ui/web, ui/cli or ui/bench; see README, Architecture)"
    )
