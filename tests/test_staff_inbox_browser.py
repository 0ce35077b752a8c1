"""Browser tier: the staff inbox in headless Chromium, every button and shortcut pressed.

Tickets are made the way customers make them (through the bot, in this process, on the server's
database) while a staff member works in the console: click to open, state-dependent buttons, a
confirmation before resolving, readable reasons, the waiting time, unread counts, search, the customer's
earlier tickets, a summary that follows the customer, canned replies (/shortcut + Tab, the picker, the
tab that keeps them), Ctrl+Enter, the FAQ review list that updates by itself, and a tone plus a desktop
notification for a new ticket.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.canned import CannedReplyStore
from bot.suggestions import SuggestionStore
from models.fake import ScriptedChatModel
from ui.auth import UserStore
from usage.ledger import iso, parse_iso

pytestmark = [pytest.mark.browser]
PASSWORD = "correct horse battery"
# Notifications and sound, observed: the page's Notification is replaced by a recorder (permission granted),
# and every tone the page starts is counted.
RECORDER = """
window.__notes = [];
window.__tones = 0;
class RecordedNotification { constructor(title, opts) { window.__notes.push({title, body: (opts || {}).body}); } }
RecordedNotification.permission = "default";
RecordedNotification.requestPermission = async () => { RecordedNotification.permission = "granted"; return "granted"; };
window.Notification = RecordedNotification;
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) { window.__tones += 1; return start.apply(this, args); };
"""


class Desk:
    """The customers' side: the bot on the server's database, in this process."""

    def __init__(self, data_dir: Path) -> None:
        from ui.app import build_services

        self.db = data_dir / "firstline.db"
        self.services = build_services(data_dir, model=ScriptedChatModel(), demo_kb=False)

    def escalate(self, conv: str, text: str) -> str:
        reply = self.services.bot.handle_message(conv, text)
        assert reply.ticket_id, reply
        return reply.ticket_id

    def write(self, conv: str, text: str) -> None:
        self.services.bot.handle_message(conv, text)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute(query, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def backdate(self, conv: str, minutes: int) -> None:
        for table in ("messages", "tickets"):
            for pk, created in self.sql(f"SELECT id, created_at FROM {table} WHERE conversation_id = ?", (conv,)):
                new = iso(parse_iso(created) - timedelta(minutes=minutes))
                self.sql(f"UPDATE {table} SET created_at = ? WHERE id = ?", (new, pk))


@pytest.fixture
def desk(data_dir: Path) -> Iterator[Desk]:
    users = UserStore(data_dir / "firstline.db")
    users.add_user("sam", "staff", PASSWORD)
    users.close()
    d = Desk(data_dir)
    yield d
    d.services.close()


def login(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/login?next=/staff/")
    page.locator("#username").fill("sam")
    page.locator("#password").fill(PASSWORD)
    page.locator("#login").click()
    expect(page.locator("#staff-header")).to_contain_text("signed in as sam", timeout=30_000)


def open_from(page: Any, table: str, ticket: str) -> None:
    """A click on the ticket's row opens it."""
    from playwright.sync_api import expect

    # the visible cell: Gradio's Dataframe also renders the first rows into a hidden sizing table
    page.locator(f"#{table}").get_by_text(ticket, exact=True).filter(visible=True).first.click()
    expect(page.locator("#ticket-head")).to_contain_text(ticket, timeout=15_000)


def start(browser: Any, server: Any, request: pytest.FixtureRequest, **context: Any) -> Any:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    request.node._pages = [page]
    login(page, server.url)
    return page


