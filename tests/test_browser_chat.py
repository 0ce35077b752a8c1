"""Browser tier: a person types a question in headless Chromium and watches the answer stream in."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]


def test_customer_sees_a_streamed_answer(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    # the page must show the answer as it is streamed: with the grounding guard the bundled model's answer
    # is often replaced at once by a quote (tests/test_browser_guard.py), so the guard is off here
    server = live_server_factory("llama", env={"FIRSTLINE_MAX_TOKENS": "120", "FIRSTLINE_GROUNDING_GUARD": "false"})
    page = browser.new_page()
    request.node._pages = [page]
    page.goto(server.url + "/")
    box = page.locator("#message textarea")
    expect(box).to_be_visible(timeout=30_000)
    box.fill("How can I set up my new router and Wi-Fi at home?")
    box.press("Enter")
    bot_bubbles = page.locator("#chat .message.bot, #chat [data-testid='bot']")
    expect(bot_bubbles.first).to_be_visible(timeout=30_000)
    # sample the answer while it is being generated: it must grow in several steps
    lengths: list[int] = []
    deadline = time.time() + 30
    while time.time() < deadline:
        text = bot_bubbles.last.inner_text()
        if not lengths or len(text) != lengths[-1]:
            lengths.append(len(text))
        if len(lengths) >= 4 and page.locator("#message textarea").is_enabled():
            break
        time.sleep(0.05)
    assert len([n for n in lengths if n > 0]) >= 3, lengths  # streamed, not delivered at once
    expect(bot_bubbles.last).not_to_have_text("", timeout=10_000)
    # the answer names its knowledge-base sources, with links to the help-centre articles
    expect(bot_bubbles.last).to_contain_text("Sources", timeout=30_000)
    links = bot_bubbles.last.locator("a[href^='https://help.lumenet.example/']")
    expect(links.first).to_be_visible(timeout=10_000)
    page.close()
