"""TicketStore: escalations to human staff; every action is an event row with who and when.

Opening a ticket writes the ticket (transcript, reason, summary, the bot's sources), its first event and
the conversation's hand-over (status `human`) in one transaction. A conversation has at most one ticket
that is not resolved (a partial unique index enforces it). Staff replies are stored as conversation
messages (role `staff`), so they flow back into the customer's chat; resolving hands the conversation back
to the bot.
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot import escalation, prompts
from bot.conversation_store import ConversationStore
from bot.errors import BotError
from bot.types import Message, Source
from usage.db import DB, Store, Target, count_in, each_in
from usage.ledger import iso, parse_iso, utcnow

migrations = Migrations("firstline.tickets")
STATUSES = ("open", "claimed", "resolved")
EVENT_KINDS = (
    "opened",
    "claimed",
    "unclaimed",
    "replied",
    "note",
    "resolved",
    "reopened",
    "customer_message",
    "customer_notified",
    "email_provided",
    "emailed",  # a staff reply sent to the customer's e-mail address (body: the `replied` event's id)
    "email_failed",  # sending it failed (body: the `replied` event's id and the cause); it is retried
)
JOINED_ROUTE = "joined"  # messages.route of the "<name> joined the conversation" notice
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
ACTIONS = ("claim", "reply", "note", "resolve", "reopen")  # what staff can do to a ticket

# What staff read for an escalation reason (the codes stay the stable identifiers in data and reports)
REASON_LABELS = {
    escalation.CUSTOMER_REQUEST: "Customer asked for a person",
    escalation.COMPLAINT: "Complaint",
    escalation.NOT_HELPED: "The bot's answer did not help",
    escalation.REPEATED_QUESTION: "Customer asked the same question again",
    escalation.NO_KB_MATCH: "Nothing in the knowledge base",
    escalation.MODEL_FAILURE: "Technical problem: the bot could not answer",
    escalation.MODEL_DECISION: "The bot judged that a person should answer",
    escalation.BUDGET: "Compute budget used up",
}
SENSITIVE_LABELS = {
    "refund_or_payment_dispute": "refund or payment dispute",
    "legal_threat": "legal threat",
    "special_cancellation": "cancellation in special circumstances",
    "account_specific_data": "question about the customer's own account",
    "security_incident": "security incident",
}


class TicketError(BotError):
    """A ticket action is not allowed in the ticket's state (shown to the staff member)."""


