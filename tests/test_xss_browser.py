"""Browser tier: customer text cannot run script in the staff console, the admin dashboard or the chat.

More than 30 XSS payloads are sent as customer messages (and ticket summaries, staff notes and replies,
an e-mail address, FAQ suggestions, ledger fields), escalated, and opened in headless Chromium by a
logged-in staff member and an admin; the customer types them into the chat page too. Every page is then
checked: no dialog fired, window.__xss is undefined, no element with the payloads' id exists and no
javascript: link or injected frame is on the page. Requests to any host but the test server are blocked
(and would fail the test: a remote image in the chat would be a tracking pixel).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.canned import CannedReplyStore
from bot.suggestions import SuggestionStore
from models.fake import ScriptedChatModel
from ui.auth import UserStore

pytestmark = [pytest.mark.browser]

XSS_ID = "xss-injected"
PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "<svg onload=window.__xss=1>",
    "<svg><script>window.__xss=1</script></svg>",
    '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    '<iframe src="javascript:parent.__xss=1"></iframe>',
    "<body onload=window.__xss=1>",
    '<details open ontoggle="window.__xss=1">x</details>',
    '<input autofocus onfocus="window.__xss=1">',
    '<video><source onerror="window.__xss=1"></video>',
    "<audio src=x onerror=window.__xss=1>",
    "<marquee onstart=window.__xss=1>m</marquee>",
    f'<a href="javascript:window.__xss=1" id="{XSS_ID}">click</a>',
    f'<div id="{XSS_ID}" style="position:fixed;inset:0">covered</div>',
    '"><script>window.__xss=1</script>',
    "'><img src=x onerror=window.__xss=1>",
    "</textarea><script>window.__xss=1</script>",
    "</div></div></div><img src=x onerror=window.__xss=1>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
    '<noscript><p title="</noscript><img src=x onerror=window.__xss=1>">',
    "[click me](javascript:window.__xss=1)",
    '![x](x" onerror="window.__xss=1)',
    '<a href="jav&#x09;ascript:window.__xss=1">tab</a>',
    '<object data="javascript:window.__xss=1"></object>',
    '<embed src="javascript:window.__xss=1">',
    "<form><button formaction=javascript:window.__xss=1>go</button></form>",
    "<style>@import 'javascript:window.__xss=1';</style>",
    "<img src=x:alert(1) onerror=eval(src)>",
    "<scr<script>ipt>window.__xss=1</scr</script>ipt>",
    "&lt;img src=x onerror=window.__xss=1&gt;",
    "<IMG SRC=x ONERROR=window.__xss=1>",
    '<img src="x\n" onerror="window.__xss=1">',
    "<svg><animate onbegin=window.__xss=1 attributeName=x dur=1s>",
    "{{constructor.constructor('window.__xss=1')()}}",
    "${window.__xss=1} #{window.__xss=1}",
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=1">',
    "<img src=x onerror=alert(document.domain)>",
    "<a href=https://127.0.0.2/tracker>remote link</a> ![pixel](http://127.0.0.2/pixel.png)",
]
EMAIL_PAYLOAD = "<img/src=x/onerror=window.__xss=1>@evil.example"


def test_there_are_enough_payloads() -> None:
    assert len(PAYLOADS) >= 30


class Watch:
    """Dialogs and foreign requests of one browser context."""

    def __init__(self, context: Any, base: str) -> None:
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.base = base

        def route(r: Any) -> None:
            if r.request.url.startswith(base) or r.request.url.startswith(("data:", "blob:", "about:")):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)

    def attach(self, page: Any) -> Any:
        def on_dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        return page


def assert_clean(page: Any, watch: Watch, where: str) -> None:
    """Nothing ran and nothing was injected."""
    page.wait_for_timeout(500)  # give onerror/onload handlers a chance to fire
    assert watch.dialogs == [], (where, watch.dialogs)
    assert page.evaluate("typeof window.__xss") == "undefined", where
    assert page.evaluate("typeof parent.__xss") == "undefined", where
    bad = page.evaluate(
        """() => {
        const out = [];
        for (const el of document.querySelectorAll('*')) {
            for (const a of el.attributes) {
                const v = (a.value || '').replace(/\\s/g, '').toLowerCase();
                if (a.name.startsWith('on') && /__xss|alert|eval/.test(a.value)) out.push(el.tagName + ' ' + a.name);
                if (['href', 'src', 'action', 'formaction', 'data'].includes(a.name) && v.startsWith('javascript:'))
                    out.push(el.tagName + ' ' + a.name + '=' + a.value);
            }
            if (el.tagName === 'IFRAME' && el.getAttribute('srcdoc')) out.push('iframe srcdoc');
            if (el.tagName === 'SCRIPT' && /__xss/.test(el.textContent)) out.push('script');
        }
        return out;
    }"""
    )
    assert bad == [], (where, bad)
    assert page.locator(f"#{XSS_ID}").count() == 0, where
    foreign = [u for u in watch.foreign if "127.0.0.2" in u or "evil" in u]
    assert foreign == [], (where, foreign)


def login(page: Any, base: str, name: str, password: str, target: str) -> None:
    page.goto(base + "/login?next=" + target)
    page.locator("#username").fill(name)
    page.locator("#password").fill(password)
    page.locator("#login").click()


def seed(data_dir: Path) -> dict[str, Any]:
    """Tickets, notes, replies, summaries, an e-mail, FAQ suggestions and ledger rows full of payloads."""
    from ui.app import build_services

    services = build_services(data_dir, model=ScriptedChatModel(), demo_kb=False)
    try:
        bot, tickets = services.bot, services.tickets
        bot.handle_message("xss-all", "I want to talk to a person")
        main = tickets.active_for("xss-all")
        assert main is not None
        for payload in PAYLOADS:
            bot.handle_message("xss-all", payload)  # stored as customer messages of the ticket
        bot.handle_message("xss-all", "XSS-END-OF-PAYLOADS")
        for payload in PAYLOADS[:10]:
            tickets.note(main.id, "sam", payload)
        tickets.reply(main.id, "sam", PAYLOADS[1] + " " + PAYLOADS[12])
        tickets.set_email("xss-all", EMAIL_PAYLOAD)
        summaries = []
        for i, payload in enumerate(PAYLOADS[:8]):  # the payload is the escalating message: in the summary
            reply = bot.handle_message(f"xss-sum-{i}", f"I want to talk to a person {payload}")
            assert reply.ticket_id
            summaries.append(reply.ticket_id)
        # the same customer's earlier ticket (linked by the e-mail) and canned replies carry payloads too
        earlier = bot.handle_message("xss-earlier", "I want to talk to a person " + PAYLOADS[1])
        assert earlier.ticket_id
        tickets.set_email("xss-earlier", EMAIL_PAYLOAD)
        canned = CannedReplyStore(data_dir / "firstline.db")
        for i, payload in enumerate(PAYLOADS[:6]):
            canned.save(f"xss{i}", "en", payload, "sam")
        canned.close()
        suggestions = SuggestionStore(data_dir / "firstline.db", services.knowledge)
        for payload in PAYLOADS[:5]:
            suggestions.propose(f"Question {payload}", f"Answer {payload}", "en", "sam", main.id)
        suggestions.close()
        for payload in PAYLOADS[:3]:
            rid = services.ledger.start(conversation_id="xss-ledger", route="model", model_id=payload[:60])
            services.ledger.finish(rid, status="error", error=payload)
        users = UserStore(data_dir / "firstline.db")
        users.add_user("sam", "staff", "correct horse battery")
        users.add_user("ada", "admin", "correct horse battery")
        users.close()
        return {"main": main.id, "summaries": summaries, "earlier": earlier.ticket_id}
    finally:
        services.close()


def open_ticket(page: Any, ticket: str, expect_text: str) -> None:
    from playwright.sync_api import expect

    page.locator("#queue-view").get_by_text("All").click()
    page.locator("#queue").get_by_text(ticket, exact=True).filter(visible=True).first.click()
    expect(page.locator("#ticket-head")).to_contain_text(ticket, timeout=20_000)
    expect(page.locator("#transcript-box")).to_contain_text(expect_text, timeout=20_000)


def test_payloads_do_not_run_in_staff_console_or_admin_dashboard(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted")
    seeded = seed(data_dir)
    context = browser.new_context()
    watch = Watch(context, server.url)
    page = watch.attach(context.new_page())
    request.node._pages = [page]
    login(page, server.url, "sam", "correct horse battery", "/staff/")
    expect(page.locator("#staff-header")).to_contain_text("signed in as sam", timeout=30_000)
    expect(page.locator("#queue")).to_contain_text(seeded["summaries"][-1], timeout=20_000)
    assert_clean(page, watch, "queue")
    open_ticket(page, seeded["main"], "XSS-END-OF-PAYLOADS")
    expect(page.locator("#customer")).to_contain_text("evil.example", timeout=10_000)  # the e-mail, as text
    page.get_by_text("Bot's sources and ticket history").click()  # the notes live in the events list
    expect(page.locator("#events")).to_contain_text("note", timeout=10_000)
    expect(page.locator("#earlier")).to_contain_text(seeded["earlier"], timeout=10_000)  # the earlier ticket
    expect(page.locator("#earlier")).to_contain_text("onerror")  # its first message, as text
    # the canned replies of the ticket's language, as text
    page.get_by_role("combobox", name="Insert a canned reply").click()
    expect(page.get_by_role("option", name="/xss0")).to_be_visible(timeout=10_000)
    page.keyboard.press("Escape")
    box = page.locator("#reply textarea")
    box.fill("/xss1")
    box.press("Tab")  # the shortcut inserts the payload as text into the reply box
    expect(box).to_have_value(PAYLOADS[1])
    assert_clean(page, watch, "earlier tickets and canned replies")
    transcript = page.locator("#transcript-box").inner_text()
    for payload in (PAYLOADS[0], PAYLOADS[1], PAYLOADS[13]):  # shown as the text the customer typed
        assert payload.split(">")[0] in transcript
    assert_clean(page, watch, "ticket with every payload")
    for ticket in seeded["summaries"]:
        open_ticket(page, ticket, "talk to a person")
        expect(page.locator("#summary")).to_contain_text("Customer's last message", timeout=10_000)
        assert_clean(page, watch, f"summary of {ticket}")
    search = page.locator("#search textarea, #search input").first
    search.fill("<img src=x onerror")
    search.press("Enter")
    expect(page.locator("#queue")).to_contain_text(seeded["main"], timeout=10_000)
    assert_clean(page, watch, "search for a payload")
    page.get_by_role("tab", name="Canned replies").click()
    expect(page.locator("#canned-list")).to_contain_text("/xss5", timeout=10_000)
    assert_clean(page, watch, "canned replies tab")
    page.get_by_role("tab", name="FAQ suggestions to review").click()
    expect(page.get_by_text("Question <script>", exact=False).first).to_be_visible(timeout=20_000)
    assert_clean(page, watch, "FAQ suggestions")
    page.wait_for_timeout(3500)  # one live refresh of the queue and the open ticket
    assert_clean(page, watch, "after a live refresh")

    # the admin dashboard (mounted at /admin by ui.web.admin): ledger fields carry payloads too
    admin_ctx = browser.new_context()
    admin_watch = Watch(admin_ctx, server.url)
    admin = admin_watch.attach(admin_ctx.new_page())
    request.node._pages.append(admin)
    login(admin, server.url, "ada", "correct horse battery", "/admin/")
    # not "networkidle": the dashboard's gr.State keeps Gradio's heartbeat stream open for the whole visit
    admin.wait_for_url("**/admin/**")
    expect(admin.locator("#kpi-requests")).to_be_visible(timeout=60_000)  # the figures are in
    admin.wait_for_timeout(2000)
    assert_clean(admin, admin_watch, "admin dashboard")
    admin_ctx.close()
    context.close()


def test_payloads_do_not_run_in_the_customer_chat(
    browser: Any, live_server_factory: Callable[..., Any], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory("scripted", env={"FIRSTLINE_CHAT_RATE_LIMIT": "0",
                                                  "FIRSTLINE_CHAT_RATE_LIMIT_PER_CLIENT": "0"})  # fmt: skip
    context = browser.new_context()
    watch = Watch(context, server.url)
    page = watch.attach(context.new_page())
    request.node._pages = [page]
    page.goto(server.url + "/chat/")
    box = page.locator("#message textarea")
    expect(box).to_be_visible(timeout=30_000)
    users = page.locator("#chat [data-testid='user']")
    for i, payload in enumerate(PAYLOADS):
        box.fill(payload)
        box.press("Enter")
        expect(users).to_have_count(i + 1, timeout=30_000)
        expect(box).to_have_value("", timeout=30_000)
    assert_clean(page, watch, "customer's own messages")
    shown = page.locator("#chat").inner_text()
    assert "<script>window.__xss=1</script>" in shown  # shown as typed, as text
    # the conversation goes to a person, who answers with payloads: rendered in the customer's chat
    page.locator("#talk-to-person").click()
    expect(page.locator("#chat")).to_contain_text(re.compile(r"T-[A-Z0-9]{6}"), timeout=30_000)
    conn = sqlite3.connect(data_dir / "firstline.db")
    ticket = conn.execute("SELECT id FROM tickets ORDER BY created_at DESC LIMIT 1").fetchone()[0]
    conn.close()
    from bot.tickets import TicketStore

    tickets = TicketStore(data_dir / "firstline.db")
    try:
        for payload in PAYLOADS[:12]:
            tickets.reply(ticket, "sam", payload)
        tickets.reply(ticket, "sam", "STAFF-END")
    finally:
        tickets.close()
        tickets.conversations.close()
    expect(page.locator("#chat")).to_contain_text("STAFF-END", timeout=30_000)  # the timer redraws the chat
    assert_clean(page, watch, "staff replies in the customer's chat")
    context.close()
