"""Browser tier: a garbled model answer never appears on the chat page; the quoted article does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.browser

GARBLED_DE = (
    "Ich habe eine kleine Nachrichta für die Kunden. Sie ist ein neue Art mit der LumeBox 7, das wichtig zu "
    "erfahrbar. Dieser Art sind nur für die Auszuglängler von Lumenet im First-Level-Support."
)


def test_the_garbled_answer_never_shows_on_the_chat_page(
    browser: Any, live_server_factory: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    # the fake model answers every question with the garbled text from issue #12, slowly, token by token
    server = live_server_factory(
        "scripted", env={"FIRSTLINE_SCRIPTED_ANSWER": GARBLED_DE, "FIRSTLINE_SCRIPTED_SECONDS_PER_TOKEN": "0.02"}
    )
    page = browser.new_page()
    request.node._pages = [page]
    page.goto(server.url + "/")
    box = page.locator("#message textarea")
    expect(box).to_be_visible(timeout=30_000)
    box.fill("Mein Router blinkt seit heute morgen orange, was bedeutet das?")
    box.press("Enter")
    bubbles = page.locator("#chat .message.bot, #chat [data-testid='bot']")
    expect(bubbles.first).to_be_visible(timeout=30_000)
    # watch the page while the model "writes" (about 0.7 s of tokens) and after: no garbled word, ever
    seen: list[str] = []
    deadline = time.time() + 20
    while time.time() < deadline:
        seen.append(page.locator("#chat").inner_text())
        if "LumeBox 7 einrichten" in seen[-1] and box.is_enabled():
            break
        time.sleep(0.05)
    for text in seen:
        for word in ("Nachrichta", "Auszuglängler", "erfahrbar", "kleine Nachricht"):
            assert word not in text
    # instead: the quoted passage, its article named in the first line and linked as the source
    last = bubbles.last
    expect(last).to_contain_text("Aus unserem Hilfe-Center-Artikel", timeout=10_000)
    expect(last).to_contain_text("orange blinkend", timeout=10_000)
    link = last.locator("a[href='https://help.lumenet.example/de/technical/router-einrichten-lumebox-7']")
    expect(link.first).to_be_visible(timeout=10_000)
    page.close()