def test_inbox_click_to_open_state_buttons_confirm_search_earlier_and_replies(
    browser: Any, live_server_factory: Callable[..., Any], desk: Desk, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    old = desk.escalate("kim-1", "I want to talk to a person about my old contract")
    desk.services.tickets.set_email("kim-1", "kim@example.org")
    desk.services.tickets.resolve(old, "ada")
    first = desk.escalate("kim-2", "I want to talk to a person please")
    desk.services.tickets.set_email("kim-2", "Kim@Example.org")
    desk.backdate("kim-2", 95)  # Kim has waited 95 minutes
    other = desk.escalate("lee", "I want a refund, you charged my router twice")
    canned = CannedReplyStore(desk.db)
    canned.save("greet", "en", "Hello, this is the support team.", "ada")
    canned.save("greet", "de", "Guten Tag, hier ist das Support-Team.", "ada")
    canned.close()

    page = start(browser, server, request)
    queue = page.locator("#queue")
    expect(queue).to_contain_text(first, timeout=20_000)
    expect(queue).to_contain_text("Customer asked for a person")  # reasons as words, not codes
    expect(queue).to_contain_text("Sensitive topic: refund or payment dispute")
    assert "customer_request" not in queue.inner_text() and "sensitive:" not in queue.inner_text()
    expect(queue).to_contain_text("1 h 35 min")  # how long Kim has waited
    expect(page.locator("#staff-header")).to_contain_text("2 unread")
    for button in ("#claim", "#resolve", "#reopen", "#send-reply", "#add-note", "#draft"):
        expect(page.locator(button)).to_be_disabled()  # no ticket open: nothing to do

    # 8. a click opens the ticket; opening marks it read
    open_from(page, "queue", first)
    expect(page.locator("#transcript-box")).to_contain_text("talk to a person please")
    expect(page.locator("#ticket-head")).to_contain_text("customer waiting for a reply: 1 h 35 min")
    expect(page.locator("#staff-header")).to_contain_text("1 unread", timeout=10_000)
    expect(page.locator("#claim")).to_be_enabled()
    expect(page.locator("#reopen")).to_be_disabled()
    expect(page.locator("#customer")).to_contain_text("Kim@Example.org")

    # 11. the customer's earlier ticket (same e-mail, another chat) opens from the side panel: resolved,
    # so only reopening (and notes) are possible
    expect(page.locator("#earlier")).to_contain_text(old)
    open_from(page, "earlier", old)
    expect(page.locator("#transcript-box")).to_contain_text("old contract")
    expect(page.locator("#reopen")).to_be_enabled()
    for button in ("#claim", "#resolve", "#send-reply", "#draft"):
        expect(page.locator(button)).to_be_disabled()
    open_from(page, "queue", first)

    # claim; then the canned reply by shortcut + Tab, sent with Ctrl+Enter
    page.locator("#claim").click()
    expect(page.locator("#status")).to_contain_text("Done: claim", timeout=15_000)
    expect(page.locator("#claim")).to_be_disabled()
    box = page.locator("#reply textarea")
    box.fill("/greet")
    box.press("Tab")
    expect(box).to_have_value("Hello, this is the support team.")
    box.press("End")
    box.type(" How can we help?")
    box.press("Control+Enter")
    expect(page.locator("#status")).to_contain_text("Done: reply", timeout=15_000)
    expect(box).to_have_value("")
    expect(page.locator("#transcript-box")).to_contain_text("support team. How can we help?")
    staff_rows = desk.sql("SELECT content FROM messages WHERE conversation_id = 'kim-2' AND role = 'staff'")
    assert staff_rows == [("Hello, this is the support team. How can we help?",)]
    expect(page.locator("#ticket-head")).to_contain_text("answered, the customer has not written since")

    # 10. the summary follows the customer; the waiting time starts again with the customer's message
    desk.write("kim-2", "My router blinks red since this morning")
    expect(page.locator("#summary")).to_contain_text("blinks red since this morning", timeout=15_000)
    expect(page.locator("#transcript-box")).to_contain_text("blinks red")
    expect(page.locator("#ticket-head")).to_contain_text("customer waiting for a reply: <1 min")

    # the canned picker, a knowledge-base draft, an internal note
    page.get_by_role("combobox", name="Insert a canned reply").click()
    page.get_by_role("option", name="/greet").click()
    expect(box).to_have_value("Hello, this is the support team.")
    box.fill("")
    page.locator("#draft").click()
    page.wait_for_timeout(1000)  # the scripted server has no knowledge base: the draft may stay empty
    box.fill("Customer sounds upset; check line 7")
    page.locator("#add-note").click()
    expect(page.locator("#status")).to_contain_text("Done: note", timeout=15_000)
    page.get_by_text("Bot's sources and ticket history").click()
    expect(page.locator("#events")).to_contain_text("check line 7")
    expect(page.locator("#events")).to_contain_text("opened by bot: Customer asked for a person")

    # 10. resolving asks first; cancel keeps the ticket, confirm resolves it
    page.locator("#resolve").click()
    expect(page.locator("#confirm-resolve-row")).to_contain_text(f"Resolve {first}", timeout=10_000)
    page.locator("#cancel-resolve").click()
    expect(page.locator("#status")).to_contain_text("Not resolved", timeout=10_000)
    expect(page.locator("#confirm-resolve")).to_be_hidden()
    assert desk.services.tickets.get(first).status == "claimed"
    page.locator("#resolve").click()
    page.locator("#confirm-resolve").click()
    expect(page.locator("#status")).to_contain_text("Done: resolve", timeout=15_000)
    assert desk.services.tickets.get(first).status == "resolved"
    expect(page.locator("#reopen")).to_be_enabled()
    for button in ("#claim", "#resolve", "#send-reply"):
        expect(page.locator(button)).to_be_disabled()
    page.locator("#reopen").click()
    expect(page.locator("#status")).to_contain_text("Done: reopen", timeout=15_000)
    expect(page.locator("#claim")).to_be_enabled()

    # 11. search over all tickets, and the views
    page.locator("#queue-view").get_by_text("All").click()
    expect(queue).to_contain_text(old, timeout=10_000)
    search = page.locator("#search textarea, #search input").first
    search.fill("router")
    search.press("Enter")
    expect(queue).not_to_contain_text(old, timeout=10_000)
    expect(queue).to_contain_text(other)
    expect(queue).to_contain_text(first)  # "router" is in Kim's messages too
    search.fill("charged my router")
    search.press("Enter")
    expect(queue).not_to_contain_text(first, timeout=10_000)
    expect(queue).to_contain_text(other)
    search.fill("")
    search.press("Enter")
    expect(queue).to_contain_text(old, timeout=10_000)
    page.locator("#queue-view").get_by_text("Mine").click()
    expect(queue).not_to_contain_text(other, timeout=10_000)
    page.locator("#queue-view").get_by_text("Open").click()
    expect(queue).to_contain_text(other, timeout=10_000)

    # proposing a FAQ entry shows up in the review tab's title at once
    page.get_by_text("Save this answer to the knowledge base").click()
    page.locator("#kb-question textarea").fill("Why does my router blink red?")
    page.locator("#kb-answer textarea").fill("A red light means no line signal; restart the router.")
    page.locator("#propose").click()
    expect(page.locator("#status")).to_contain_text("goes live after review", timeout=15_000)
    expect(page.get_by_role("tab", name="FAQ suggestions to review (1)")).to_be_visible(timeout=10_000)


def test_the_faq_review_list_updates_by_itself_with_approve_and_reject(
    browser: Any, live_server_factory: Callable[..., Any], desk: Desk, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    page = start(browser, server, request)
    page.get_by_role("tab", name=re.compile("FAQ suggestions to review")).click()
    expect(page.locator("#no-suggestions")).to_be_visible(timeout=15_000)
    store = SuggestionStore(desk.db, desk.services.knowledge)
    keep = store.propose("How long does a refund take?", "Refunds arrive within 5 working days.", "en", "ada")
    drop = store.propose("Is the moon made of cheese?", "No, it is made of rock.", "en", "ada")
    # 9. proposed by a colleague: the list shows it without a reload
    expect(page.locator(".suggestion")).to_have_count(2, timeout=15_000)
    expect(page.get_by_role("tab", name="FAQ suggestions to review (2)")).to_be_visible()
    page.locator(f"#approve-{keep}").click()
    expect(page.locator("#review-status")).to_contain_text(f"Approved #{keep}", timeout=15_000)
    expect(page.locator(".suggestion")).to_have_count(1, timeout=10_000)
    page.locator(f"#reject-{drop}").click()
    expect(page.locator("#review-status")).to_contain_text(f"Rejected #{drop}", timeout=15_000)
    expect(page.locator("#no-suggestions")).to_be_visible(timeout=10_000)
    statuses = dict(desk.sql("SELECT id, status FROM faq_suggestions"))
    assert statuses == {keep: "approved", drop: "rejected"}
    assert desk.services.knowledge.faq_match("How long does a refund take?", "en") is not None
    store.close()


def test_new_tickets_notify_and_count_unread_in_the_title(
    browser: Any, live_server_factory: Callable[..., Any], desk: Desk, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    ctx = browser.new_context()
    ctx.add_init_script(RECORDER)
    page = ctx.new_page()
    request.node._pages = [page]
    login(page, server.url)
    page.locator("#notify").click()
    expect(page.locator("#notify-state")).to_contain_text("Notifications are on", timeout=10_000)
    page.wait_for_timeout(3500)  # one timer round with an empty queue
    assert page.evaluate("window.__notes") == [] and page.evaluate("window.__tones") == 0
    ticket = desk.escalate("new-1", "I want to speak to a human")
    expect(page.locator("#queue")).to_contain_text(ticket, timeout=15_000)
    page.wait_for_function("window.__notes.length > 0", timeout=10_000)
    notes = page.evaluate("window.__notes")
    assert notes == [{"title": f"New ticket {ticket}", "body": "Customer asked for a person"}]
    assert page.evaluate("window.__tones") >= 1
    page.wait_for_function("document.title.startsWith('(1) ')", timeout=10_000)
    desk.write("new-1", "hello? anyone?")
    page.wait_for_function("document.title.startsWith('(2) ')", timeout=10_000)
    expect(page.locator("#queue")).to_contain_text("2")
    open_from(page, "queue", ticket)
    page.wait_for_function("!document.title.startsWith('(')", timeout=10_000)  # opened: read
    assert len(page.evaluate("window.__notes")) == 1  # a new message is not a new ticket
    ctx.close()


def test_canned_replies_tab_saves_edits_and_deletes(
    browser: Any, live_server_factory: Callable[..., Any], desk: Desk, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    page = start(browser, server, request)
    page.get_by_role("tab", name="Canned replies").click()
    page.locator("#canned-shortcut textarea").fill("bad shortcut!")
    page.locator("#canned-text textarea").fill("Thanks for waiting.")
    page.locator("#canned-save").click()
    expect(page.locator("#canned-status")).to_contain_text("invalid shortcut", timeout=15_000)
    page.locator("#canned-shortcut textarea").fill("wait")
    page.locator("#canned-lang").get_by_text("de").click()
    page.locator("#canned-text textarea").fill("Danke für Ihre Geduld.")
    page.locator("#canned-save").click()
    expect(page.locator("#canned-status")).to_contain_text("Saved /wait (de)", timeout=15_000)
    expect(page.locator("#canned-list")).to_contain_text("Danke für Ihre Geduld.")
    page.locator("#canned-shortcut textarea").fill("")
    page.locator("#canned-text textarea").fill("")
    page.locator("#canned-list").get_by_text("Danke für Ihre Geduld.").filter(visible=True).first.click()
    expect(page.locator("#canned-text textarea")).to_have_value("Danke für Ihre Geduld.", timeout=10_000)
    page.locator("#canned-text textarea").fill("Vielen Dank für Ihre Geduld.")
    page.locator("#canned-save").click()
    expect(page.locator("#canned-list")).to_contain_text("Vielen Dank", timeout=15_000)
    saved = desk.sql("SELECT shortcut, lang, text FROM canned_replies")
    assert saved == [("wait", "de", "Vielen Dank für Ihre Geduld.")]
    page.locator("#canned-delete").click()
    expect(page.locator("#canned-status")).to_contain_text("Deleted /wait (de)", timeout=15_000)
    expect(page.locator("#canned-list")).not_to_contain_text("Vielen Dank")
    assert desk.sql("SELECT count(*) FROM canned_replies") == [(0,)]


def test_text_typed_while_the_canned_picker_closes_or_inserts_is_kept(
    browser: Any, live_server_factory: Callable[..., Any], desk: Desk, request: pytest.FixtureRequest
) -> None:
    """Closing the canned picker without a pick, or picking one, never overwrites what was typed since.

    The picker's server round trip used to return the reply box as it was when the event fired: closed
    with Escape it sent back an empty box after the staff member had typed (a CI failure of the XSS
    suite), and a pick overwrote the words typed while it was on its way.
    """
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    ticket = desk.escalate("kai", "I want to talk to a person please")
    canned = CannedReplyStore(desk.db)
    canned.save("greet", "en", "Hello, this is the support team.", "ada")
    canned.close()
    page = start(browser, server, request)
    open_from(page, "queue", ticket)
    box = page.locator("#reply textarea")
    picker = page.get_by_role("combobox", name="Insert a canned reply")
    for _ in range(3):  # the round trip is a race: give it several chances
        box.fill("")
        picker.click()
        expect(page.get_by_role("option", name="/greet")).to_be_visible(timeout=10_000)
        page.keyboard.press("Escape")
        box.fill("typed after closing the picker")
        page.wait_for_timeout(700)  # a late answer from the server would land now
        expect(box).to_have_value("typed after closing the picker")
    box.fill("Dear Kai,")
    picker.click()
    page.get_by_role("option", name="/greet").click()
    expect(box).to_have_value("Dear Kai,\nHello, this is the support team.")
    page.keyboard.type(" We are on it.")  # the box has the focus, its cursor after the inserted reply
    page.wait_for_timeout(700)
    expect(box).to_have_value("Dear Kai,\nHello, this is the support team. We are on it.")
    # the picker is empty again, ready for the next pick
    picker.click()
    page.get_by_role("option", name="/greet").click()
    again = "Dear Kai,\nHello, this is the support team. We are on it.\nHello, this is the support team."
    expect(box).to_have_value(again)
