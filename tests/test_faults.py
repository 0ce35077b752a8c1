"""Faults: bad model files, a model failing mid-chat, and a database that is locked, full or read-only.

Each fails loudly and clearly: the CLI prints one line (no traceback) within 10 seconds, a customer is
told to try again, a model failure hands the conversation to a person and is recorded in the ledger, and
storage failures raise usage.errors.StorageError with usage.db.describe's explanation. Nothing is
corrupted: PRAGMA integrity_check stays ok and earlier rows are intact.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from models import loader
from models.fake import ScriptedChatModel
from usage.errors import StorageError

ROOT = Path(__file__).resolve().parent.parent


def serve_once(env: dict[str, str], prefix: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    res = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "ui.cli", "serve", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res, time.monotonic() - t0


def assert_one_line(res: subprocess.CompletedProcess[str], *words: str) -> str:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("firstline: error:") and "Traceback" not in res.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_truncated_model_with_checksum_skipped_fails_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    """The header is fine and the checksum is skipped, so llama.cpp itself must fail: in one line too."""
    cut = tmp_path / "cut.gguf"
    with loader.default_model_path().open("rb") as fh:
        cut.write_bytes(fh.read(1 << 20))
    res, took = serve_once({"FIRSTLINE_MODEL_PATH": str(cut), "FIRSTLINE_MODEL_SHA256": "skip"})
    line = assert_one_line(res, "could not load", str(cut))
    assert took < 10 and "truncated" in line
    assert res.stdout == ""  # llama.cpp's own loader messages do not leak


def test_random_bytes_with_gguf_magic_fail_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(200_000))
    res, took = serve_once({"FIRSTLINE_MODEL_PATH": str(junk), "FIRSTLINE_MODEL_SHA256": "skip"})
    assert_one_line(res, str(junk))
    assert took < 10


def _without_root_powers() -> list[str] | None:
    """A command prefix that makes root subject to file permissions (None: not possible here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all",
                            "true"], capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]


