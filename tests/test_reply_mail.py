"""A customer who left an e-mail address gets the staff reply by e-mail, with a link back to the chat.

A real SMTP server (aiosmtpd) on 127.0.0.1 receives what firstline sends; the browser follows the link.
"""

from __future__ import annotations

import email
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from ui.settings import MailSettings
from ui.web.mail import Mailer, MailError, ReplyMailer


class Sink:
    """An SMTP server that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: list[tuple[str, list[str], Message]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(raw)))
        return "250 OK"

    def wait(self, n: int, timeout: float = 30.0) -> list[tuple[str, list[str], Message]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.received) >= n, f"{len(self.received)} e-mails received, expected {n}"
        return self.received


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    s.controller.start()
    yield s
    s.controller.stop()


def settings(port: int, **extra: Any) -> MailSettings:
    return MailSettings(smtp_host="127.0.0.1", smtp_port=port, mail_from="Lumenet Support <support@lumenet.example>",
                        **extra)  # fmt: skip


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "utf-8")


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data_dir / "firstline.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_staff_reply_is_mailed_once_in_the_customers_language_with_a_link_back(
    services: Any, sink: Sink, data_dir: Path
) -> None:
    bot = services.bot
    ticket = bot.request_human("c-mail", "de").ticket_id
    bot.tickets.set_email("c-mail", "kunde@example.org")
    bot.tickets.reply(ticket, "sam", "Ihr Router wird morgen getauscht.")
    mailer = ReplyMailer(bot.tickets, bot.store, Mailer(settings(sink.port, public_url="https://support.example/")),
                         company="Lumenet", token_days=30)  # fmt: skip
    assert mailer.run_once() == 1
    assert mailer.run_once() == 0  # recorded: never sent twice
    ((sender, to, message),) = sink.wait(1)
    assert sender == "support@lumenet.example" and to == ["kunde@example.org"]
    assert message["Subject"] == f"Lumenet Support: Antwort auf Ihr Ticket {ticket}"
    text = body(message)
    assert "sam vom Lumenet-Support" in text and "Ihr Router wird morgen getauscht." in text
    link = re.search(r"https://support\.example/chat/\?c=([A-Za-z0-9_-]{43,})", text)
    assert link is not None
    assert bot.store.resume(link.group(1), __import__("datetime").timedelta(days=30)) == "c-mail"
    kinds = [r[0] for r in rows(data_dir, f"SELECT kind FROM ticket_events WHERE ticket_id = '{ticket}'")]
    assert kinds[-1] == "emailed"


def test_without_an_address_or_a_public_url(services: Any, sink: Sink) -> None:
    bot = services.bot
    quiet = bot.request_human("c-quiet", "en").ticket_id
    bot.tickets.reply(quiet, "sam", "No address, no e-mail")
    loud = bot.request_human("c-loud", "en").ticket_id
    bot.tickets.set_email("c-loud", "customer@example.org")
    bot.tickets.reply(loud, "kim", "Your router ships tomorrow.")
    mailer = ReplyMailer(bot.tickets, bot.store, Mailer(settings(sink.port)), company="Lumenet", token_days=30)
    assert mailer.run_once() == 1
    ((_, to, message),) = sink.wait(1)
    assert to == ["customer@example.org"] and "kim from the Lumenet support team" in body(message)
    assert "Your router ships tomorrow." in body(message) and "http" not in body(message)


def test_a_mail_server_that_is_down_is_retried_later_and_nothing_is_lost(services: Any, data_dir: Path) -> None:
    bot = services.bot
    ticket = bot.request_human("c-down", "en").ticket_id
    bot.tickets.set_email("c-down", "customer@example.org")
    bot.tickets.reply(ticket, "sam", "Still there?")
    port = free_port()  # nobody listens here yet
    mailer = ReplyMailer(bot.tickets, bot.store, Mailer(settings(port)), company="Lumenet", token_days=30)
    assert mailer.run_once() == 0
    failed = rows(data_dir, "SELECT kind, body FROM ticket_events WHERE kind = 'email_failed'")
    assert len(failed) == 1 and "cannot send e-mail" in failed[0][1]
    assert mailer.run_once() == 0  # within the back-off: not tried again
    assert len(rows(data_dir, "SELECT 1 FROM ticket_events WHERE kind = 'email_failed'")) == 1
    mailer._retry_at.clear()  # the back-off has passed
    from aiosmtpd.controller import Controller

    late = Sink()
    late.controller = Controller(late, hostname="127.0.0.1", port=port)
    late.controller.start()
    try:
        assert mailer.run_once() == 1
        assert "Still there?" in body(late.wait(1)[0][2])
    finally:
        late.controller.stop()


def test_customer_mail_needs_a_server_and_a_sender() -> None:
    assert not Mailer(MailSettings(smtp_host="127.0.0.1")).enabled  # SMTP for budget alerts only
    assert Mailer(MailSettings(smtp_host="127.0.0.1", mail_from="support@example.org")).enabled
    with pytest.raises(MailError, match="not configured"):
        Mailer(MailSettings(smtp_host="127.0.0.1")).send("a@example.org", "s", "b")


@pytest.mark.browser
def test_the_customer_leaves_an_address_gets_the_reply_by_mail_and_the_link_reopens_the_chat(
    browser: Any, live_server_factory: Callable[..., Any], sink: Sink, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    from bot.conversation_store import ConversationStore
    from bot.tickets import TicketStore

    env = {
        "FIRSTLINE_SMTP_HOST": "127.0.0.1", "FIRSTLINE_SMTP_PORT": str(sink.port),
        "FIRSTLINE_MAIL_FROM": "support@lumenet.example", "FIRSTLINE_PUBLIC_URL": "https://support.lumenet.example",
        "FIRSTLINE_UNCLAIMED_NOTICE_S": "0",
    }  # fmt: skip
    server = live_server_factory("scripted", env=env)
    customer_ctx = browser.new_context(locale="en-GB")
    page = customer_ctx.new_page()
    request.node._pages = [page]
    page.goto(server.url + "/chat/")
    page.locator("#talk-to-person").click()
    chat = page.locator("#chat")
    expect(chat).to_contain_text("All colleagues are busy right now", timeout=30_000)  # the unclaimed notice
    page.locator("#email").get_by_role("textbox").fill("customer@example.org")
    page.locator("#email-save").click()
    expect(page.locator("#email-note")).to_contain_text("we will also send our reply to customer@example.org")
    ticket = rows(data_dir, "SELECT id FROM tickets")[0][0]
    customer_ctx.close()  # the customer has left

    tickets = TicketStore(data_dir / "firstline.db", conversations=ConversationStore(data_dir / "firstline.db"))
    try:
        tickets.reply(ticket, "sam", "Your new router ships tomorrow.")
    finally:
        tickets.close()
    ((_, to, message),) = sink.wait(1, timeout=60)
    assert to == ["customer@example.org"] and "Your new router ships tomorrow." in body(message)
    found = re.search(r"https://support\.lumenet\.example(/chat/\?c=[A-Za-z0-9_-]+)", body(message))
    assert found is not None

    # the link opens the conversation in another browser, and the token moves out of the address bar
    phone = browser.new_context(locale="en-GB")
    page = phone.new_page()
    request.node._pages.append(page)
    page.goto(server.url + found.group(1))
    chat = page.locator("#chat")
    expect(chat).to_contain_text("Your new router ships tomorrow.", timeout=30_000)
    expect(chat).to_contain_text(f"ticket number is {ticket}")
    page.wait_for_function("() => !window.location.search.includes('c=')", timeout=15_000)
    page.reload()
    expect(page.locator("#chat")).to_contain_text("Your new router ships tomorrow.", timeout=30_000)
    phone.close()
