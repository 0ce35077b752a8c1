"""Browser tier: the embeddable widget on a company's own web site, served from another port.

One `<script>` tag gives a floating button that opens the chat in a frame; only the sites listed in
FIRSTLINE_WIDGET_ORIGINS may frame the chat; /staff, /admin and /login may not be framed by anyone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import free_port

pytestmark = [pytest.mark.browser]


class Site:
    """A company's web site on its own port: one page whose HTML the test sets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.html = "<!doctype html><title>empty</title>"
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = site.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    shop, stranger = Site(), Site()
    yield shop, stranger
    shop.close()
    stranger.close()


def shop_page(chat_url: str, lang: str = "en") -> str:
    return (
        "<!doctype html><html><head><title>Lumenet shop</title></head><body><h1>Our tariffs</h1>"
        f'<p>Fast internet for everyone.</p><script src="{chat_url}/widget.js" data-lang="{lang}" async></script>'
        "</body></html>"
    )


def test_the_widget_opens_the_chat_on_a_listed_site_only(
    browser: Any, live_server_factory: Callable[..., Any], sites: tuple[Site, Site], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    shop, stranger = sites
    server = live_server_factory(
        "scripted", env={"FIRSTLINE_WIDGET_ORIGINS": shop.origin, "FIRSTLINE_CHAT_RATE_LIMIT": "2"}
    )
    shop.html = shop_page(server.url, "de")
    stranger.html = shop_page(server.url)
    script = httpx.get(server.url + "/widget.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    chat_page = httpx.get(server.url + "/chat/")
    assert chat_page.headers["content-security-policy"] == f"frame-ancestors 'self' {shop.origin}"

    context = browser.new_context(locale="en-US")
    page = context.new_page()
    request.node._pages = [page]
    page.goto(shop.origin + "/")
    launcher = page.locator("#firstline-launcher")
    expect(launcher).to_be_visible(timeout=15_000)
    expect(page.locator("#firstline-panel")).to_be_hidden()
    launcher.click()
    expect(page.locator("#firstline-panel")).to_be_visible()
    frame = page.frame_locator("#firstline-frame")
    expect(frame.locator("#send")).to_have_text("Senden", timeout=30_000)  # data-lang="de"
    expect(frame.locator("#fl-header")).to_be_hidden()  # the site shows its own frame, not our page header
    box = frame.locator("#message textarea")
    box.fill("Wann wird meine Rechnung abgebucht?")
    box.press("Enter")
    expect(frame.locator("#chat [data-testid='bot']").last).to_contain_text("SEPA", timeout=30_000)
    # the same rate limit as on /chat/
    box.fill("Welche Zahlungsarten gibt es?")
    box.press("Enter")
    expect(frame.locator("#chat [data-testid='bot']")).to_have_count(2, timeout=30_000)
    box.fill("Und noch eine Frage")
    box.press("Enter")
    expect(frame.locator("#chat")).to_contain_text("Sie senden gerade sehr viele Nachrichten", timeout=30_000)
    launcher.click()  # closes the panel again
    expect(page.locator("#firstline-panel")).to_be_hidden()
    expect(launcher).to_have_attribute("aria-expanded", "false")

    # a site that is not listed gets the button, but the chat refuses to be framed there
    other = context.new_page()
    request.node._pages.append(other)
    other.goto(stranger.origin + "/")
    other.locator("#firstline-launcher").click()
    other.wait_for_timeout(4000)
    framed = [f for f in other.frames if f != other.main_frame]
    assert framed and all("/chat/" not in f.url or f.locator("#message").count() == 0 for f in framed)

    # the staff console, the dashboard and the login page cannot be framed even by a listed site
    shop.html = (
        f'<!doctype html><iframe id="s" src="{server.url}/staff/"></iframe>'
        f'<iframe id="a" src="{server.url}/admin/"></iframe><iframe id="l" src="{server.url}/login"></iframe>'
    )
    spy = context.new_page()
    request.node._pages.append(spy)
    spy.goto(shop.origin + "/")
    spy.wait_for_timeout(4000)
    for f in spy.frames:
        if f != spy.main_frame:
            assert f.locator("#username, #password, #staff-header").count() == 0, f.url
    context.close()
