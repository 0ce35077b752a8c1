"""SQLite connection policy shared by firstline's stores (ledger, conversations, tickets, knowledge).

One connection per store object, serialized by a lock (sqlite3 connections are not safe for interleaved
transactions from several threads). WAL journal, `synchronous=FULL` (a committed row survives power loss),
a busy timeout for other processes, and writes that start with `BEGIN IMMEDIATE` so a read-then-write
never deadlocks or loses an update. Migrations run inside one immediate transaction, so two processes
opening a new database at once cannot both apply them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.errors import StorageError

BUSY_TIMEOUT_S = 15.0


def connect(path: Path | str, *, readonly: bool = False) -> Database:
    """Open a SQLite database with firstline's pragmas (WAL, synchronous=FULL, busy timeout)."""
    path = Path(path)
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    return Database(conn, execute_plugins=False)


def describe(exc: sqlite3.Error) -> str:
    """A one-line operator explanation for a SQLite failure."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return f"database is locked by another process for more than {BUSY_TIMEOUT_S:.0f}s ({text})"
    if "full" in low:
        return f"disk full: the database could not be written, nothing was changed ({text})"
    if "readonly" in low or "read-only" in low:
        return f"database is read-only: check file and directory permissions ({text})"
    if "malformed" in low or "not a database" in low:
        return f"database file is corrupt or not a SQLite database ({text})"
    return text


class _Shared:
    """One connection and lock per database file per process, shared by every store on that file."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        self.lock = threading.RLock()
        self.users = 0


_SHARED: dict[Path, _Shared] = {}
_SHARED_LOCK = threading.Lock()


class Store:
    """Base for a SQLite-backed store: a locked connection, immediate write transactions, migrations.

    Stores on the same file share one connection, so a process never has two writers of its own
    competing for the database (SQLite before 3.51.3 can corrupt a WAL under concurrent writers).
    """

    def __init__(self, path: Path | str, migrations: Migrations | None = None) -> None:
        self.path = Path(path).resolve()
        with _SHARED_LOCK:
            shared = _SHARED.get(self.path)
            if shared is None:
                shared = _SHARED[self.path] = _Shared(self.path)
            shared.users += 1
        self._shared = shared
        self.db = shared.db
        self._lock = shared.lock
        self._closed = False
        if migrations is not None:
            with self.write() as db:
                migrations.apply(db)

    @contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:  # nested: join the outer transaction
                yield self.db
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(describe(exc)) from exc
            try:
                yield self.db
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(describe(exc)) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[Database]:
        """Serialized access for reads."""
        with self._lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise StorageError(describe(exc)) from exc

    def close(self) -> None:
        """Release this store; the connection closes when the last store on the file is closed."""
        with _SHARED_LOCK:
            if self._closed:
                return
            self._closed = True
            self._shared.users -= 1
            if self._shared.users == 0:
                _SHARED.pop(self.path, None)
                with self._lock:
                    self.db.close()
