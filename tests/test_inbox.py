"""The staff inbox's data: waiting time, unread counts, search, earlier tickets, allowed actions, reason
labels, a summary that follows the conversation, and canned replies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot import escalation
from bot.canned import CannedReplyError, CannedReplyStore
from bot.conversation_store import ConversationStore
from bot.inbox import InboxStore
from bot.tickets import REASON_LABELS, TicketError, TicketStore, allowed_actions, reason_label
from bot.types import Message
from usage.ledger import iso, parse_iso

pytestmark = pytest.mark.stores  # on SQLite and on PostgreSQL (tests/conftest.py)


@pytest.fixture
def stores(database: Path | str) -> Iterator[tuple[TicketStore, InboxStore]]:
    db = database
    tickets = TicketStore(db, conversations=ConversationStore(db))
    inbox = InboxStore(db)
    yield tickets, inbox
    inbox.close()
    tickets.close()
    tickets.conversations.close()


def escalate(tickets: TicketStore, conv: str, text: str = "I want a person", reason: str = "customer_request") -> str:
    """What the bot does: the customer's message is stored, then the ticket opens."""
    tickets.conversations.ensure(conv, "en")
    tickets.conversations.add_message(conv, "user", text, lang="en")
    return tickets.open(conv, reason=reason, lang="en", history=[], text=text).id


def backdate(tickets: TicketStore, conv: str, minutes: float) -> None:
    """Move a conversation's messages and tickets into the past (as if they had happened then)."""
    with tickets.write() as db:
        for table in ("messages", "tickets"):
            for row in list(db.query(f"SELECT id, created_at FROM {table} WHERE conversation_id = ?", [conv])):
                new = iso(parse_iso(row["created_at"]) - timedelta(minutes=minutes))
                db.execute(f"UPDATE {table} SET created_at = ? WHERE id = ?", [new, row["id"]])


def test_waiting_is_time_since_the_customer_last_needed_an_answer_not_the_ticket_age(
    stores: tuple[TicketStore, InboxStore],
) -> None:
    tickets, inbox = stores
    tid = escalate(tickets, "c1")
    backdate(tickets, "c1", 90)  # the ticket is 90 minutes old
    row = inbox.row("sam", tid)
    assert row is not None and 89 * 60 < row.waiting_s() < 91 * 60  # type: ignore[operator]
    tickets.reply(tid, "sam", "Hello, Sam here")
    row = inbox.row("sam", tid)
    assert row is not None and row.waiting_since is None  # staff had the last word: nobody waits
    tickets.customer_message("c1", "It is still broken", "en")
    row = inbox.row("sam", tid)
    assert row is not None and row.waiting_s() is not None and row.waiting_s() < 60  # type: ignore[operator]
    tickets.customer_message("c1", "Hello?", "en")  # a second message: still waiting since the first
    assert inbox.row("sam", tid).waiting_since == row.waiting_since  # type: ignore[union-attr]
    tickets.resolve(tid, "sam")
    assert inbox.row("sam", tid).waiting_since is None  # type: ignore[union-attr]


def test_unread_counts_per_staff_member_and_opening_marks_read(stores: tuple[TicketStore, InboxStore]) -> None:
    tickets, inbox = stores
    tid = escalate(tickets, "c1")
    tickets.customer_message("c1", "more detail", "en")
    assert inbox.row("sam", tid).unread == 2  # type: ignore[union-attr]
    newest = tickets.conversations.newest_message_id("c1")
    inbox.mark_read("c1", "sam", newest)
    assert inbox.row("sam", tid).unread == 0  # type: ignore[union-attr]
    assert inbox.row("ada", tid).unread == 2  # type: ignore[union-attr]  # per person
    inbox.mark_read("c1", "sam", 1)  # a marker never moves back
    assert inbox.row("sam", tid).unread == 0  # type: ignore[union-attr]
    tickets.customer_message("c1", "are you there?", "en")
    assert inbox.row("sam", tid).unread == 1  # type: ignore[union-attr]
    escalate(tickets, "c2")
    assert inbox.unread_total("sam") == 2
    tickets.reply(tid, "ada", "Ada here")  # claimed by Ada: no longer in Sam's work
    assert inbox.unread_total("sam") == 1 and inbox.unread_total("ada") == 4  # 3 in c1, 1 in c2
    tickets.resolve(tid, "ada")
    tickets.conversations.add_message("c1", "user", "thanks bot", lang="en")  # after resolution: the bot's
    assert inbox.row("ada", tid).unread == 3  # type: ignore[union-attr]


def test_views_and_search(stores: tuple[TicketStore, InboxStore]) -> None:
    tickets, inbox = stores
    a = escalate(tickets, "c1", "My router blinks red")
    b = escalate(tickets, "c2", "Invoice 100% wrong_ly", reason="sensitive:refund_or_payment_dispute")
    c = escalate(tickets, "c3", "Hello")
    tickets.claim(b, "sam")
    tickets.note(c, "sam", "customer mentioned the Zebra tariff")
    tickets.set_email("c3", "Kim@Example.org")
    assert [r.ticket.id for r in inbox.queue("sam", "open")] == [a, c]  # oldest first
    assert [r.ticket.id for r in inbox.queue("sam", "mine")] == [b]
    assert [r.ticket.id for r in inbox.queue("ada", "mine")] == []
    assert {r.ticket.id for r in inbox.queue("sam", "all")} == {a, b, c}
    assert [r.ticket.id for r in inbox.queue("sam", "all", "ROUTER")] == [a]  # message text, any case
    assert [r.ticket.id for r in inbox.queue("sam", "all", "zebra")] == [c]  # a staff note
    assert [r.ticket.id for r in inbox.queue("sam", "all", "kim@example")] == [c]  # the e-mail
    assert [r.ticket.id for r in inbox.queue("sam", "all", b.lower())] == [b]  # the ticket id
    assert [r.ticket.id for r in inbox.queue("sam", "all", "refund")] == [b]  # the reason
    assert [r.ticket.id for r in inbox.queue("sam", "all", "100%")] == [b]  # LIKE wildcards are literal
    assert [r.ticket.id for r in inbox.queue("sam", "all", "0%")] == [b]
    assert inbox.queue("sam", "all", "wrong_l")[0].ticket.id == b
    assert inbox.queue("sam", "all", "wron_") == []  # '_' is not a wildcard
    assert inbox.queue("sam", "open", "router")[0].ticket.id == a  # search within a view
    assert inbox.queue("sam", "mine", "router") == []
    with pytest.raises(ValueError):
        inbox.queue("sam", "everything")


