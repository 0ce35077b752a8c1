"""ConversationStore: conversations and their messages (migration set `firstline.bot`; SQLite or PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.errors import ConversationError
from bot.types import Message, Source
from usage.db import Store, Target, count_in, each_in
from usage.ledger import iso, utcnow

migrations = Migrations("firstline.bot")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@migrations()
def m001_conversations(db: Database) -> None:
    db.table("conversations").create(
        {"id": str, "created_at": str, "updated_at": str, "lang": str, "status": str},
        pk="id",
        not_null={"created_at", "status"},
        defaults={"status": "bot"},
    )
    db.table("messages").create(
        {
            "id": int,
            "conversation_id": str,
            "role": str,
            "content": str,
            "created_at": str,
            "lang": str,
            "request_id": str,
            "route": str,
            "sources": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "role", "content", "created_at"},
    )
    db.table("messages").create_index(["conversation_id", "id"])


@migrations()
def m002_resume_tokens_and_authors(db: Database) -> None:
    # who wrote a staff message (or joined the conversation): shown to the customer by name
    db.table("messages").add_column("author", str)
    # a customer's browser holds a token that resumes its conversation after a reload (only the hash is kept)
    db.table("conversation_tokens").create(
        {"token_hash": str, "conversation_id": str, "created_at": str, "expires_at": str},
        pk="token_hash",
        foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "created_at", "expires_at"},
    )
    db.table("conversation_tokens").create_index(["conversation_id"])


@migrations()
def m003_conversations_started_index(db: Database) -> None:
    # reports count the conversations started in their period (outcome_counts): a range over this index, not a
    # scan of every conversation ever kept
    db.table("conversations").create_index(["created_at"])


def new_conversation_id() -> str:
    """A fresh, unguessable conversation id."""
    return uuid.uuid4().hex


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def check_conversation_id(conversation_id: str) -> str:
    """Validate a caller-supplied conversation id."""
    if not _ID.match(conversation_id or ""):
        raise ConversationError(
            f"invalid conversation id {conversation_id!r}: use 1-64 letters, digits, '_', '-', '.', ':'"
        )
    return conversation_id


class ConversationStore(Store):
    """Conversations and messages; every write is one transaction."""

    def __init__(self, path: Target) -> None:
        super().__init__(path, migrations)

    def ensure(self, conversation_id: str, lang: str | None = None) -> dict[str, Any]:
        """Return the conversation, creating it if new."""
        check_conversation_id(conversation_id)
        with self.write() as db:
            rows = list(db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
            if rows:
                return rows[0]
            now = iso(utcnow())
            row = {"id": conversation_id, "created_at": now, "updated_at": now, "lang": lang, "status": "bot"}
            # another process may create it at the same moment (PostgreSQL): then theirs is the row
            db.table("conversations").insert(row, ignore=True)
            return list(db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))[0]

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        with self.read() as db:
            rows = list(db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
        return rows[0] if rows else None

    def lock(self, conversation_id: str) -> None:
        """Hold the conversation's row until the caller's write transaction ends (PostgreSQL; SQLite's
        writers are serialized already)."""
        with self.write() as db:
            db.execute(f"SELECT id FROM conversations WHERE id = ?{db.for_update}", [conversation_id]).fetchall()

    def set_fields(self, conversation_id: str, **fields: Any) -> None:
        """Update conversation columns (lang, status)."""
        with self.write() as db:
            db.table("conversations").update(conversation_id, {**fields, "updated_at": iso(utcnow())})

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        lang: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
        sources: Sequence[Source] = (),
        author: str | None = None,
    ) -> int:
        """Append a message; returns its id."""
        now = iso(utcnow())
        with self.write() as db:
            table = db.table("messages")
            table.insert(
                {
                    "conversation_id": conversation_id,
                    "role": role,
                    "content": content,
                    "created_at": now,
                    "lang": lang,
                    "request_id": request_id,
                    "route": route,
                    "sources": json.dumps([s.as_dict() for s in sources]) if sources else None,
                    "author": author,
                }
            )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [now, conversation_id])
            return int(cast(int, table.last_pk))

    def messages(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        """The conversation's messages, oldest first (the last `limit` ones if given)."""
        sql = "SELECT role, content, created_at, request_id, route, sources FROM messages WHERE conversation_id = ?"
        with self.read() as db:
            if limit is None:
                rows = list(db.query(sql + " ORDER BY id", [conversation_id]))
            else:
                rows = list(db.query(sql + " ORDER BY id DESC LIMIT ?", [conversation_id, limit]))[::-1]
        return [Message(**{**r, "sources": _sources(r["sources"])}) for r in rows]

    def newest_message_id(self, conversation_id: str, roles: tuple[str, ...] = ()) -> int:
        """Id of the newest message (of the given roles), 0 if none."""
        sql = "SELECT max(id) FROM messages WHERE conversation_id = ?"
        params: list[Any] = [conversation_id]
        if roles:
            sql += f" AND role IN ({', '.join('?' for _ in roles)})"
            params.extend(roles)
        with self.read() as db:
            row = db.execute(sql, params).fetchone()
        return int(row[0] or 0)

    def outcome_counts(
        self, since: str, until: str, escalated_elsewhere: set[str], resolved_tickets: set[str]
    ) -> tuple[int, int, int] | None:
        """(started in [since, until), escalated, resolved): escalated by status `human` or by being in
        `escalated_elsewhere` (a ticket, a human-routed request); resolved: not escalated, or a resolved ticket.
        None when the store never held a conversation (a ledger written without the bot: count from the ledger)."""
        period = "created_at >= ? AND created_at < ?"
        with self.read() as db:
            if db.execute("SELECT 1 FROM conversations LIMIT 1").fetchone() is None:
                return None
            n, human = db.execute(
                f"SELECT count(*), coalesce(sum(CASE WHEN status = 'human' THEN 1 ELSE 0 END), 0) FROM conversations "
                f"WHERE {period}",
                [since, until],
            ).fetchone()
            sql = f"SELECT count(*) FROM conversations WHERE {period} AND status != 'human' AND id IN ({{ids}})"
            extra = count_in(db, sql, sorted(escalated_elsewhere), [since, until])
            sql = f"SELECT count(*) FROM conversations WHERE {period} AND id IN ({{ids}})"
            done = count_in(db, sql, sorted(resolved_tickets), [since, until])
        escalated = int(human) + extra
        return int(n), escalated, int(n) - escalated + done

    # -- retention (bot/housekeeping.py calls these inside its one transaction) ---------------------------
    def inactive(self, cutoff: str) -> list[str]:
        """Ids of conversations without activity since `cutoff` (an ISO timestamp)."""
        with self.read() as db:
            sql = "SELECT id FROM conversations WHERE coalesce(updated_at, created_at) < ? ORDER BY id"
            return [r[0] for r in db.execute(sql, [cutoff]).fetchall()]

    def existing(self, conversation_ids: Sequence[str]) -> set[str]:
        """Which of these conversations still exist."""
        with self.read() as db:
            cursors = each_in(db, "SELECT id FROM conversations WHERE id IN ({ids})", conversation_ids)
            return {r[0] for cur in cursors for r in cur.fetchall()}

    def count_messages(self, conversation_ids: Sequence[str]) -> int:
        with self.read() as db:
            return count_in(db, "SELECT count(*) FROM messages WHERE conversation_id IN ({ids})", conversation_ids)

    def delete(self, conversation_ids: Sequence[str]) -> None:
        """Delete conversations, their messages and resume tokens (their tickets must be gone: TicketStore.delete);
        expired resume tokens of any conversation go too."""
        with self.write() as db:
            list(each_in(db, "DELETE FROM messages WHERE conversation_id IN ({ids})", conversation_ids))
            list(each_in(db, "DELETE FROM conversation_tokens WHERE conversation_id IN ({ids})", conversation_ids))
            db.execute("DELETE FROM conversation_tokens WHERE expires_at < ?", [iso(utcnow())])
            list(each_in(db, "DELETE FROM conversations WHERE id IN ({ids})", conversation_ids))

    def message_rows(self, conversation_id: str) -> list[dict[str, Any]]:
        """Raw message rows (with sources JSON), oldest first."""
        with self.read() as db:
            return list(db.query("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]))

    def last_rows(self, conversation_id: str, n: int) -> list[dict[str, Any]]:
        """The newest `n` message rows (role, route, content), newest first."""
        with self.read() as db:
            return list(db.query("SELECT id, role, route, content FROM messages WHERE conversation_id = ? "
                                 "ORDER BY id DESC LIMIT ?", [conversation_id, n]))  # fmt: skip

    # -- resume tokens -------------------------------------------------------------------------------
    def issue_token(self, conversation_id: str, lifetime: timedelta) -> str:
        """A new bearer token that resumes the conversation until it has gone unused for `lifetime`.

        256 random bits, URL-safe; only its SHA-256 is stored, so the database does not hold usable tokens
        (nor do staff, who see conversation ids but never tokens)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.write() as db:
            db.table("conversation_tokens").insert(
                {
                    "token_hash": _token_hash(token),
                    "conversation_id": check_conversation_id(conversation_id),
                    "created_at": iso(now),
                    "expires_at": iso(now + lifetime),
                }  # fmt: skip
            )
        return token

    def resume(self, token: str | None, lifetime: timedelta) -> str | None:
        """The conversation a token resumes (its expiry slides by `lifetime`), or None: unknown or expired."""
        if not token or not isinstance(token, str) or len(token) > 128:
            return None
        now = utcnow()
        with self.write() as db:
            row = db.execute(
                "SELECT conversation_id, expires_at FROM conversation_tokens WHERE token_hash = ?", [_token_hash(token)]
            ).fetchone()
            if row is None or row[1] <= iso(now):
                return None
            db.execute(
                "UPDATE conversation_tokens SET expires_at = ? WHERE token_hash = ?",
                [iso(now + lifetime), _token_hash(token)],
            )
        return str(row[0])

    def revoke_token(self, token: str | None) -> None:
        """Forget a token (the customer started a new conversation)."""
        if token and isinstance(token, str):
            with self.write() as db:
                db.execute("DELETE FROM conversation_tokens WHERE token_hash = ?", [_token_hash(token)])


def _sources(raw: str | None) -> tuple[Source, ...]:
    """Stored sources JSON back to Source objects (unknown keys ignored, a damaged value read as none)."""
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except ValueError:
        return ()
    fields = ("title", "path", "score", "snippet", "url", "section")
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("title"), str) and isinstance(item.get("path"), str):
            out.append(Source(**{k: item[k] for k in fields if k in item}))
    return tuple(out)
