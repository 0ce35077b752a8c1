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

Every table is read and changed through the store that owns it (ConversationStore, TicketStore,
SuggestionStore, Ledger; staff sessions: ui.auth.UserStore through `expire_sessions`), all inside one
transaction. On SQLite deletion runs with
`secure_delete` on (deleted text is overwritten in the database file), followed by a WAL checkpoint so no
copy is left in the write-ahead log. PostgreSQL has no secure delete: deleted rows stay in the table's
pages until (auto)vacuum reuses them; see docs/postgresql.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.conversation_store import ConversationStore
from bot.suggestions import SuggestionStore
from bot.tickets import TicketStore
from usage.db import Store, Target, is_postgres
from usage.ledger import Ledger, iso, utcnow

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
    path: Target,
    older_than_days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    expire_sessions: Callable[[bool], int] | None = None,
) -> PurgeReport:
    """Delete conversations and tickets without activity for `older_than_days`; pseudonymise the ledger.

    `expire_sessions(dry_run)` deletes expired staff sessions (ui.auth.UserStore.delete_expired_sessions:
    the logins belong to the ui package) in the same transaction and returns how many.
    """
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    cutoff = iso((now or utcnow()) - timedelta(days=older_than_days))
    key = secrets.token_bytes(32)
    # each table is changed through its owner; the stores' migrations make the tables exist even in a
    # database that has never seen a customer
    conversations = ConversationStore(path)
    tickets = TicketStore(path, conversations=conversations)
    suggestions = SuggestionStore(path, knowledge=None)
    ledger = Ledger(path, heartbeat=False, register=False)
    stores = (ledger, suggestions, tickets, conversations)
    try:
        with conversations.write() as db:  # one transaction: the owners' writes below join it
            if db.dialect == "sqlite":
                db.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten, not just unlinked
            report = _purge(conversations, tickets, suggestions, ledger, cutoff, older_than_days, dry_run, key)
            if expire_sessions is not None:
                report = replace(report, sessions=expire_sessions(dry_run))
            if dry_run:
                raise _Rollback(report)
    except _Rollback as rollback:
        return rollback.report
    finally:
        for s in stores:
            s.close()
    if not is_postgres(path):
        _checkpoint(path)
    return report


class _Rollback(Exception):
    def __init__(self, report: PurgeReport) -> None:
        super().__init__("dry run")
        self.report = report


def _purge(
    conversations: ConversationStore,
    tickets: TicketStore,
    suggestions: SuggestionStore,
    ledger: Ledger,
    cutoff: str,
    days: float,
    dry_run: bool,
    key: bytes,
) -> PurgeReport:
    active = tickets.conversations_with_active_tickets()
    old = conversations.inactive(cutoff)
    purged = [c for c in old if c not in active]
    # tickets of purged conversations, and old resolved tickets whose conversation is already gone
    ticket_ids = set(tickets.of_conversations(purged))
    orphans = [(t, c) for t, c in tickets.resolved_before(cutoff)]
    still_there = conversations.existing([c for _, c in orphans])
    ticket_ids.update(t for t, c in orphans if c not in still_there)
    ticket_list = sorted(ticket_ids)
    report = PurgeReport(
        cutoff=cutoff,
        older_than_days=days,
        dry_run=dry_run,
        conversations=len(purged),
        messages=conversations.count_messages(purged),
        tickets=len(ticket_list),
        ticket_events=tickets.count_events(ticket_list),
        suggestions_unlinked=suggestions.linked_to(ticket_list),
        ledger_rows_pseudonymised=ledger.rename_conversations(
            _aliases(ledger, conversations, purged, cutoff, key), dry_run=dry_run
        ),  # fmt: skip
        kept_active=len(old) - len(purged),
        sessions=0,
    )
    if not dry_run:
        suggestions.unlink(ticket_list)
        tickets.delete(ticket_list)
        conversations.delete(purged)
    return report


def _aliases(
    ledger: Ledger, conversations: ConversationStore, purged: list[str], cutoff: str, key: bytes
) -> dict[str, str]:
    """Pseudonyms for the ledger's conversation ids of purged (or already deleted) old conversations."""
    older = ledger.conversations_before(cutoff, skip_prefix=PSEUDONYM_PREFIX)
    gone = set(purged) | (set(older) - conversations.existing(older))
    return {
        c: PSEUDONYM_PREFIX + hmac.new(key, c.encode(), hashlib.sha256).hexdigest()[:16]
        for c in sorted(gone)
        if not c.startswith(PSEUDONYM_PREFIX)
    }


def _checkpoint(path: Target) -> None:
    """Fold the WAL into the database file so deleted text does not linger in the log."""
    store = Store(path)
    try:
        with store.read() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