def test_unreadable_model_fails_in_one_line(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(b"GGUF" + b"\0" * 100)
    locked.chmod(0)
    prefix = _without_root_powers()
    if prefix is not None:  # a real permission failure, as a non-root service account would see it
        res, took = serve_once({"FIRSTLINE_MODEL_PATH": str(locked)}, prefix)
        assert_one_line(res, "not readable", "chmod")
        assert took < 10
        return
    # root without a way to drop its file powers: make access() report what a service account would see
    from ui.cli.main import main

    monkeypatch.setenv("FIRSTLINE_MODEL_PATH", str(locked))
    monkeypatch.setattr("models.loader.os.access", lambda *a, **k: False)
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code == 3 and "not readable" in result.output and "Traceback" not in result.output


def test_model_failure_during_a_chat_escalates_and_is_recorded(data_dir: Path) -> None:
    from ui.app import build_services
    from ui.web.customer import respond

    model = ScriptedChatModel()
    services = build_services(data_dir, model=model, demo_kb=False)
    try:
        from bot.conversation import Bot

        bot = Bot(model=model, store=services.store, ledger=services.ledger, settings=services.bot_settings,
                  tickets=services.tickets)  # fmt: skip
        model.enqueue(RuntimeError("CUDA error: out of memory"), RuntimeError("CUDA error: out of memory"))
        frames = list(respond(bot, "Why is my internet so slow today?", [], "c-fail", "en"))
        shown = frames[-1][1][-1]["content"]
        rows = services.ledger.rows("conversation_id = 'c-fail'")
        ticket = services.tickets.active_for("c-fail")
    finally:
        services.close()
    assert "ticket number" in shown  # the customer is handed to a person, not left with an error
    assert ticket is not None and ticket.reason in ("model_failure", "model_decision")
    assert any(r["status"] == "error" and "out of memory" in (r["error"] or "") for r in rows), rows


# -- storage faults ------------------------------------------------------------------------------------------
@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("usage.db.BUSY_TIMEOUT_S", 0.3)


@pytest.fixture
def chat(data_dir: Path, short_busy: None) -> Iterator[Any]:
    """Services with one earlier conversation already stored."""
    from ui.app import build_services

    services = build_services(data_dir, model=ScriptedChatModel(), demo_kb=False)
    services.bot.handle_message("before", "Hello, how do I pay my bill?")
    yield services
    services.close()


def _snapshot(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, conversation_id, role, content FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _customer_sees(services: Any, text: str, conv: str) -> str:
    from ui.web.customer import SORRY, respond

    frames = list(respond(services.bot, text, [], conv, "en"))
    last = str(frames[-1][1][-1]["content"])
    assert last == SORRY and "try again" in last.lower()
    assert frames[-1][0] == text  # the message stays in the box, ready to send again
    return last


def test_locked_database_fails_loudly_and_recovers(chat: Any, data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    before = _snapshot(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock beyond the busy timeout
    try:
        with pytest.raises(StorageError, match="database is locked by another process"):
            chat.bot.handle_message("during", "How do I reset my password?")
        _customer_sees(chat, "How do I reset my password?", "during-ui")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _snapshot(db) == before and _integrity(db) == "ok"
    assert chat.bot.handle_message("after", "How do I reset my password?").text  # works again
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM requests WHERE status = 'started'").fetchone()[0] == 0
    conn.close()


def test_full_disk_fails_loudly_without_corruption(chat: Any, data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    before = _snapshot(db)
    conn = chat.store.db.conn  # the process's one connection: cap the file at its current size
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        with pytest.raises(StorageError, match="disk full"):
            for i in range(200):  # fill the last free pages
                chat.bot.handle_message(f"fill-{i}", "How do I reset my password? " + "x" * 1500)
        _customer_sees(chat, "How do I reset my password?", "full-ui")
    finally:
        conn.execute("PRAGMA max_page_count = 1073741823")
    assert _snapshot(db)[: len(before)] == before and _integrity(db) == "ok"
    assert chat.bot.handle_message("after-full", "How do I reset my password?").text


def test_read_only_database_fails_loudly_without_corruption(chat: Any, data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    before = _snapshot(db)
    conn = chat.store.db.conn
    conn.execute("PRAGMA query_only = ON")  # as a read-only file or mount looks to SQLite (root ignores chmod)
    try:
        with pytest.raises(StorageError, match="read-only"):
            chat.bot.handle_message("ro", "How do I reset my password?")
        _customer_sees(chat, "How do I reset my password?", "ro-ui")
    finally:
        conn.execute("PRAGMA query_only = OFF")
    assert _snapshot(db) == before and _integrity(db) == "ok"


def _storage_patch(monkeypatch: pytest.MonkeyPatch, pragma: str) -> None:
    """Every connection the CLI opens gets `pragma` (read-only / full) applied."""
    import usage.db

    real = usage.db.connect

    def connect(path: Path | str, *, readonly: bool = False) -> Any:
        db = real(path, readonly=readonly)
        db.conn.execute(pragma)
        return db

    monkeypatch.setattr(usage.db, "connect", connect)


@pytest.mark.parametrize(
    ("pragma", "words"),
    [("PRAGMA query_only = ON", "read-only"), ("PRAGMA max_page_count = 1", "disk full")],
)
@pytest.mark.parametrize("command", [["ask", "How do I pay my bill?"], ["serve", "--port", "1"]])
def test_cli_reports_storage_faults_in_one_line(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, pragma: str, words: str, command: list[str]
) -> None:
    from ui.app import build_services
    from ui.cli.main import main

    build_services(data_dir, model=ScriptedChatModel(), demo_kb=False).close()  # an existing database
    before = _snapshot(data_dir / "firstline.db")
    monkeypatch.setenv("FIRSTLINE_MODEL_BACKEND", "scripted")
    _storage_patch(monkeypatch, pragma)
    t0 = time.monotonic()
    result = CliRunner().invoke(main, command)
    assert time.monotonic() - t0 < 10
    assert result.exit_code == 4, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("firstline: error:") and words in lines[0], result.output
    monkeypatch.undo()
    assert _snapshot(data_dir / "firstline.db") == before and _integrity(data_dir / "firstline.db") == "ok"


def test_cli_reports_a_locked_database_in_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.app import build_services
    from ui.cli.main import main

    build_services(data_dir, model=ScriptedChatModel(), demo_kb=False).close()
    monkeypatch.setenv("FIRSTLINE_MODEL_BACKEND", "scripted")
    monkeypatch.setattr("usage.db.BUSY_TIMEOUT_S", 0.3)
    holder = sqlite3.connect(data_dir / "firstline.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = CliRunner().invoke(main, ["ask", "How do I pay my bill?"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 4 and len(lines) == 1 and "locked" in lines[0], result.output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://firstline:hunter2secret@127.0.0.1:1/firstline", "cannot reach PostgreSQL"),
        ("mysql://firstline@127.0.0.1/firstline", "unsupported database URL"),
    ],
)
def test_an_unreachable_or_unknown_database_url_fails_in_one_line(url: str, expected: str, data_dir: Path) -> None:
    """A wrong FIRSTLINE_DATABASE_URL: one line naming the problem at once, the password never shown."""
    proc = subprocess.run(
        [sys.executable, "-m", "ui.cli", "tickets", "list"],
        env={**os.environ, "FIRSTLINE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert expected in proc.stderr and "hunter2secret" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
