"""The staff inbox's reading side: the queue with waiting times and unread counts, search, a customer's
earlier tickets, and who has read what.

"Waiting" is how long the customer has been waiting for a person's reply: since the ticket opened while
no staff member has answered, then since the customer's first message after the last staff reply, and
not at all once staff had the last word or the ticket is resolved. "Unread" counts the customer's
messages of the ticket's conversation (up to its resolution) that this staff member has not seen;
opening a ticket (or watching it while it updates) marks its conversation read up to the newest message
shown. The read markers are the
only table this module owns (migration set `firstline.inbox`); tickets and messages are read only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.tickets import Ticket
from usage.db import Store, Target
from usage.ledger import iso, parse_iso, utcnow

migrations = Migrations("firstline.inbox")
VIEWS = ("open", "mine", "all")
MAX_ROWS = 200


@migrations()
def m001_ticket_reads(db: Database) -> None:
    db.table("ticket_reads").create(
        {"conversation_id": str, "staff": str, "message_id": int, "read_at": str},
        pk=("conversation_id", "staff"),
        not_null={"message_id", "read_at"},
    )


@dataclass(frozen=True)
class InboxRow:
    """A ticket as the queue shows it to one staff member."""

    ticket: Ticket
    waiting_since: str | None  # None: the customer is not waiting for a person
    unread: int
    first_message: str  # the customer's first message of the ticket's conversation

    def waiting_s(self, now: datetime | None = None) -> float | None:
        """Seconds the customer has been waiting for a reply, or None."""
        if self.waiting_since is None:
            return None
        return max(0.0, ((now or utcnow()) - parse_iso(self.waiting_since)).total_seconds())


# Per ticket: the last staff message since it opened, the customer's first message after that, how many
# customer messages (up to the ticket's resolution) the staff member has not read, and the conversation's first
# customer message. Correlated subqueries on messages(conversation_id, id), plain SQL (ports to PostgreSQL).
_LAST_STAFF = (
    "(SELECT max(s.created_at) FROM messages s WHERE s.conversation_id = t.conversation_id "
    "AND s.role = 'staff' AND s.created_at >= t.created_at)"
)
_SELECT = f"""
SELECT t.*,
  {_LAST_STAFF} AS last_staff_at,
  (SELECT min(u.created_at) FROM messages u WHERE u.conversation_id = t.conversation_id AND u.role = 'user'
     AND u.created_at > {_LAST_STAFF}) AS customer_after_staff,
  (SELECT count(*) FROM messages u WHERE u.conversation_id = t.conversation_id AND u.role = 'user'
     AND (t.resolved_at IS NULL OR u.created_at <= t.resolved_at)
     AND u.id > coalesce((SELECT r.message_id FROM ticket_reads r
                          WHERE r.conversation_id = t.conversation_id AND r.staff = :staff), 0)) AS unread,
  (SELECT f.content FROM messages f WHERE f.conversation_id = t.conversation_id AND f.role = 'user'
     ORDER BY f.id LIMIT 1) AS first_message
FROM tickets t
"""


class InboxStore(Store):
    """The queue, search and earlier tickets for one staff member, and the read markers."""

    def __init__(self, path: Target) -> None:
        super().__init__(path, migrations)

    def queue(self, staff: str, view: str = "open", query: str = "", limit: int = MAX_ROWS) -> list[InboxRow]:
        """Tickets of a view ("open": nobody's yet, "mine": claimed by me, "all"), optionally searched.

        A search looks at the ticket id, reason, summary, e-mail, the conversation's messages and the
        ticket's notes (case-insensitive for ASCII letters). Open and mine list the oldest first (the
        longest waiting on top), all and searches the newest first."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        where: list[str] = []
        params: dict[str, Any] = {"staff": staff}
        if view == "open":
            where.append("t.status = 'open'")
        elif view == "mine":
            where.append("t.status = 'claimed' AND t.claimed_by = :staff")
        query = (query or "").strip()
        if query:
            params["q"] = "%" + _escape_like(query) + "%"
            like = "ILIKE" if self.postgres else "LIKE"  # SQLite's LIKE ignores ASCII case, PostgreSQL's does not
            where.append(
                f"(t.id {like} :q ESCAPE '\\' OR t.reason {like} :q ESCAPE '\\' OR t.summary {like} :q ESCAPE '\\' "
                f"OR t.email {like} :q ESCAPE '\\' "
                "OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = t.conversation_id "
                f"AND m.content {like} :q ESCAPE '\\') "
                "OR EXISTS (SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.kind = 'note' "
                f"AND e.body {like} :q ESCAPE '\\'))"
            )
        order = "t.created_at" if view in ("open", "mine") and not query else "t.created_at DESC"
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order} LIMIT :limit"
        with self.read() as db:
            rows = list(db.query(sql, {**params, "limit": int(limit)}))
        return [_inbox_row(r) for r in rows]

    def row(self, staff: str, ticket_id: str) -> InboxRow | None:
        """One ticket as `queue` would show it to `staff`."""
        with self.read() as db:
            rows = list(db.query(_SELECT + " WHERE t.id = :id", {"staff": staff, "id": ticket_id}))
        return _inbox_row(rows[0]) if rows else None

    def unread_total(self, staff: str) -> int:
        """Unread customer messages in the tickets `staff` works on: open ones and those claimed by them."""
        sql = _SELECT + " WHERE t.status = 'open' OR (t.status = 'claimed' AND t.claimed_by = :staff)"
        with self.read() as db:
            return sum(int(r["unread"]) for r in db.query(sql, {"staff": staff}))

    def earlier(self, ticket: Ticket, limit: int = 50) -> list[InboxRow]:
        """The customer's other tickets, newest first: the same conversation, or the same e-mail address."""
        where = "t.id != :id AND (t.conversation_id = :conv"
        params: dict[str, Any] = {"staff": "", "id": ticket.id, "conv": ticket.conversation_id}
        if ticket.email:
            where += " OR lower(t.email) = lower(:email)"
            params["email"] = ticket.email
        sql = _SELECT + f" WHERE {where}) ORDER BY t.created_at DESC LIMIT :limit"
        with self.read() as db:
            return [_inbox_row(r) for r in db.query(sql, {**params, "limit": int(limit)})]

    def mark_read(self, conversation_id: str, staff: str, message_id: int) -> None:
        """`staff` has seen the conversation up to `message_id` (markers only move forward)."""
        with self.write() as db:
            db.execute(
                "INSERT INTO ticket_reads (conversation_id, staff, message_id, read_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation_id, staff) DO UPDATE SET message_id = excluded.message_id, "
                "read_at = excluded.read_at WHERE excluded.message_id > ticket_reads.message_id",
                [conversation_id, staff, int(message_id), iso(utcnow())],
            )


def _inbox_row(r: dict[str, Any]) -> InboxRow:
    if r["status"] == "resolved":
        waiting = None
    elif r["last_staff_at"] is None:
        waiting = r["created_at"]
    else:
        waiting = r["customer_after_staff"]
    return InboxRow(Ticket.from_row(r), waiting, int(r["unread"] or 0), r["first_message"] or "")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