@migrations()
def m001_tickets(db: Database) -> None:
    db.table("tickets").create(
        {
            "id": str,
            "conversation_id": str,
            "status": str,
            "reason": str,
            "summary": str,
            "transcript": str,
            "sources": str,
            "lang": str,
            "email": str,
            "created_at": str,
            "claimed_by": str,
            "claimed_at": str,
            "resolved_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"conversation_id", "status", "reason", "created_at"},
    )
    db.execute(
        "CREATE UNIQUE INDEX tickets_one_active_per_conversation ON tickets(conversation_id) WHERE status != 'resolved'"
    )
    db.table("tickets").create_index(["status", "created_at"])
    db.table("ticket_events").create(
        {"id": int, "ticket_id": str, "kind": str, "actor": str, "body": str, "created_at": str},
        pk="id",
        foreign_keys=[("ticket_id", "tickets", "id")],
        not_null={"ticket_id", "kind", "actor", "created_at"},
    )
    db.table("ticket_events").create_index(["ticket_id", "id"])


@dataclass(frozen=True)
class Ticket:
    """A ticket as staff see it."""

    id: str
    conversation_id: str
    status: str
    reason: str
    summary: str
    lang: str
    created_at: str
    claimed_by: str | None
    claimed_at: str | None
    resolved_at: str | None
    email: str | None
    sources: tuple[dict[str, Any], ...]
    transcript: tuple[dict[str, Any], ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Ticket:
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            status=row["status"],
            reason=row["reason"],
            summary=row["summary"] or "",
            lang=row["lang"] or "en",
            created_at=row["created_at"],
            claimed_by=row["claimed_by"],
            claimed_at=row["claimed_at"],
            resolved_at=row["resolved_at"],
            email=row["email"],
            sources=tuple(json.loads(row["sources"] or "[]")),
            transcript=tuple(json.loads(row["transcript"] or "[]")),
        )


def new_ticket_id() -> str:
    """A short reference customers can read out: T-XXXXXX."""
    return "T-" + "".join(secrets.choice(_ALPHABET) for _ in range(6))


def reason_label(reason: str) -> str:
    """The escalation reason as staff read it ("sensitive:legal_threat" -> "Sensitive topic: legal threat")."""
    if reason in REASON_LABELS:
        return REASON_LABELS[reason]
    kind, _, topic = reason.partition(":")
    if kind == "sensitive" and topic:
        return "Sensitive topic: " + SENSITIVE_LABELS.get(topic, topic.replace("_", " "))
    return reason.replace("_", " ").replace(":", ": ").capitalize() or "Unknown"


def allowed_actions(ticket: Ticket, staff: str, *, other_active: bool = False) -> frozenset[str]:
    """What `staff` may do to the ticket in its state (the store refuses the rest with a TicketError).

    `other_active`: the conversation has another open or claimed ticket (then this one cannot be reopened)."""
    if ticket.status == "resolved":
        return frozenset({"note"} if other_active else {"note", "reopen"})
    mine_or_nobodys = ticket.status == "open" or ticket.claimed_by == staff
    out = {"note", "resolve"}
    if mine_or_nobodys:
        out |= {"reply"}
    if ticket.status == "open":
        out |= {"claim"}
    return frozenset(out)


def summarize(reason: str, history: list[Message], text: str, source_titles: list[str]) -> str:
    """A short summary for staff, without a model call (reliable and free)."""
    first = next((m.content for m in history if m.role == "user"), text)
    parts = [f"Reason: {reason_label(reason)}."]
    parts.append(f"Customer's last message: {_clip(text, 200)}")
    if first != text:
        parts.append(f"Conversation started with: {_clip(first, 160)}")
    if source_titles:
        parts.append("Bot found: " + "; ".join(source_titles[:3]))
    turns = sum(1 for m in history if m.role == "user") + 1
    parts.append(f"{turns} customer message(s) so far.")
    return "\n".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class TicketStore(Store):
    """Tickets and their events; conversation messages go through the shared ConversationStore tables."""

    def __init__(self, path: Target, conversations: ConversationStore | None = None) -> None:
        self.conversations = conversations or ConversationStore(path)
        super().__init__(path, migrations)

    # -- opening -----------------------------------------------------------------------------------
    def open(
        self,
        conversation_id: str,
        *,
        reason: str,
        lang: str,
        history: list[Message],
        text: str,
        sources: tuple[Source, ...] = (),
        notice: str | None = None,
    ) -> Ticket:
        """Escalate: the ticket, its first event, the hand-over and the customer notice in one transaction."""
        now = iso(utcnow())
        with self.write() as db:
            # two processes escalating the same conversation at once: the second waits here, then finds the first's
            self.conversations.lock(conversation_id)
            active = self._active_row(db, conversation_id)
            if active is not None:
                return Ticket.from_row(active)
            tid = new_ticket_id()
            transcript = [{"role": m.role, "content": m.content, "created_at": m.created_at} for m in history]
            transcript.append({"role": "user", "content": text, "created_at": now})
            db.table("tickets").insert(
                {
                    "id": tid,
                    "conversation_id": conversation_id,
                    "status": "open",
                    "reason": reason,
                    "summary": summarize(reason, history, text, [s.title for s in sources]),
                    "transcript": json.dumps(transcript, ensure_ascii=False),
                    "sources": json.dumps([s.as_dict() for s in sources], ensure_ascii=False),
                    "lang": lang,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self._event(db, tid, "opened", "bot", reason)
            self.conversations.set_fields(conversation_id, status="human")  # joins this transaction
            if notice:
                self.conversations.add_message(conversation_id, "assistant", notice, lang=lang, route="human")
            row = self._row(db, tid)
        return Ticket.from_row(row)

    # -- staff actions -----------------------------------------------------------------------------
    def claim(self, ticket_id: str, staff: str) -> Ticket:
        """Take ownership of an open ticket."""
        with self.write() as db:
            row = self._row(db, ticket_id, lock=True)
            if row["status"] == "resolved":
                raise TicketError(f"ticket {ticket_id} is resolved; reopen it first")
            if row["status"] == "claimed" and row["claimed_by"] != staff:
                raise TicketError(f"ticket {ticket_id} is already claimed by {row['claimed_by']}")
            self._claim(db, row, staff)
            return Ticket.from_row(self._row(db, ticket_id))

    def reply(self, ticket_id: str, staff: str, text: str) -> None:
        """A staff reply: shown in the customer's chat. Claims the ticket if nobody has."""
        text = _require_text(text)
        with self.write() as db:
            row = self._row(db, ticket_id, lock=True)
            if row["status"] == "resolved":
                raise TicketError(f"ticket {ticket_id} is resolved; reopen it to reply")
            if row["status"] == "claimed" and row["claimed_by"] != staff:
                raise TicketError(f"ticket {ticket_id} is claimed by {row['claimed_by']}")
            if row["status"] == "open":
                self._claim(db, row, staff)
            self.conversations.add_message(
                row["conversation_id"], "staff", text, lang=row["lang"], route="human", author=staff
            )
            self._event(db, ticket_id, "replied", staff, text)

    def _claim(self, db: Database, row: dict[str, Any], staff: str) -> None:
        """Claim inside a write; the customer is told who joined (by the staff member's name)."""
        now = iso(utcnow())
        db.table("tickets").update(
            row["id"], {"status": "claimed", "claimed_by": staff, "claimed_at": now, "updated_at": now}
        )
        self._event(db, row["id"], "claimed", staff, None)
        if row["status"] == "claimed":  # claimed again by the same person: nobody new joined
            return
        lang = row["lang"] if row["lang"] in prompts.JOINED else "en"
        self.conversations.add_message(row["conversation_id"], "system", prompts.JOINED[lang].format(name=staff),
                                       lang=lang, route=JOINED_ROUTE, author=staff)  # fmt: skip

    def note(self, ticket_id: str, staff: str, text: str) -> None:
        """An internal note: never shown to the customer."""
        text = _require_text(text)
        with self.write() as db:
            self._row(db, ticket_id, lock=True)
            self._event(db, ticket_id, "note", staff, text)

    def resolve(self, ticket_id: str, staff: str, notice: str | None = None) -> None:
        """Close the ticket and hand the conversation back to the bot (telling the customer)."""
        with self.write() as db:
            row = self._row(db, ticket_id, lock=True)
            if row["status"] == "resolved":
                raise TicketError(f"ticket {ticket_id} is already resolved")
            now = iso(utcnow())
            db.table("tickets").update(ticket_id, {"status": "resolved", "resolved_at": now, "updated_at": now})
            self._event(db, ticket_id, "resolved", staff, None)
            self.conversations.set_fields(row["conversation_id"], status="bot")  # joins this transaction
            if notice:
                self.conversations.add_message(row["conversation_id"], "system", notice, lang=row["lang"])

    def reopen(self, ticket_id: str, staff: str) -> None:
        """Reopen a resolved ticket (the conversation goes back to staff)."""
        with self.write() as db:
            row = self._row(db, ticket_id, lock=True)
            if row["status"] != "resolved":
                raise TicketError(f"ticket {ticket_id} is not resolved")
            if self._active_row(db, row["conversation_id"]) is not None:
                raise TicketError("this conversation already has another active ticket")
            now = iso(utcnow())
            db.table("tickets").update(
                ticket_id, {"status": "open", "resolved_at": None, "claimed_by": None, "updated_at": now}
            )
            self._event(db, ticket_id, "reopened", staff, None)
            self.conversations.set_fields(row["conversation_id"], status="human")  # joins this transaction

    # -- customer side -----------------------------------------------------------------------------
    def customer_message(self, conversation_id: str, text: str, lang: str) -> Ticket:
        """A customer message while a human owns the conversation: goes to the ticket, not the bot."""
        with self.write() as db:
            row = self._active_row(db, conversation_id, lock=True)
            if row is None:
                raise TicketError("no active ticket for this conversation")
            history = self.conversations.messages(conversation_id)
            self.conversations.add_message(conversation_id, "user", text, lang=lang, route="human")
            self._event(db, row["id"], "customer_message", "customer", text)
            # the summary follows the conversation: staff see the customer's newest message, not the first
            titles = [str(s.get("title", "")) for s in json.loads(row["sources"] or "[]")]
            summary = summarize(row["reason"], history, text, titles)
            db.table("tickets").update(row["id"], {"summary": summary, "updated_at": iso(utcnow())})
            return Ticket.from_row(self._row(db, row["id"]))

    def notify_unclaimed(self, conversation_id: str, after_s: float, notice: str) -> bool:
        """If the active ticket has waited unclaimed longer than `after_s`, tell the customer once."""
        with self.write() as db:
            row = self._active_row(db, conversation_id, lock=True)
            if row is None or row["status"] != "open":
                return False
            if (utcnow() - parse_iso(row["created_at"])).total_seconds() < after_s:
                return False
            done = db.execute(
                "SELECT 1 FROM ticket_events WHERE ticket_id = ? AND kind = 'customer_notified'", [row["id"]]
            ).fetchone()
            if done:
                return False
            self._event(db, row["id"], "customer_notified", "bot", notice)
            self.conversations.add_message(conversation_id, "system", notice, lang=row["lang"])
            return True

    def set_email(self, conversation_id: str, email: str) -> None:
        """Record the address the customer wants the answer sent to."""
        with self.write() as db:
            row = self._active_row(db, conversation_id, lock=True)
            if row is None:
                raise TicketError("no active ticket for this conversation")
            db.table("tickets").update(row["id"], {"email": email, "updated_at": iso(utcnow())})
            self._event(db, row["id"], "email_provided", "customer", email)

    # -- e-mail outbox: staff replies to customers who left an address ------------------------------
    def pending_mails(self, max_failures: int = 5, limit: int = 20) -> builtins.list[dict[str, Any]]:
        """Staff replies not yet e-mailed to the ticket's address (oldest first; given up after `max_failures`).

        Each row: event_id, ticket_id, conversation_id, email, lang, staff, body, created_at."""
        sql = (
            "SELECT e.id AS event_id, t.id AS ticket_id, t.conversation_id, t.email, t.lang, e.actor AS staff, "
            "e.body, e.created_at FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id "
            "WHERE e.kind = 'replied' AND t.email IS NOT NULL AND t.email != '' "
            "AND NOT EXISTS (SELECT 1 FROM ticket_events d WHERE d.ticket_id = e.ticket_id AND d.kind = 'emailed' "
            "AND d.body = CAST(e.id AS TEXT)) "
            "AND (SELECT count(*) FROM ticket_events f WHERE f.ticket_id = e.ticket_id AND f.kind = 'email_failed' "
            "AND f.body LIKE CAST(e.id AS TEXT) || ':%') < ? ORDER BY e.id LIMIT ?"
        )
        with self.read() as db:
            return list(db.query(sql, [max_failures, limit]))

    def mark_mailed(self, ticket_id: str, event_id: int, error: str | None = None) -> None:
        """Record that the reply of event `event_id` was e-mailed (or why sending failed)."""
        with self.write() as db:
            if error is None:
                self._event(db, ticket_id, "emailed", "bot", str(event_id))
            else:
                self._event(db, ticket_id, "email_failed", "bot", f"{event_id}: {error[:300]}")

    # -- reading -----------------------------------------------------------------------------------
    def get(self, ticket_id: str) -> Ticket:
        with self.read() as db:
            return Ticket.from_row(self._row(db, ticket_id))

    def allowed(self, ticket_id: str, staff: str) -> frozenset[str]:
        """What `staff` may do to the ticket now (see `allowed_actions`)."""
        with self.read() as db:
            row = self._row(db, ticket_id)
            active = self._active_row(db, row["conversation_id"])
        other = active is not None and active["id"] != ticket_id
        return allowed_actions(Ticket.from_row(row), staff, other_active=other)

    def active_for(self, conversation_id: str) -> Ticket | None:
        """The conversation's open or claimed ticket."""
        with self.read() as db:
            row = self._active_row(db, conversation_id)
        return Ticket.from_row(row) if row else None

    def latest_for(self, conversation_id: str) -> Ticket | None:
        """The conversation's newest ticket, whatever its status."""
        with self.read() as db:
            # ties (same instant) by the ticket's first event, written with it: insertion order on both stores
            rows = list(db.query("SELECT * FROM tickets WHERE conversation_id = ? ORDER BY created_at DESC, "
                                 "(SELECT min(e.id) FROM ticket_events e WHERE e.ticket_id = tickets.id) DESC "
                                 "LIMIT 1", [conversation_id]))  # fmt: skip
        return Ticket.from_row(rows[0]) if rows else None

    def list(self, status: str | None = None, claimed_by: str | None = None) -> list[Ticket]:
        """Tickets, oldest first, optionally filtered."""
        where, params = ["1=1"], []
        if status:
            where.append("status = ?")
            params.append(status)
        if claimed_by:
            where.append("claimed_by = ?")
            params.append(claimed_by)
        with self.read() as db:
            rows = list(db.query(f"SELECT * FROM tickets WHERE {' AND '.join(where)} ORDER BY created_at", params))
        return [Ticket.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.read() as db:
            rows = db.execute("SELECT status, count(*) FROM tickets GROUP BY status").fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def events(self, ticket_id: str) -> builtins.list[dict[str, Any]]:
        with self.read() as db:
            return list(db.query("SELECT * FROM ticket_events WHERE ticket_id = ? ORDER BY id", [ticket_id]))

    # -- retention (bot/housekeeping.py) ---------------------------------------------------------
    def conversations_with_active_tickets(self) -> set[str]:
        """Conversations whose ticket is open or claimed: kept whatever their age."""
        with self.read() as db:
            return {r[0] for r in db.execute("SELECT conversation_id FROM tickets WHERE status != 'resolved'")}

    def resolved_before(self, cutoff: str) -> builtins.list[tuple[str, str]]:
        """(ticket id, conversation id) of resolved tickets without activity since `cutoff`."""
        with self.read() as db:
            sql = (
                "SELECT id, conversation_id FROM tickets WHERE status = 'resolved' "
                "AND coalesce(updated_at, created_at) < ?"
            )
            return [(r[0], r[1]) for r in db.execute(sql, [cutoff]).fetchall()]

    def of_conversations(self, conversation_ids: Sequence[str]) -> builtins.list[str]:
        """Ids of the tickets of these conversations."""
        with self.read() as db:
            cursors = each_in(db, "SELECT id FROM tickets WHERE conversation_id IN ({ids})", conversation_ids)
            return [r[0] for cur in cursors for r in cur.fetchall()]

    def latest_of(self, conversation_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The newest ticket (id, status) of each of these conversations that has one."""
        out: dict[str, tuple[str, str]] = {}
        with self.read() as db:
            sql = "SELECT conversation_id, id, status FROM tickets WHERE conversation_id IN ({ids}) ORDER BY created_at"
            for cur in each_in(db, sql, conversation_ids):
                for conversation, ticket, status in cur.fetchall():
                    out[conversation] = (ticket, status)  # later rows are newer
        return out

    def count_events(self, ticket_ids: Sequence[str]) -> int:
        with self.read() as db:
            return count_in(db, "SELECT count(*) FROM ticket_events WHERE ticket_id IN ({ids})", ticket_ids)

    def delete(self, ticket_ids: Sequence[str]) -> None:
        """Delete tickets and their events (FAQ suggestions must be unlinked first: SuggestionStore.unlink)."""
        with self.write() as db:
            list(each_in(db, "DELETE FROM ticket_events WHERE ticket_id IN ({ids})", ticket_ids))
            list(each_in(db, "DELETE FROM tickets WHERE id IN ({ids})", ticket_ids))

    # -- reports (usage/reports.py reads tickets only through these, via bot.outcomes) ---------------------
    def ticket_states(self) -> dict[str, bool]:
        """Every conversation that has a ticket: True when one of its tickets is resolved."""
        with self.read() as db:
            sql = "SELECT conversation_id, max(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) FROM tickets GROUP BY 1"
            return {r[0]: bool(r[1]) for r in db.execute(sql).fetchall()}

    def staff_intervals(self, since: str, until: str) -> builtins.list[tuple[str, str, str]]:
        """(ticket id, kind, at) of claimed/unclaimed/resolved events of tickets whose handling ended
        (resolved or unclaimed) in [since, until), in order."""
        with self.read() as db:
            return [
                (r[0], r[1], r[2])
                for r in db.execute(
                    "SELECT ticket_id, kind, created_at FROM ticket_events WHERE ticket_id IN (SELECT DISTINCT "
                    "ticket_id FROM ticket_events WHERE kind IN ('resolved', 'unclaimed') AND created_at >= ? "
                    "AND created_at < ?) AND kind IN ('claimed', 'unclaimed', 'resolved') ORDER BY ticket_id, id",
                    [since, until],
                ).fetchall()
            ]

    # -- helpers -----------------------------------------------------------------------------------
    def _row(self, db: DB, ticket_id: str, *, lock: bool = False) -> dict[str, Any]:
        """The ticket's row; with `lock`, held until the transaction ends (two staff clicking at once on
        different processes: the second sees the first's claim)."""
        rows = list(db.query(f"SELECT * FROM tickets WHERE id = ?{db.for_update if lock else ''}", [ticket_id]))
        if not rows:
            raise TicketError(f"unknown ticket {ticket_id!r}")
        return rows[0]

    def _active_row(self, db: DB, conversation_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        rows = list(
            db.query(
                "SELECT * FROM tickets WHERE conversation_id = ? AND status != 'resolved'"
                + (db.for_update if lock else ""),
                [conversation_id],
            )
        )
        return rows[0] if rows else None

    def _event(self, db: DB, ticket_id: str, kind: str, actor: str, body: str | None) -> None:
        assert kind in EVENT_KINDS, kind
        db.table("ticket_events").insert(
            {"ticket_id": ticket_id, "kind": kind, "actor": actor, "body": body, "created_at": iso(utcnow())}
        )


def _require_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise TicketError("the message is empty")
    return text