def test_earlier_tickets_by_conversation_and_email(stores: tuple[TicketStore, InboxStore]) -> None:
    tickets, inbox = stores
    first = escalate(tickets, "c1", "first problem")
    tickets.resolve(first, "sam")
    second = escalate(tickets, "c1", "second problem")  # the same chat, again
    other = escalate(tickets, "c2", "from another browser")
    tickets.set_email("c2", "kim@example.org")
    tickets.resolve(other, "sam")
    tickets.set_email("c1", "KIM@example.org")
    stranger = escalate(tickets, "c3", "someone else")
    earlier = inbox.earlier(tickets.get(second))
    assert [r.ticket.id for r in earlier] == [other, first]  # newest first
    assert earlier[0].first_message == "from another browser"
    assert [r.ticket.id for r in inbox.earlier(tickets.get(stranger))] == []


def test_allowed_actions_follow_the_state_and_the_store_agrees(stores: tuple[TicketStore, InboxStore]) -> None:
    tickets, _ = stores
    tid = escalate(tickets, "c1")
    assert tickets.allowed(tid, "sam") == {"claim", "reply", "note", "resolve"}
    tickets.claim(tid, "sam")
    assert tickets.allowed(tid, "sam") == {"reply", "note", "resolve"}
    assert tickets.allowed(tid, "ada") == {"note", "resolve"}
    with pytest.raises(TicketError):
        tickets.reply(tid, "ada", "let me")  # what is not allowed is refused by the store too
    with pytest.raises(TicketError):
        tickets.claim(tid, "ada")
    tickets.resolve(tid, "sam")
    assert tickets.allowed(tid, "sam") == {"note", "reopen"}
    with pytest.raises(TicketError):
        tickets.reply(tid, "sam", "hi")
    newer = escalate(tickets, "c1", "again")
    assert tickets.allowed(tid, "sam") == {"note"}  # the conversation has another active ticket
    with pytest.raises(TicketError):
        tickets.reopen(tid, "sam")
    assert allowed_actions(tickets.get(newer), "sam") == {"claim", "reply", "note", "resolve"}


def test_every_escalation_reason_has_a_readable_label() -> None:
    codes = [v for k, v in vars(escalation).items() if k.isupper() and isinstance(v, str)]
    codes = [c for c in codes if re.fullmatch(r"[a-z_]+", c)]  # the reason constants
    assert set(codes) <= set(REASON_LABELS), set(codes) - set(REASON_LABELS)
    for topic in escalation.SENSITIVE_TOPICS:
        label = reason_label(f"sensitive:{topic}")
        assert label.startswith("Sensitive topic: ") and "_" not in label, label
    assert reason_label("model_failure") == "Technical problem: the bot could not answer"
    assert reason_label("some_new_reason") == "Some new reason"  # a code added later still reads as words
    assert "_" not in reason_label("sensitive:brand_new_topic")


def test_the_summary_follows_the_conversation(stores: tuple[TicketStore, InboxStore]) -> None:
    tickets, _ = stores
    tickets.conversations.ensure("c1", "en")
    for role, text in (("user", "hello"), ("assistant", "Hi!"), ("user", "my fibre is down")):
        tickets.conversations.add_message("c1", role, text, lang="en")
    t = tickets.open("c1", reason="no_kb_match", lang="en", history=[Message("user", "hello")], text="my fibre is down")
    assert "Reason: Nothing in the knowledge base." in t.summary and "my fibre is down" in t.summary
    updated = tickets.customer_message("c1", "now the phone line is dead too", "en")
    assert "Customer's last message: now the phone line is dead too" in updated.summary
    assert "Conversation started with: hello" in updated.summary
    assert tickets.get(t.id).summary == updated.summary  # stored, not only returned


def test_canned_replies_per_language(database: Path | str) -> None:
    store = CannedReplyStore(database)
    try:
        en = store.save("/Greeting", "en", "Hello, how can I help?", "sam")
        de = store.save("greeting", "de", "Guten Tag, wie kann ich helfen?", "sam")
        assert en.shortcut == de.shortcut == "greeting" and en.id != de.id
        again = store.save("greeting", "en", "Hi! How can I help?", "ada")  # same shortcut+language: replaced
        assert again.id == en.id and again.updated_by == "ada"
        assert [r.text for r in store.list("en")] == ["Hi! How can I help?"]
        assert {r.lang for r in store.list()} == {"en", "de"}
        for bad in ("", "has space", "x" * 40, "<script>", "Ümlaut"):
            with pytest.raises(CannedReplyError):
                store.save(bad, "en", "text", "sam")
        with pytest.raises(CannedReplyError):
            store.save("ok", "fr", "text", "sam")
        with pytest.raises(CannedReplyError):
            store.save("ok", "en", "   ", "sam")
        store.delete(de.id)
        assert [r.lang for r in store.list()] == ["en"]
        with pytest.raises(CannedReplyError):
            store.delete(de.id)
    finally:
        store.close()
