"""The `firstline` command line: ask --json through the full path, clean one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.real_model
def test_ask_json_runs_the_full_path_and_writes_a_completed_ledger_row(data_dir: Path) -> None:
    res = run_cli("ask", "Wie kann ich mein Passwort zurücksetzen?", "--json", env={"FIRSTLINE_MAX_TOKENS": "32"})
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)  # exactly one JSON document on stdout
    for key in ("answer", "route", "sources", "ticket_id", "request_id", "conversation_id", "compute_s"):
        assert key in payload
    assert payload["answer"].strip()
    assert payload["route"] in ("faq", "model", "human")
    assert payload["compute_s"] > 0
    conn = sqlite3.connect(data_dir / "firstline.db")
    status, compute_s, conv = conn.execute(
        "SELECT status, compute_s, conversation_id FROM requests WHERE request_id = ?",
        [payload["request_id"]],
    ).fetchone()
    assert (status, conv) == ("completed", payload["conversation_id"]) and compute_s > 0
    # a second turn in the same conversation
    res2 = run_cli("ask", "Danke! Und meine E-Mail-Adresse?", "--conversation", payload["conversation_id"], "--json")
    assert res2.returncode == 0, res2.stderr
    n = conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", [payload["conversation_id"]])
    assert n.fetchone()[0] == 4
    conn.close()


def test_ask_with_scripted_backend_and_bad_input(data_dir: Path) -> None:
    env = {"FIRSTLINE_MODEL_BACKEND": "scripted"}
    ok = run_cli("ask", "How do I pay my bill?", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["route"] in ("faq", "model", "human")
    empty = run_cli("ask", "   ", "--json", env=env)
    assert empty.returncode != 0 and empty.stdout == ""
    assert empty.stderr.strip().count("\n") == 0 and "question" in empty.stderr
    bad_id = run_cli("ask", "hi", "--conversation", "../../x", env=env)
    assert bad_id.returncode != 0 and "invalid conversation id" in bad_id.stderr


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "directory", "wrong-hash"])
def test_serve_with_a_bad_model_says_what_is_wrong_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.gguf"
    env = {"FIRSTLINE_MODEL_PATH": str(path)}
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(10000))
    elif kind == "directory":
        path.mkdir()
    elif kind == "wrong-hash":
        path.write_bytes(b"GGUF" + os.urandom(1000))
        env["FIRSTLINE_MODEL_SHA256"] = "0" * 64
    t0 = time.monotonic()
    res = run_cli("serve", "--port", "1", env=env, timeout=30)
    assert time.monotonic() - t0 < 10
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and lines[0].startswith("firstline: error:")
    assert "FIRSTLINE_MODEL" in lines[0] or "reinstall" in lines[0] or "permissions" in lines[0]
