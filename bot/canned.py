"""Canned replies: answers staff save once and insert into a reply by a short code, per language.

A canned reply is a shortcut (lower-case letters, digits, '-' and '_', e.g. `refund-delay`), a language
(`en` or `de`) and the text. The same shortcut can exist once per language, so `/greeting` inserts the
German or the English text depending on the customer's language. Saving an existing shortcut and
language replaces its text. The table is owned here (migration set `firstline.canned`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.errors import BotError
from usage.db import Store, Target
from usage.ledger import iso, utcnow

migrations = Migrations("firstline.canned")
LANGS = ("en", "de")
MAX_TEXT = 4000
_SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class CannedReplyError(BotError):
    """A canned reply cannot be saved or found (shown to the staff member)."""


@migrations()
def m001_canned_replies(db: Database) -> None:
    db.table("canned_replies").create(
        {
            "id": int,
            "shortcut": str,
            "lang": str,
            "text": str,
            "created_by": str,
            "created_at": str,
            "updated_by": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"shortcut", "lang", "text", "created_by", "created_at"},
    )
    db.table("canned_replies").create_index(["shortcut", "lang"], unique=True)


@dataclass(frozen=True)
class CannedReply:
    """One saved reply."""

    id: int
    shortcut: str
    lang: str
    text: str
    updated_by: str
    updated_at: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CannedReply:
        return cls(
            id=int(row["id"]),
            shortcut=row["shortcut"],
            lang=row["lang"],
            text=row["text"],
            updated_by=row["updated_by"] or row["created_by"],
            updated_at=row["updated_at"] or row["created_at"],
        )


def check_shortcut(shortcut: str) -> str:
    """A valid shortcut (a leading '/' is dropped) or a CannedReplyError that says what is allowed."""
    value = (shortcut or "").strip().lstrip("/").lower()
    if not _SHORTCUT.match(value):
        raise CannedReplyError(
            f"invalid shortcut {shortcut!r}: use 1-32 lower-case letters, digits, '-' or '_' (e.g. refund-delay)"
        )
    return value


class CannedReplyStore(Store):
    """Saved replies, by shortcut and language."""

    def __init__(self, path: Target) -> None:
        super().__init__(path, migrations)

    def save(self, shortcut: str, lang: str, text: str, staff: str) -> CannedReply:
        """Create the reply, or replace the text of the one with this shortcut and language."""
        shortcut = check_shortcut(shortcut)
        if lang not in LANGS:
            raise CannedReplyError("language must be en or de")
        text = (text or "").strip()
        if not text:
            raise CannedReplyError("the reply text is empty")
        if len(text) > MAX_TEXT:
            raise CannedReplyError(f"the reply text is too long ({len(text)} characters, at most {MAX_TEXT})")
        now = iso(utcnow())
        with self.write() as db:
            db.execute(
                "INSERT INTO canned_replies (shortcut, lang, text, created_by, created_at, updated_by, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (shortcut, lang) DO UPDATE SET text = excluded.text, "
                "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                [shortcut, lang, text, staff, now, staff, now],
            )
            rows = list(db.query("SELECT * FROM canned_replies WHERE shortcut = ? AND lang = ?", [shortcut, lang]))
        return CannedReply.from_row(rows[0])

    def delete(self, reply_id: int) -> None:
        """Remove a saved reply."""
        with self.write() as db:
            if db.execute("DELETE FROM canned_replies WHERE id = ?", [int(reply_id)]).rowcount == 0:
                raise CannedReplyError(f"unknown canned reply {reply_id}")

    def get(self, reply_id: int) -> CannedReply:
        with self.read() as db:
            rows = list(db.query("SELECT * FROM canned_replies WHERE id = ?", [int(reply_id)]))
        if not rows:
            raise CannedReplyError(f"unknown canned reply {reply_id}")
        return CannedReply.from_row(rows[0])

    def list(self, lang: str | None = None) -> list[CannedReply]:
        """Saved replies by shortcut (of one language if given)."""
        sql, params = "SELECT * FROM canned_replies", []
        if lang is not None:
            sql, params = sql + " WHERE lang = ?", [lang]
        with self.read() as db:
            return [CannedReply.from_row(r) for r in db.query(sql + " ORDER BY shortcut, lang", params)]
