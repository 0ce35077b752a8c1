"""Shared fixtures: a temporary data directory per test, the fake and the real model, a live server.

Stores: a test marked `@pytest.mark.stores` runs twice, on SQLite (the data directory's file) and on
PostgreSQL (a fresh schema of the database FIRSTLINE_TEST_DATABASE_URL names, which `make test` starts with
scripts/postgres.sh). `FIRSTLINE_DATABASE_URL` is set for it, so servers and CLI commands it starts use the
same store; the `database` fixture is the target to hand to stores, `db_rows` reads rows on either.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# gradio_client otherwise reports usage to the internet (unreachable here, and not wanted anywhere)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from models.fake import ScriptedChatModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI every tier must run: a skipped test is a failure there."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (every tier must run): {report.longrepr}"


PG_URL = os.environ.get("FIRSTLINE_TEST_DATABASE_URL", "")
STORES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.stores`: run the test on SQLite and on PostgreSQL."""
    explicit = any("store_kind" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if metafunc.definition.get_closest_marker("stores") and "store_kind" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("store_kind", STORES, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str) -> Iterator[Path]:
    """Each test gets its own FIRSTLINE_DATA_DIR (and on PostgreSQL its own schema)."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("FIRSTLINE_DATA_DIR", str(path))
    monkeypatch.delenv("FIRSTLINE_DATABASE_URL", raising=False)
    if store_kind != "postgresql":
        yield path
        return
    if not PG_URL:
        pytest.skip(
            "PostgreSQL is not set up: FIRSTLINE_TEST_DATABASE_URL is empty (make test runs scripts/postgres.sh)"
        )
    url = pg_schema_url(f"t_{uuid.uuid4().hex[:16]}")
    monkeypatch.setenv("FIRSTLINE_DATABASE_URL", url)
    try:
        yield path
    finally:
        drop_pg_schema(url)


def pg_schema_url(schema: str) -> str:
    """A URL of the test database whose connections all work in a new schema of their own."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"


def drop_pg_schema(url: str) -> None:
    import psycopg

    from usage.db import close_all

    close_all(url)
    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def store_target(data_dir: Path) -> Path | str:
    """The test's store: the data directory's SQLite file, or the PostgreSQL URL of its schema."""
    return os.environ.get("FIRSTLINE_DATABASE_URL") or data_dir / "firstline.db"


@pytest.fixture
def database(data_dir: Path) -> Path | str:
    """The test's store (see store_target)."""
    return store_target(data_dir)


def open_db(target: Path | str) -> Any:
    """A connection to either store with sqlite-utils' API (autocommit; close it when done)."""
    from usage.db import connect

    return connect(target)


def rows_planted(target: Path | str) -> None:
    """After a test wrote ledger rows directly (as the ledger would have finished them): on PostgreSQL the
    ledger's daily rollup is maintained by `Ledger.finish`, so rebuild it from the planted rows (on SQLite the
    conversation rollup, the only one kept there)."""
    from usage.ledger import rebuild_conversation_rollup, rebuild_rollup

    db = open_db(target)
    try:
        if db.dialect == "postgresql":
            rebuild_rollup(db)
        else:
            rebuild_conversation_rollup(db)
    finally:
        db.close()


def db_rows(target: Path | str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on either store, as tuples (a connection of its own, closed at once)."""
    from usage.db import connect

    db = connect(target)
    try:
        return [tuple(r) for r in db.execute(sql, list(params)).fetchall()]
    finally:
        db.close()


def db_execute(target: Path | str, sql: str, params: Sequence[Any] = ()) -> None:
    """One statement on either store, committed (to plant rows the way another process would)."""
    from usage.db import connect

    db = connect(target)  # both in autocommit mode: the statement commits by itself
    try:
        db.execute(sql, list(params))
    finally:
        db.close()


@pytest.fixture
def fake_model() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
def services(data_dir: Path, fake_model: ScriptedChatModel) -> Iterator[object]:
    from ui.app import build_services

    svc = build_services(data_dir, model=fake_model)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def real_model() -> object:
    """The bundled GGUF model, loaded once per test session (in this process: tests look inside it), greedy.

    It is first loaded and made to generate in a child process (`firstline doctor`'s check): a llama.cpp
    that crashes on this CPU (AMX, a wheel built for another CPU) fails the real-model tests with the
    cause, instead of taking pytest down with a segfault."""
    from models.llama import LlamaChatModel
    from models.selfcheck import generation_check
    from models.settings import ModelSettings

    settings = ModelSettings(temperature=0.0, seed=1234, max_tokens=48, n_ctx=2048)
    check = generation_check(settings)
    if not check.ok:
        pytest.fail(f"the model does not generate on this machine (tried in a child process): {check.detail}")
    return LlamaChatModel(settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc), e.g. the model worker of a `firstline serve`."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class LiveServer:
    """`firstline serve` in a subprocess on a free port."""

    def __init__(
        self, data_dir: Path, backend: str = "llama", env: dict[str, str] | None = None, name: str = "server"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        full_env = {
            **os.environ,
            "FIRSTLINE_DATA_DIR": str(data_dir),
            "FIRSTLINE_MODEL_BACKEND": backend,
            "FIRSTLINE_TEMPERATURE": "0",
            "FIRSTLINE_MAX_TOKENS": "40",
            **(env or {}),
        }
        self.log = data_dir / f"{name}.log"
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ui.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=full_env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def worker_pid(self, timeout: float = 30.0, other_than: int | None = None) -> int:
        """The pid of the server's model worker process (waits for a (re)started one)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = [p for p in child_pids(self.proc.pid) if p != other_than]
            if pids:
                return pids[0]
            time.sleep(0.05)
        raise AssertionError(f"no model worker process under the server (pid {self.proc.pid})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


@pytest.fixture
def live_server_factory(data_dir: Path) -> Iterator[object]:
    servers: list[LiveServer] = []

    def start(backend: str = "llama", env: dict[str, str] | None = None) -> LiveServer:
        server = LiveServer(data_dir, backend, env)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Screenshot every open page of a failed browser test into tests/artifacts/."""
    outcome = yield
    if outcome.excinfo is None:
        return
    for page in getattr(item, "_pages", []):
        try:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{item.name}-{id(page)}.png"))
        except Exception:
            pass
