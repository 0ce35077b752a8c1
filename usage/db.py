"""The shared store: SQLite (the embedded default) or PostgreSQL, chosen by one setting.

`FIRSTLINE_DATABASE_URL` (or any store's `target` argument) is a path or `sqlite:///path` for a SQLite file,
or `postgresql://user:password@host:port/database` for PostgreSQL (`usage/pg.py`). Stores are written once
against sqlite-utils' `Database` API and `sqlite_utils.migrations.Migrations`; on PostgreSQL the same calls go
through psycopg 3 (see usage/pg.py for what is translated).

SQLite: one connection per database file per process, shared by every store on that file and serialized by
a lock (sqlite3 connections are not safe for interleaved transactions from several threads, and SQLite
before 3.51.3 can corrupt a WAL under concurrent writers of one process). WAL journal, `synchronous=FULL`
(a committed row survives power loss), a busy timeout for other processes, and writes that start with
`BEGIN IMMEDIATE` so a read-then-write never deadlocks or loses an update.

PostgreSQL: a connection pool per URL per process; each write is one transaction (READ COMMITTED) on one
pooled connection, joined by nested writes of the same thread. A write that reads first must lock what it
read: `db.lock_row(...)`-style `SELECT ... {db.for_update}` or `db.lock(name)` (both no-ops on SQLite).

Migrations run inside one write transaction (on PostgreSQL under an advisory lock), so two processes
opening a new database at once cannot both apply them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.errors import StorageError

BUSY_TIMEOUT_S = 15.0
Target: TypeAlias = Path | str  # a SQLite file (path or sqlite:/// URL) or a postgresql:// URL
DB: TypeAlias = Any  # a SqliteDatabase or a usage.pg.PgDatabase: the same sqlite-utils style API


class SqliteDatabase(Database):
    """sqlite-utils' Database with the two portability hooks the stores use (no-ops on SQLite)."""

    dialect = "sqlite"
    for_update = ""  # BEGIN IMMEDIATE already holds the write lock for the whole transaction

    def lock(self, name: str) -> None:
        """A named lock until the transaction ends: SQLite's writers are serialized already."""


def is_postgres(target: Target) -> bool:
    """Does this target name a PostgreSQL database?"""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def sqlite_file(target: Target) -> Path:
    """The file of a SQLite target: a path, `sqlite:///relative/path` or `sqlite:////absolute/path`."""
    if isinstance(target, str):
        if is_postgres(target):
            raise StorageError("this is a PostgreSQL URL, not a SQLite file")
        if target.startswith("sqlite:///"):
            target = target[len("sqlite:///") :]
        elif "://" in target:
            raise StorageError(
                f"unsupported database URL {target.split('://')[0]}://...: use sqlite:/// or postgresql://"
            )
    return Path(target)


def resolve(target: Target) -> Target:
    """A canonical target: an absolute SQLite path, or the PostgreSQL URL as given."""
    return target if is_postgres(target) else sqlite_file(target).resolve()


def exists(target: Target) -> bool:
    """Is there a database to read (a PostgreSQL URL always counts: reports then find empty tables)?"""
    return is_postgres(target) or sqlite_file(target).exists()


def connect(path: Target, *, readonly: bool = False) -> Any:
    """Open a database: SQLite with firstline's pragmas (WAL, synchronous=FULL, busy timeout), or a
    PostgreSQL connection of the process's pool (`close()` returns it)."""
    if is_postgres(path):
        return _pg_connection(str(path))
    path = sqlite_file(path)
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
    return SqliteDatabase(conn, execute_plugins=False)


