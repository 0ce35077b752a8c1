"""Browser tier: the whole hand-over with two browser contexts (customer and staff member)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ui.auth import UserStore

pytestmark = [pytest.mark.browser, pytest.mark.real_model]


def login(page: Any, base: str, name: str, password: str, target: str = "/staff/") -> None:
    page.goto(base + target)
    page.locator("#username").fill(name)
    page.locator("#password").fill(password)
    page.locator("#login").click()


def test_customer_staff_handover_journey(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    users = UserStore(data_dir / "firstline.db")
    users.add_user("sam", "staff", "correct horse battery")
    users.close()
    server = live_server_factory("llama", env={"FIRSTLINE_MAX_TOKENS": "48"})

    customer_ctx = browser.new_context()
    staff_ctx = browser.new_context()
    customer = customer_ctx.new_page()
    staff = staff_ctx.new_page()
    request.node._pages = [customer, staff]

    # 1. the customer asks for a person and gets a ticket reference
    customer.goto(server.url + "/")
    box = customer.locator("#message textarea")
    box.fill("I want to talk to a real person please")
    box.press("Enter")
    chat = customer.locator("#chat")
    expect(chat).to_contain_text(re.compile(r"ticket number is T-[A-Z0-9]{6}"), timeout=30_000)
    ticket = re.search(r"T-[A-Z0-9]{6}", chat.inner_text()).group(0)  # type: ignore[union-attr]

    # 2. staff log in, see the ticket in the queue, open and claim it, reply
    login(staff, server.url, "sam", "correct horse battery")
    expect(staff.locator("#staff-header")).to_contain_text("signed in as sam", timeout=30_000)
    expect(staff.locator("#queue")).to_contain_text(ticket, timeout=15_000)
    staff.locator("#queue").get_by_text(ticket, exact=True).filter(visible=True).first.click()  # a click opens it
    expect(staff.locator("#transcript-box")).to_contain_text("talk to a real person", timeout=15_000)
    staff.locator("#claim").click()
    expect(staff.locator("#status")).to_contain_text("Done: claim", timeout=15_000)
    staff.locator("#reply textarea").fill("Hello, this is Sam from support. How can I help?")
    staff.locator("#send-reply").click()
    expect(staff.locator("#status")).to_contain_text("Done: reply", timeout=15_000)

    # 3. the customer sees the reply without reloading
    expect(chat).to_contain_text("this is Sam from support", timeout=15_000)
    # while staff own the conversation, the customer's messages go to the ticket, not the bot
    box.fill("Thanks Sam, my router is blinking red")
    box.press("Enter")
    expect(staff.locator("#transcript-box")).to_contain_text("blinking red", timeout=20_000)  # timer refresh
    expect(staff.locator("#summary")).to_contain_text("blinking red", timeout=15_000)  # the summary follows

    # 4. staff resolve (after confirming); the bot takes over again and says so
    staff.locator("#resolve").click()
    staff.locator("#confirm-resolve").click()
    expect(staff.locator("#status")).to_contain_text("Done: resolve", timeout=15_000)
    expect(chat).to_contain_text("support assistant again", timeout=15_000)

    # 5. the bot answers the next question
    bubbles_before = customer.locator("#chat [data-testid='bot']").count()
    box.fill("How do I reset my password?")
    box.press("Enter")
    expect(customer.locator("#chat [data-testid='bot']")).to_have_count(bubbles_before + 1, timeout=30_000)
    expect(customer.locator("#chat [data-testid='bot']").last).not_to_have_text("", timeout=30_000)
    customer_ctx.close()
    staff_ctx.close()
