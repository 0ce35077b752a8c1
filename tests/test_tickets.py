"""TicketStore: one transaction per escalation, event rows for every action, state rules."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import db_rows, store_target

from bot.conversation_store import ConversationStore
from bot.tickets import TicketError, TicketStore
from bot.types import Message, Source

pytestmark = pytest.mark.stores


@pytest.fixture
def store(data_dir: Path) -> TicketStore:
    db = store_target(data_dir)
    conversations = ConversationStore(db)
    conversations.ensure("c1", "en")
    return TicketStore(db, conversations=conversations)


def open_ticket(store: TicketStore, conversation: str = "c1") -> str:
    store.conversations.ensure(conversation, "en")
    return store.open(
        conversation,
        reason="customer_request",
        lang="en",
        history=[Message("user", "hello"), Message("assistant", "hi")],
        text="I want a person",
        sources=(Source("Reset password", "articles/en/reset.md", 0.8),),
    ).id


def test_open_writes_ticket_event_and_handover_together(store: TicketStore, data_dir: Path) -> None:
    tid = open_ticket(store)
    t = store.get(tid)
    assert t.status == "open" and t.reason == "customer_request"
    assert [m["content"] for m in t.transcript] == ["hello", "hi", "I want a person"]
    assert t.sources[0]["title"] == "Reset password"
    assert "Customer asked for a person" in t.summary and "Reset password" in t.summary
    assert [e["kind"] for e in store.events(tid)] == ["opened"]
    assert store.conversations.get("c1")["status"] == "human"  # type: ignore[index]


def test_a_failed_open_leaves_nothing_behind(
    store: TicketStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_event", boom)
    with pytest.raises(RuntimeError):
        open_ticket(store)
    db = store_target(data_dir)
    assert db_rows(db, "SELECT count(*) FROM tickets") == [(0,)]
    assert db_rows(db, "SELECT status FROM conversations WHERE id='c1'") == [("bot",)]


def test_one_active_ticket_per_conversation_even_under_concurrency(store: TicketStore) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(open_ticket(store))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert len(store.list()) == 1


def test_every_action_is_an_event_with_who_and_when(store: TicketStore) -> None:
    tid = open_ticket(store)
    store.claim(tid, "sam")
    store.note(tid, "sam", "customer sounds upset")
    store.reply(tid, "sam", "Hello, Sam here")
    store.resolve(tid, "sam", notice="The bot is back")
    store.reopen(tid, "kim")
    events = store.events(tid)
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("opened", "bot"),
        ("claimed", "sam"),
        ("note", "sam"),
        ("replied", "sam"),
        ("resolved", "sam"),
        ("reopened", "kim"),
    ]
    assert all(e["created_at"].endswith("Z") for e in events)
    roles = [(m.role, m.content) for m in store.conversations.messages("c1")]
    assert ("staff", "Hello, Sam here") in roles and ("system", "The bot is back") in roles
    assert all("upset" not in content for _, content in roles)  # internal notes never reach the customer


def test_state_rules(store: TicketStore) -> None:
    tid = open_ticket(store)
    store.claim(tid, "sam")
    with pytest.raises(TicketError, match="already claimed by sam"):
        store.claim(tid, "kim")
    with pytest.raises(TicketError, match="claimed by sam"):
        store.reply(tid, "kim", "me too")
    with pytest.raises(TicketError, match="empty"):
        store.reply(tid, "sam", "   ")
    store.resolve(tid, "sam")
    with pytest.raises(TicketError, match="already resolved"):
        store.resolve(tid, "sam")
    with pytest.raises(TicketError, match="resolved"):
        store.reply(tid, "sam", "late")
    with pytest.raises(TicketError, match="unknown ticket"):
        store.claim("T-NOPE00", "sam")


def test_unclaimed_notice_is_sent_once_and_email_recorded(store: TicketStore) -> None:
    tid = open_ticket(store)
    assert store.notify_unclaimed("c1", after_s=3600, notice="wait") is False
    assert store.notify_unclaimed("c1", after_s=0, notice="We will reply by e-mail") is True
    assert store.notify_unclaimed("c1", after_s=0, notice="again") is False
    store.set_email("c1", "kunde@example.org")
    assert store.get(tid).email == "kunde@example.org"
    kinds = [e["kind"] for e in store.events(tid)]
    assert kinds == ["opened", "customer_notified", "email_provided"]
