"""FAQ suggestions from staff answers: proposed in the staff console, reviewed, then added to the KB.

A good staff answer becomes a pending suggestion (question + answer + language); a reviewer approves it
(it is added to the knowledge base as a FAQ entry, answered by the bot from then on) or rejects it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.errors import BotError
from bot.kb.search import KnowledgeBase
from usage.db import Store
from usage.ledger import iso, utcnow

migrations = Migrations("firstline.suggestions")


class SuggestionError(BotError):
    """A suggestion action is invalid (shown to the staff member)."""


@migrations()
def m001_suggestions(db: Database) -> None:
    db.table("faq_suggestions").create(
        {
            "id": int,
            "ticket_id": str,
            "question": str,
            "answer": str,
            "lang": str,
            "category": str,
            "status": str,
            "proposed_by": str,
            "created_at": str,
            "reviewed_by": str,
            "reviewed_at": str,
            "faq_path": str,
        },
        pk="id",
        not_null={"question", "answer", "lang", "status", "proposed_by", "created_at"},
    )


class SuggestionStore(Store):
    """Pending, approved and rejected FAQ suggestions."""

    def __init__(self, path: Path | str, knowledge: KnowledgeBase) -> None:
        super().__init__(path, migrations)
        self.knowledge = knowledge

    def propose(self, question: str, answer: str, lang: str, staff: str, ticket_id: str | None = None) -> int:
        """Record a suggestion for review; returns its id."""
        question, answer = (question or "").strip(), (answer or "").strip()
        if len(question) < 5 or len(answer) < 5:
            raise SuggestionError("question and answer must both be filled in")
        if lang not in ("en", "de"):
            raise SuggestionError("language must be en or de")
        with self.write() as db:
            table = db.table("faq_suggestions")
            table.insert(
                {
                    "ticket_id": ticket_id,
                    "question": question,
                    "answer": answer,
                    "lang": lang,
                    "status": "pending",
                    "proposed_by": staff,
                    "created_at": iso(utcnow()),
                }
            )
            return int(table.last_pk)  # type: ignore[arg-type]

    def pending(self) -> list[dict[str, Any]]:
        with self.read() as db:
            return list(db.query("SELECT * FROM faq_suggestions WHERE status = 'pending' ORDER BY id"))

    def approve(self, suggestion_id: int, reviewer: str) -> str:
        """Add the suggestion to the knowledge base as a FAQ entry; returns its KB path."""
        row = self._pending(suggestion_id)
        source = self.knowledge.add_faq(row["question"], row["answer"], row["lang"], origin="staff")
        with self.write() as db:
            db.table("faq_suggestions").update(
                suggestion_id,
                {
                    "status": "approved",
                    "reviewed_by": reviewer,
                    "reviewed_at": iso(utcnow()),
                    "faq_path": source.path,
                },
            )
        return source.path

    def reject(self, suggestion_id: int, reviewer: str) -> None:
        self._pending(suggestion_id)
        with self.write() as db:
            db.table("faq_suggestions").update(
                suggestion_id, {"status": "rejected", "reviewed_by": reviewer, "reviewed_at": iso(utcnow())}
            )

    def _pending(self, suggestion_id: int) -> dict[str, Any]:
        with self.read() as db:
            rows = list(db.query("SELECT * FROM faq_suggestions WHERE id = ?", [suggestion_id]))
        if not rows:
            raise SuggestionError(f"unknown suggestion {suggestion_id}")
        if rows[0]["status"] != "pending":
            raise SuggestionError(f"suggestion {suggestion_id} is already {rows[0]['status']}")
        return rows[0]