def _pg_connection(url: str) -> Any:
    """A PgDatabase over a connection of its own (reports run queries in parallel threads)."""
    import psycopg

    from usage.pg import PgDatabase
    from usage.pg import describe as pg_describe

    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise StorageError(pg_describe(exc, url)) from exc
    db = PgDatabase(conn)
    db.close = conn.close  # type: ignore[method-assign]
    return db


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
    """One SQLite connection and lock per database file per process, shared by every store on that file."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        self.lock = threading.RLock()
        self.users = 0

    @contextmanager
    def write(self) -> Iterator[Any]:
        with self.lock:
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
    def read(self) -> Iterator[Any]:
        with self.lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise StorageError(describe(exc)) from exc

    def close(self) -> None:
        with self.lock:
            self.db.close()


_SHARED: dict[Target, Any] = {}
_SHARED_LOCK = threading.Lock()


POOL_SIZE = 10  # PostgreSQL connections per process at most (threads beyond it wait for one)


class Store:
    """Base for a store on the shared database: transactions, migrations, one connection policy per dialect.

    `target` is a SQLite path (or sqlite:/// URL) or a postgresql:// URL. On SQLite stores of one file share
    one connection, so a process never has two writers of its own competing for the database (SQLite
    before 3.51.3 can corrupt a WAL under concurrent writers); on PostgreSQL they share one pool.
    """

    def __init__(self, path: Target, migrations: Migrations | None = None) -> None:
        self.target = resolve(path)
        self.postgres = is_postgres(self.target)
        # the SQLite file (also where a per-host SQLite index beside a PostgreSQL store would live)
        self.path: Any = self.target
        with _SHARED_LOCK:
            shared = _SHARED.get(self.target)
            if shared is None:
                if self.postgres:
                    from usage.pg import PgShared

                    shared = PgShared(str(self.target), max_size=POOL_SIZE)
                else:
                    shared = _Shared(Path(self.target))
                _SHARED[self.target] = shared
            shared.users += 1
        self._shared = shared
        self.db = getattr(shared, "db", None)  # SQLite: the shared connection (PostgreSQL: use read/write)
        self._closed = False
        if migrations is not None:
            try:
                with self.write() as db:
                    db.lock("firstline.migrations")
                    migrations.apply(db)
            except BaseException:
                self.close()
                raise

    @contextmanager
    def write(self) -> Iterator[DB]:
        """A write transaction (SQLite: BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        with self._shared.write() as db:
            yield db

    @contextmanager
    def statement(self) -> Iterator[DB]:
        """One write statement that is atomic by itself (SQLite: a write transaction; PostgreSQL: autocommit on a
        pooled connection, which saves the BEGIN and COMMIT round trips; inside an open transaction: joins it)."""
        with self._shared.read() if self.postgres else self._shared.write() as db:
            yield db

    @contextmanager
    def read(self) -> Iterator[DB]:
        """Reads (SQLite: serialized on the shared connection; PostgreSQL: a pooled connection)."""
        with self._shared.read() as db:
            yield db

    def close(self) -> None:
        """Release this store; the connection (pool) closes when the last store on the database is closed."""
        with _SHARED_LOCK:
            if self._closed:
                return
            self._closed = True
            self._shared.users -= 1
            if self._shared.users == 0:
                _SHARED.pop(self.target, None)
                self._shared.close()


def each_in(db: DB, sql: str, ids: Iterable[Any], before: Sequence[Any] = (), size: int = 500) -> Iterator[Any]:
    """Run `sql` once per piece of `ids` small enough for one `IN ({ids})` (SQLite allows at most 32766
    parameters); yields each cursor. `before`: parameters ahead of the ids."""
    items = list(ids)
    for i in range(0, len(items), size):
        part = items[i : i + size]
        yield db.execute(sql.format(ids=", ".join("?" for _ in part)), [*before, *part])


def count_in(db: DB, sql: str, ids: Iterable[Any], before: Sequence[Any] = ()) -> int:
    """The sum of a `SELECT count(*) ... IN ({ids})` over all pieces of `ids`."""
    return sum(int(cur.fetchone()[0]) for cur in each_in(db, sql, ids, before))


def close_all(target: Target) -> None:
    """Close the process's connection (pool) to a database whatever stores still hold it (tests' teardown)."""
    with _SHARED_LOCK:
        shared = _SHARED.pop(resolve(target), None)
    if shared is not None:
        shared.close()
