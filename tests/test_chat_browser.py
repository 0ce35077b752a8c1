"""Browser tier: what a customer sees on /chat/ in Chromium, against the scripted model (slow tokens, so the
moments between pressing Enter and the answer can be watched).

A MutationObserver in the page records every state of the chat, so a bubble that disappears for a moment
is caught, not missed between two samples.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.conversation_store import ConversationStore
from bot.tickets import TicketStore

pytestmark = [pytest.mark.browser]

# the scripted answer streams slowly; it is not grounded in the knowledge base, so the grounding guard (#12,
# tests/test_browser_guard.py) would replace it: these tests watch how the page shows an answer, not which
SLOW = {"FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.7", "FIRSTLINE_ASK_MODEL_WHEN_UNSURE": "false",
        "FIRSTLINE_GROUNDING_GUARD": "false"}  # fmt: skip
MODEL_QUESTION = "How can I set up my new router and Wi-Fi at home?"  # not in the FAQ: the model answers
SCRIPTED = "This is a scripted answer."
BOT = "#chat [data-testid='bot']"
USER = "#chat [data-testid='user']"
RECORDER = """() => {
  window.__fl = [];
  const snap = () => {
    const chat = document.querySelector('#chat');
    if (!chat) { return; }
    const bots = Array.from(chat.querySelectorAll('[data-testid="bot"]'));
    const users = Array.from(chat.querySelectorAll('[data-testid="user"]'));
    const last = bots[bots.length - 1];
    const box = document.querySelector('#message textarea');
    const timers = Array.from(document.querySelectorAll(
      '.progress-text, .meta-text, .meta-text-center, .eta-bar, .progress-level, .timer'))
      .filter(e => e.offsetParent !== null).map(e => e.innerText);
    window.__fl.push({users: users.map(u => u.innerText), bots: bots.length, last: last ? last.innerText : '',
      typing: !!(last && last.querySelector('.fl-typing')), timers: timers,
      box: !!(box && box.offsetParent !== null)});
  };
  new MutationObserver(snap).observe(document.body,
    {subtree: true, childList: true, characterData: true, attributes: true});
  snap();
}"""


def open_chat(browser: Any, url: str, request: pytest.FixtureRequest, locale: str = "en-US") -> tuple[Any, Any]:
    context = browser.new_context(locale=locale, viewport={"width": 1000, "height": 950})
    page = context.new_page()
    request.node._pages = [*getattr(request.node, "_pages", []), page]
    page.goto(url + "/chat/")
    page.locator("#message textarea").wait_for(timeout=30_000)
    return context, page


def send(page: Any, message: str) -> None:
    box = page.locator("#message textarea")
    box.fill(message)
    box.press("Enter")


def db_rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data_dir / "firstline.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def only_conversation(data_dir: Path) -> str:
    return str(wait_for(lambda: db_rows(data_dir, "SELECT id FROM conversations"))[-1][0])


# -- items 1 and 2 -------------------------------------------------------------------------------------------
def test_the_question_shows_at_once_then_typing_then_an_answer_that_never_vanishes(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env=SLOW)
    context, page = open_chat(browser, server.url, request)
    send(page, "When is my bill debited?")  # an FAQ answer: the chat already holds a bot message
    expect(page.locator(BOT).last).to_contain_text("SEPA", timeout=30_000)
    page.wait_for_timeout(2500)  # a poll tick has passed
    page.evaluate(RECORDER)
    send(page, MODEL_QUESTION)
    expect(page.locator(BOT).last).to_contain_text(SCRIPTED, timeout=60_000)
    page.wait_for_timeout(2500)  # and another tick after the answer
    states = page.evaluate("() => window.__fl")
    asked = next(i for i, s in enumerate(states) if any(MODEL_QUESTION in u for u in s["users"]))
    answered = next(i for i, s in enumerate(states) if "This" in s["last"] and s["bots"] == 2)
    # 1. the question is on screen with a typing indicator before any of the answer has arrived
    assert asked < answered and states[asked]["typing"] and states[asked]["bots"] == 2, states[asked]
    assert any(s["typing"] and any(MODEL_QUESTION in u for u in s["users"]) for s in states[:answered])
    # ... and no Gradio timer ever replaces the input box
    assert all(not s["timers"] for s in states), next(s["timers"] for s in states if s["timers"])
    assert all(s["box"] for s in states)
    # 2. from the moment it was asked, no bubble disappears and the growing answer never shrinks or vanishes
    counts = [s["bots"] for s in states[asked:]]
    assert counts == sorted(counts) and min(counts) == 2, counts
    growing = [len(s["last"]) for s in states[answered:]]
    assert growing == sorted(growing), growing
    assert all(any(MODEL_QUESTION in u for u in s["users"]) for s in states[asked:])
    context.close()


def test_a_message_sent_while_an_answer_streams_is_answered_too(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    """Bug: the streaming answer's last step cleared the next message waiting to be answered, so a customer
    who wrote on while the bot was answering lost that message (it never reached the database)."""
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env={**SLOW, "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.2"})
    context, page = open_chat(browser, server.url, request)
    send(page, MODEL_QUESTION)
    expect(page.locator(BOT).last).to_contain_text("This", timeout=60_000)  # the answer is streaming
    send(page, "And how do I change the Wi-Fi password?")
    expect(page.locator(USER)).to_have_count(2, timeout=30_000)
    expect(page.locator(BOT)).to_have_count(2, timeout=60_000)
    expect(page.locator(BOT).last).to_contain_text(SCRIPTED, timeout=60_000)
    page.wait_for_timeout(2500)  # a poll tick redraws from the database: both questions are stored
    expect(page.locator(USER)).to_have_count(2)
    expect(page.locator(USER).last).to_contain_text("Wi-Fi password")
    context.close()


def test_a_rate_limit_notice_given_while_an_answer_streams_stays_on_screen(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    """Bug: the refusal was drawn into the chat, and the next frame of the answer still streaming redrew the
    chat without it, so the customer never learnt why the message stayed in the box (seen in CI)."""
    from playwright.sync_api import expect

    env = {**SLOW, "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.2", "FIRSTLINE_CHAT_RATE_LIMIT": "1"}
    server = live_server_factory("scripted", env=env)
    context, page = open_chat(browser, server.url, request)
    send(page, MODEL_QUESTION)
    expect(page.locator(BOT).last).to_contain_text("This", timeout=60_000)  # the answer is streaming
    send(page, "And how do I change the Wi-Fi password?")
    notice = "You are sending messages too quickly"
    expect(page.locator("#chat")).to_contain_text(notice, timeout=30_000)
    expect(page.locator(BOT).first).to_contain_text(SCRIPTED, timeout=60_000)  # the answer has ended ...
    page.wait_for_timeout(1500)
    expect(page.locator("#chat")).to_contain_text(notice)  # ... and the notice is still there
    expect(page.locator("#message textarea")).to_have_value("And how do I change the Wi-Fi password?")
    context.close()


# -- item 3, the agent's name and the rating after resolution (item 7) -----------------------------------------
def test_after_the_hand_over_the_customer_is_answered_and_asked_for_a_rating(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env=SLOW)
    context, page = open_chat(browser, server.url, request)
    chat = page.locator("#chat")
    page.locator("#talk-to-person").click()
    expect(chat).to_contain_text(re.compile(r"ticket number is T-[A-Z0-9]{6}"), timeout=30_000)
    ticket = re.search(r"T-[A-Z0-9]{6}", chat.inner_text()).group(0)  # type: ignore[union-attr]
    send(page, "My router is blinking red")
    # a colleague is talking with the customer: no second notice, the message is marked as sent to the team
    expect(chat.locator("[data-testid='user']").last).to_contain_text("sent to our team", timeout=30_000)
    expect(page.locator(USER).last).to_contain_text("sent to our team")
    page.locator("#talk-to-person").click()
    expect(chat).to_contain_text("You are already connected with our support team", timeout=30_000)

    tickets = TicketStore(data_dir / "firstline.db", conversations=ConversationStore(data_dir / "firstline.db"))
    try:
        tickets.reply(ticket, "sam", "Hello, which light exactly?")
        expect(chat).to_contain_text("sam from our support team has joined the conversation", timeout=15_000)
        expect(page.locator(BOT).last).to_contain_text("sam · Support team: Hello, which light exactly?")
        expect(page.locator("#rating-row")).to_be_hidden()
        tickets.resolve(ticket, "sam", notice=f"Our colleague has closed ticket {ticket}.")
    finally:
        tickets.close()
    expect(chat).to_contain_text(f"Our colleague has closed ticket {ticket}", timeout=15_000)
    expect(page.locator("#rating-row")).to_be_visible(timeout=15_000)
    page.locator("#stars label").filter(has_text="4").click()
    expect(page.locator("#email-note")).to_contain_text("Thank you for your feedback", timeout=15_000)
    expect(page.locator("#rating-row")).to_be_hidden()
    assert db_rows(data_dir, "SELECT kind, target, score FROM ratings") == [("resolution", ticket, 4)]
    context.close()


def test_a_timed_out_answer_and_the_hand_over_notice_are_two_bubbles(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env={**SLOW, "FIRSTLINE_MODEL_TIMEOUT_S": "1"})
    context, page = open_chat(browser, server.url, request)
    send(page, MODEL_QUESTION)
    notice = page.locator(BOT).filter(has_text="technical problem")
    expect(notice).to_contain_text(re.compile(r"ticket number is T-[A-Z0-9]{6}"), timeout=60_000)
    cut = page.locator(BOT).filter(has_text="this answer was interrupted")
    expect(cut).to_have_count(1)
    expect(cut).to_contain_text("This")
    expect(cut).not_to_contain_text("ticket number")
    expect(notice).not_to_contain_text("This is")
    context.close()


# -- item 4 ------------------------------------------------------------------------------------------------------
def test_a_reload_keeps_the_conversation_and_the_open_ticket(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env=SLOW)
    context, page = open_chat(browser, server.url, request)
    send(page, "When is my bill debited?")
    expect(page.locator(BOT).last).to_contain_text("SEPA", timeout=30_000)
    page.locator("#talk-to-person").click()
    expect(page.locator("#chat")).to_contain_text("ticket number is", timeout=30_000)
    conversation = only_conversation(data_dir)
    stored = page.evaluate("() => JSON.stringify(localStorage)")
    assert conversation not in stored  # the browser holds a token, not the conversation id

    page.reload()
    chat = page.locator("#chat")
    expect(chat).to_contain_text("When is my bill debited?", timeout=30_000)
    expect(chat).to_contain_text("SEPA")
    expect(chat).to_contain_text("ticket number is")
    ticket = db_rows(data_dir, "SELECT id FROM tickets")[0][0]
    tickets = TicketStore(data_dir / "firstline.db", conversations=ConversationStore(data_dir / "firstline.db"))
    try:
        tickets.reply(ticket, "sam", "Reply after your reload")
    finally:
        tickets.close()
    expect(chat).to_contain_text("Reply after your reload", timeout=15_000)  # the resumed chat is live
    send(page, "Thanks!")
    # a colleague is talking with the customer: no second notice, the message is marked as sent to the team
    expect(chat.locator("[data-testid='user']").last).to_contain_text("sent to our team", timeout=30_000)
    assert db_rows(data_dir, "SELECT count(*) FROM conversations") == [(1,)]  # no second conversation

    # another browser starts fresh: the token is this browser's
    other_context, other = open_chat(browser, server.url, request)
    other.wait_for_timeout(3000)
    expect(other.locator(BOT)).to_have_count(0)
    other_context.close()

    # "clear" starts a new conversation; a reload no longer brings the old one back
    page.locator("#chat button[aria-label='Clear']").first.click()  # the chat's bin icon
    expect(page.locator(BOT)).to_have_count(0, timeout=15_000)
    page.reload()
    page.wait_for_timeout(3000)
    expect(page.locator(BOT)).to_have_count(0)
    assert db_rows(data_dir, "SELECT count(*) FROM conversation_tokens") == [(0,)]
    context.close()


# -- items 5, 6 and 7: a German browser, the welcome, topic chips, thumbs --------------------------------------
def test_a_german_customer_gets_german_chips_sources_without_paths_and_can_rate(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env=SLOW)
    context, page = open_chat(browser, server.url, request, locale="de-DE")
    expect(page.locator("#send")).to_have_text("Senden", timeout=30_000)
    expect(page.locator("#talk-to-person")).to_have_text("Mit einem Menschen sprechen")
    expect(page.locator("#message textarea")).to_have_attribute("placeholder", "Ihre Frage …")
    chat = page.locator("#chat")
    expect(chat).to_contain_text("Ich bin der digitale Assistent von Lumenet")
    chip = chat.get_by_text("Billing", exact=True)
    expect(chip).to_be_visible()
    chip.click()
    suggestions = page.locator("#suggestions")
    expect(suggestions).to_contain_text("Häufige Fragen zu Billing", timeout=15_000)
    suggestions.get_by_text("Wann wird meine Rechnung abgebucht?").click()
    answer = page.locator(BOT).last
    expect(answer).to_contain_text("SEPA", timeout=30_000)
    expect(answer).to_contain_text("Quellen:")
    assert "faq.jsonl" not in chat.inner_text() and "#" not in answer.inner_text()
    expect(suggestions).to_be_hidden()

    # thumbs up on the answer: stored as the answer's rating
    answer.hover()
    page.locator("#chat button[aria-label='Gefällt mir']").last.click()  # Gradio's own label, in German
    expect(page.locator("#email-note")).to_contain_text("Vielen Dank für Ihre Rückmeldung", timeout=15_000)
    rating = wait_for(lambda: db_rows(data_dir, "SELECT kind, score FROM ratings"))
    assert rating == [("answer", 1)]
    route = db_rows(data_dir, "SELECT q.route FROM ratings r JOIN requests q ON q.request_id = r.target")
    assert route == [("faq",)]

    # the button on this page: the hand-over in German
    page.locator("#talk-to-person").click()
    expect(chat).to_contain_text("Ihre Ticketnummer ist", timeout=30_000)
    context.close()


def test_a_fresh_page_presses_the_button_in_the_browsers_language(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env=SLOW)
    context, page = open_chat(browser, server.url, request, locale="de-DE")
    expect(page.locator("#talk-to-person")).to_have_text("Mit einem Menschen sprechen", timeout=30_000)
    page.locator("#talk-to-person").click()
    expect(page.locator("#chat")).to_contain_text("Ihre Ticketnummer ist", timeout=30_000)
    context.close()
