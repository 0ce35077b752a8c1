"""FAQ suggestions from staff answers: proposed in the staff console, reviewed, then added to the KB.

A good staff answer becomes a pending suggestion (question + answer + language); a reviewer approves it
(it is added to the knowledge base as a FAQ entry, answered by the bot from then on) or rejects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.errors import BotError
from bot.kb.search import KnowledgeBase
from usage.db import DB, Store, Target, count_in, each_in
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

    def __init__(self, path: Target, knowledge: KnowledgeBase | None) -> None:
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
        with self.write() as db:  # two reviewers at once: the second finds it approved
            row = self._pending(suggestion_id, db)
            if self.knowledge is None:
                raise SuggestionError("this store was opened without the knowledge base; it cannot approve")
            source = self.knowledge.add_faq(row["question"], row["answer"], row["lang"], origin="staff")
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
        with self.write() as db:
            self._pending(suggestion_id, db)
            db.table("faq_suggestions").update(
                suggestion_id, {"status": "rejected", "reviewed_by": reviewer, "reviewed_at": iso(utcnow())}
            )

    def linked_to(self, ticket_ids: Sequence[str]) -> int:
        """How many suggestions came from these tickets."""
        with self.read() as db:
            return count_in(db, "SELECT count(*) FROM faq_suggestions WHERE ticket_id IN ({ids})", ticket_ids)

    def unlink(self, ticket_ids: Sequence[str]) -> None:
        """Forget which (deleted) tickets suggestions came from; their reviewed text stays."""
        with self.write() as db:
            list(each_in(db, "UPDATE faq_suggestions SET ticket_id = NULL WHERE ticket_id IN ({ids})", ticket_ids))

    def _pending(self, suggestion_id: int, db: DB) -> dict[str, Any]:
        """The suggestion, locked until the transaction ends; it must still be pending."""
        rows = list(db.query(f"SELECT * FROM faq_suggestions WHERE id = ?{db.for_update}", [suggestion_id]))
        if not rows:
            raise SuggestionError(f"unknown suggestion {suggestion_id}")
        if rows[0]["status"] != "pending":
            raise SuggestionError(f"suggestion {suggestion_id} is already {rows[0]['status']}")
        return rows[0]
