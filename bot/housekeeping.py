"""Retention: conversations and tickets older than the retention period are deleted; the ledger stays.

A conversation is old when its last activity (`conversations.updated_at`) is before the cutoff. Its
messages, its (resolved) tickets and their events are deleted. A conversation whose ticket is still open
or claimed is kept whatever its age: staff are still working on it. FAQ suggestions that came from a
deleted ticket lose the link (their text was written by staff and reviewed; approved ones are part of the
knowledge base). Expired staff sessions and expired conversation tokens (chat resume links) are deleted too.

The ledger keeps its anonymous figures (seconds, tokens, cost, route, status, times) so cost reports stay
complete. Its `conversation_id` is replaced by a pseudonym (`purged-` + 16 hex digits, an HMAC under a
random key that is never stored), so rows of one conversation still group together while nothing links
them to the deleted conversation any more (conversation ids can be chosen by API callers, e.g. a name).

Deletion runs in one transaction with SQLite's `secure_delete` on (deleted text is overwritten in the
database file), followed by a WAL checkpoint so no copy is left in the write-ahead log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlite_utils import Database

from bot.conversation_store import ConversationStore
from bot.tickets import TicketStore
from usage.db import Store
from usage.ledger import iso, utcnow
from usage.ledger import migrations as ledger_migrations

PSEUDONYM_PREFIX = "purged-"


class HousekeepingSettings(BaseSettings):
    """How long customer data is kept."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    retention_days: float = Field(
        90, gt=0, description="Conversations and tickets without activity for this many days are deleted."
    )


@dataclass(frozen=True)
class PurgeReport:
    """What a housekeeping run deleted (or, with dry_run, would delete)."""

    cutoff: str
    older_than_days: float
    dry_run: bool
    conversations: int
    messages: int
    tickets: int
    ticket_events: int
    suggestions_unlinked: int
    ledger_rows_pseudonymised: int
    kept_active: int
    sessions: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def purge(
    path: Path | str, older_than_days: float, *, dry_run: bool = False, now: datetime | None = None
) -> PurgeReport:
    """Delete conversations and tickets without activity for `older_than_days`; pseudonymise the ledger."""
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    cutoff = iso((now or utcnow()) - timedelta(days=older_than_days))
    key = secrets.token_bytes(32)
    # the stores' migrations: the tables exist even in a database that has never seen a customer
    conversations = ConversationStore(path)
    schema = [conversations, TicketStore(path, conversations=conversations), Store(path, ledger_migrations)]
    store = Store(path)
    try:
        with store.read() as db:
            db.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten, not just unlinked
        with store.write() as db:
            report = _purge(db, cutoff, older_than_days, dry_run, key)
            if dry_run:
                raise _Rollback(report)
    except _Rollback as rollback:
        return rollback.report
    finally:
        for s in (store, *schema):
            s.close()
    _checkpoint(path)
    return report


class _Rollback(Exception):
    def __init__(self, report: PurgeReport) -> None:
        super().__init__("dry run")
        self.report = report


def _tables(db: Database) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}


def _count(db: Database, sql: str, params: list[Any]) -> int:
    return int(db.execute(sql, params).fetchone()[0])


def _purge(db: Database, cutoff: str, days: float, dry_run: bool, key: bytes) -> PurgeReport:
    tables = _tables(db)
    db.execute("CREATE TEMP TABLE IF NOT EXISTS purge_conversations (id TEXT PRIMARY KEY)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS purge_tickets (id TEXT PRIMARY KEY)")
    db.execute("DELETE FROM purge_conversations")
    db.execute("DELETE FROM purge_tickets")
    old = "coalesce(updated_at, created_at) < ?"
    active = "SELECT conversation_id FROM tickets WHERE status != 'resolved'"
    db.execute(f"INSERT INTO purge_conversations SELECT id FROM conversations WHERE {old} AND id NOT IN ({active})",
               [cutoff])  # fmt: skip
    kept_active = _count(db, f"SELECT count(*) FROM conversations WHERE {old} AND id IN ({active})", [cutoff])
    # tickets of purged conversations, and old resolved tickets whose conversation is already gone
    db.execute(
        "INSERT OR IGNORE INTO purge_tickets SELECT id FROM tickets "
        "WHERE conversation_id IN (SELECT id FROM purge_conversations) "
        f"OR (status = 'resolved' AND {old} AND conversation_id NOT IN (SELECT id FROM conversations))",
        [cutoff],
    )
    conversations = _count(db, "SELECT count(*) FROM purge_conversations", [])
    messages = _count(
        db, "SELECT count(*) FROM messages WHERE conversation_id IN (SELECT id FROM purge_conversations)", []
    )
    tickets = _count(db, "SELECT count(*) FROM purge_tickets", [])
    events = _count(db, "SELECT count(*) FROM ticket_events WHERE ticket_id IN (SELECT id FROM purge_tickets)", [])
    suggestions = (
        _count(db, "SELECT count(*) FROM faq_suggestions WHERE ticket_id IN (SELECT id FROM purge_tickets)", [])
        if "faq_suggestions" in tables
        else 0
    )
    ledger_rows = _pseudonymise_ledger(db, cutoff, key, dry_run)
    sessions = (
        _count(db, "SELECT count(*) FROM sessions WHERE expires_at < ?", [iso(utcnow())]) if "sessions" in tables else 0
    )
    if not dry_run:
        if "faq_suggestions" in tables:
            db.execute("UPDATE faq_suggestions SET ticket_id = NULL WHERE ticket_id IN (SELECT id FROM purge_tickets)")
        db.execute("DELETE FROM ticket_events WHERE ticket_id IN (SELECT id FROM purge_tickets)")
        db.execute("DELETE FROM tickets WHERE id IN (SELECT id FROM purge_tickets)")
        db.execute("DELETE FROM messages WHERE conversation_id IN (SELECT id FROM purge_conversations)")
        if "conversation_tokens" in tables:  # resume tokens of deleted conversations, and expired ones
            db.execute("DELETE FROM conversation_tokens WHERE conversation_id IN (SELECT id FROM purge_conversations) "
                       "OR expires_at < ?", [iso(utcnow())])  # fmt: skip
        db.execute("DELETE FROM conversations WHERE id IN (SELECT id FROM purge_conversations)")
        if "sessions" in tables:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", [iso(utcnow())])
    return PurgeReport(
        cutoff=cutoff,
        older_than_days=days,
        dry_run=dry_run,
        conversations=conversations,
        messages=messages,
        tickets=tickets,
        ticket_events=events,
        suggestions_unlinked=suggestions,
        ledger_rows_pseudonymised=ledger_rows,
        kept_active=kept_active,
        sessions=sessions,
    )


def _pseudonymise_ledger(db: Database, cutoff: str, key: bytes, dry_run: bool) -> int:
    """Replace the conversation id of ledger rows of purged (or already deleted) old conversations."""
    rows = db.execute(
        "SELECT DISTINCT conversation_id FROM requests WHERE conversation_id NOT LIKE ? AND ("
        " conversation_id IN (SELECT id FROM purge_conversations)"
        " OR (started_at < ? AND conversation_id NOT IN (SELECT id FROM conversations)))",
        [PSEUDONYM_PREFIX + "%", cutoff],
    ).fetchall()
    count = 0
    for (conversation_id,) in rows:
        alias = PSEUDONYM_PREFIX + hmac.new(key, conversation_id.encode(), hashlib.sha256).hexdigest()[:16]
        if dry_run:
            count += _count(db, "SELECT count(*) FROM requests WHERE conversation_id = ?", [conversation_id])
        else:
            count += db.execute(
                "UPDATE requests SET conversation_id = ? WHERE conversation_id = ?", [alias, conversation_id]
            ).rowcount
    return count


def _checkpoint(path: Path | str) -> None:
    """Fold the WAL into the database file so deleted text does not linger in the log."""
    store = Store(path)
    try:
        with store.read() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
