"""The staff console (/staff, login required): queue, claim, transcript, reply, notes, resolve, reopen,
suggested drafts from the knowledge base, and "save this answer to the knowledge base" with review.

Every handler re-reads the logged-in user from the session cookie on the server (never from browser
state) and refuses anyone without the staff or admin role. Customer text is HTML-escaped before it is
shown, so nothing a customer types can run in a staff member's browser.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from bot import prompts
from bot.errors import BotError
from bot.suggestions import SuggestionStore
from bot.tickets import Ticket
from ui.app import Services
from ui.auth import User
from ui.web.access import STAFF_PATH, mount_protected, require_role

CSS = ".msg{border-left:3px solid #ccc;padding:4px 8px;margin:6px 0}.msg-user{border-color:#f97316}"
QUEUE_COLUMNS = ["ticket", "status", "reason", "waiting", "claimed by", "created (UTC)"]
PanelOutputs = tuple[Any, ...]


def queue_frame(services: Services, view: str, user: User) -> pd.DataFrame:
    """The queue, oldest first: open, claimed by me, or all."""
    if view == "mine":
        tickets = services.tickets.list(status="claimed", claimed_by=user.name)
    elif view == "open":
        tickets = services.tickets.list(status="open")
    else:
        tickets = services.tickets.list()
    rows = [[t.id, t.status, t.reason, _age(t.created_at), t.claimed_by or "", t.created_at[:19]] for t in tickets]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def counts_markdown(services: Services, user: User) -> str:
    c = services.tickets.counts()
    mine = len(services.tickets.list(status="claimed", claimed_by=user.name))
    return (
        f"**Open:** {c['open']} · **Claimed:** {c['claimed']} (by me: {mine}) · **Resolved:** {c['resolved']}"
        f" — signed in as **{html.escape(user.name)}** ({user.role}) · [Log out](/logout)"
    )


def transcript_html(services: Services, ticket: Ticket) -> str:
    """The full conversation (escaped), including what happened after the hand-over."""
    parts = []
    for row in services.store.message_rows(ticket.conversation_id):
        who = {"user": "Customer", "assistant": "Bot", "staff": "Staff", "system": "Notice"}.get(row["role"], "?")
        parts.append(
            f'<div class="msg msg-{html.escape(row["role"])}"><b>{who}</b> '
            f"<small>{html.escape(row['created_at'][:19])}</small><br>{_text(row['content'])}</div>"
        )
    return '<div id="transcript">' + "".join(parts) + "</div>"


def sources_html(ticket: Ticket) -> str:
    if not ticket.sources:
        return "<i>The bot found no knowledge-base sources.</i>"
    items = "".join(
        f"<li>{html.escape(str(s.get('title', '')))} <code>{html.escape(str(s.get('path', '')))}</code> "
        f"(score {float(s.get('score', 0)):.2f})</li>"
        for s in ticket.sources
    )
    return f"<ul>{items}</ul>"


def events_html(services: Services, ticket: Ticket) -> str:
    items = "".join(
        f"<li><small>{html.escape(e['created_at'][:19])}</small> <b>{html.escape(e['kind'])}</b> "
        f"by {html.escape(e['actor'])}{': ' + _text(e['body']) if e['body'] else ''}</li>"
        for e in services.tickets.events(ticket.id)
    )
    return f'<ul id="events">{items}</ul>'


def draft_reply(services: Services, ticket: Ticket) -> str:
    """A suggested answer from the knowledge base for the customer's latest question (editable)."""
    question = _last_customer_text(services, ticket)
    lang = ticket.lang if ticket.lang in ("en", "de") else "en"
    faq = services.knowledge.faq_match(question, lang)  # type: ignore[arg-type]
    if faq is not None and faq.score >= 0.5:
        return faq.answer
    hits = services.knowledge.search(question, lang, top=1)  # type: ignore[arg-type]
    if not hits:
        return ""
    intro = {"en": "From our help article", "de": "Aus unserem Hilfe-Artikel"}[lang]
    return f'{intro} "{hits[0].title}": {hits[0].snippet[:600]}'


def build_staff_app(services: Services) -> gr.Blocks:
    """The staff console as a Gradio Blocks app."""
    suggestions = SuggestionStore(services.bot_settings.database_path, services.knowledge)
    with gr.Blocks(title="firstline staff console", analytics_enabled=False) as app:
        header = gr.Markdown("", elem_id="staff-header")
        with gr.Tab("Queue"):
            with gr.Row():
                view = gr.Radio(["open", "mine", "all"], value="open", label="Show", elem_id="queue-view")
                refresh = gr.Button("Refresh", size="sm")
            queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="queue", wrap=True)
            with gr.Row():
                ticket_id = gr.Dropdown([], label="Ticket", allow_custom_value=True, elem_id="ticket-id", scale=3)
                open_btn = gr.Button("Open", elem_id="open-ticket", scale=1)
            status = gr.Markdown("", elem_id="status")
            summary = gr.HTML("", elem_id="summary")
            with gr.Row():
                claim_btn = gr.Button("Claim", elem_id="claim")
                resolve_btn = gr.Button("Resolve", elem_id="resolve")
                reopen_btn = gr.Button("Reopen", elem_id="reopen")
            transcript = gr.HTML("", elem_id="transcript-box")
            with gr.Accordion("Bot's sources and ticket history", open=False):
                sources = gr.HTML("")
                events = gr.HTML("")
            reply_box = gr.Textbox(label="Reply to the customer (or internal note)", lines=4, elem_id="reply")
            with gr.Row():
                draft_btn = gr.Button("Suggest draft from knowledge base", elem_id="draft")
                reply_btn = gr.Button("Send reply", variant="primary", elem_id="send-reply")
                note_btn = gr.Button("Add internal note", elem_id="add-note")
            with gr.Accordion("Save this answer to the knowledge base", open=False):
                kb_question = gr.Textbox(label="Customer question", elem_id="kb-question")
                kb_answer = gr.Textbox(label="Answer", lines=3, elem_id="kb-answer")
                kb_lang = gr.Radio(["en", "de"], value="en", label="Language")
                propose_btn = gr.Button("Propose as FAQ entry (reviewed before it goes live)", elem_id="propose")
        with gr.Tab("FAQ suggestions to review"):
            pending = gr.Dataframe(headers=["id", "question", "answer", "lang", "by"], interactive=False)
            with gr.Row():
                suggestion_id = gr.Number(label="Suggestion id", precision=0)
                approve_btn = gr.Button("Approve → knowledge base", elem_id="approve")
                reject_btn = gr.Button("Reject", elem_id="reject")
            review_status = gr.Markdown("")

        panel = [status, summary, transcript, sources, events, kb_question, kb_answer, kb_lang]

        def load_panel(tid: str | None, message: str = "") -> PanelOutputs:
            if not tid:
                return (message, "", "", "", "", gr.skip(), gr.skip(), gr.skip())
            try:
                t = services.tickets.get(tid)
            except BotError as exc:
                return (f"⚠️ {exc}", "", "", "", "", gr.skip(), gr.skip(), gr.skip())
            head = (
                f"**{t.id}** · {t.status}"
                + (f" · claimed by {html.escape(t.claimed_by)}" if t.claimed_by else "")
                + (f" · customer e-mail: {html.escape(t.email)}" if t.email else "")
            )
            return (
                message or head,
                _text(t.summary),
                transcript_html(services, t),
                sources_html(t),
                events_html(services, t),
                _last_customer_text(services, t),
                _last_staff_text(services, t),
                t.lang if t.lang in ("en", "de") else "en",
            )

        def refresh_queue(v: str, request: gr.Request) -> tuple[Any, Any, Any]:
            user = require_role(services, request, "staff")
            frame = queue_frame(services, v, user)
            return counts_markdown(services, user), frame, gr.update(choices=list(frame["ticket"]))

        def open_ticket(tid: str | None, request: gr.Request) -> PanelOutputs:
            require_role(services, request, "staff")
            return load_panel(tid)

        def act(action: str) -> Any:
            def handler(tid: str | None, text: str, request: gr.Request) -> tuple[Any, ...]:
                user = require_role(services, request, "staff")
                if not tid:
                    return (*load_panel(None, "Choose a ticket first."), gr.skip())
                clear: Any = gr.skip()
                try:
                    if action == "claim":
                        services.tickets.claim(tid, user.name)
                    elif action == "resolve":
                        t = services.tickets.get(tid)
                        lang = t.lang if t.lang in ("en", "de") else "en"
                        services.tickets.resolve(tid, user.name, notice=prompts.RESOLVED[lang].format(ticket=tid))
                    elif action == "reopen":
                        services.tickets.reopen(tid, user.name)
                    elif action == "reply":
                        services.tickets.reply(tid, user.name, text)
                        clear = ""
                    elif action == "note":
                        services.tickets.note(tid, user.name, text)
                        clear = ""
                except BotError as exc:
                    return (*load_panel(tid, f"⚠️ {exc}"), gr.skip())
                return (*load_panel(tid, f"Done: {action}."), clear)

            return handler

        def make_draft(tid: str | None, request: gr.Request) -> str:
            require_role(services, request, "staff")
            if not tid:
                return ""
            return draft_reply(services, services.tickets.get(tid))

        def propose(tid: str | None, q: str, a: str, lang: str, request: gr.Request) -> str:
            user = require_role(services, request, "staff")
            try:
                sid = suggestions.propose(q, a, lang, user.name, ticket_id=tid or None)
            except BotError as exc:
                return f"⚠️ {exc}"
            return f"Suggestion #{sid} saved; it goes live after review (tab 'FAQ suggestions to review')."

        def list_pending(request: gr.Request) -> pd.DataFrame:
            require_role(services, request, "staff")
            rows = [[r["id"], r["question"], r["answer"], r["lang"], r["proposed_by"]] for r in suggestions.pending()]
            return pd.DataFrame(rows, columns=["id", "question", "answer", "lang", "by"])

        def review(approve: bool) -> Any:
            def handler(sid: float | None, request: gr.Request) -> tuple[str, pd.DataFrame]:
                user = require_role(services, request, "staff")
                try:
                    if sid is None:
                        raise BotError("enter a suggestion id")
                    if approve:
                        path = suggestions.approve(int(sid), user.name)
                        msg = f"Approved: now in the knowledge base as `{path}`."
                    else:
                        suggestions.reject(int(sid), user.name)
                        msg = "Rejected."
                except BotError as exc:
                    msg = f"⚠️ {exc}"
                return msg, list_pending(request)

            return handler

        queue_out = [header, queue, ticket_id]
        for trigger in (app.load, refresh.click, view.change):
            trigger(refresh_queue, [view], queue_out, api_visibility="private")

        def live(v: str, tid: str | None, request: gr.Request) -> tuple[Any, ...]:
            # the queue and the open ticket's conversation stay current without a reload
            head, frame, choices = refresh_queue(v, request)
            if not tid:
                return head, frame, choices, gr.skip(), gr.skip()
            try:
                t = services.tickets.get(tid)
            except BotError:
                return head, frame, choices, gr.skip(), gr.skip()
            return head, frame, choices, transcript_html(services, t), events_html(services, t)

        gr.Timer(3.0).tick(
            live,
            [view, ticket_id],
            [*queue_out, transcript, events],
            api_visibility="private",
            show_progress="hidden",
        )
        open_btn.click(open_ticket, [ticket_id], panel, api_visibility="private")
        ticket_id.select(open_ticket, [ticket_id], panel, api_visibility="private")
        for btn, name in ((claim_btn, "claim"), (resolve_btn, "resolve"), (reopen_btn, "reopen"),
                          (reply_btn, "reply"), (note_btn, "note")):  # fmt: skip
            btn.click(act(name), [ticket_id, reply_box], [*panel, reply_box], api_visibility="private").then(
                refresh_queue, [view], queue_out, api_visibility="private"
            )
        draft_btn.click(make_draft, [ticket_id], [reply_box], api_visibility="private")
        propose_btn.click(propose, [ticket_id, kb_question, kb_answer, kb_lang], [status], api_visibility="private")
        app.load(list_pending, None, [pending], api_visibility="private")
        approve_btn.click(review(True), [suggestion_id], [review_status, pending], api_visibility="private")
        reject_btn.click(review(False), [suggestion_id], [review_status, pending], api_visibility="private")
    return app


def mount_staff(app: FastAPI, services: Services) -> None:
    """Mount the staff console at /staff (staff or admin login required on every route)."""
    blocks = build_staff_app(services)
    blocks.queue(default_concurrency_limit=8)
    mount_protected(app, services, blocks, STAFF_PATH, "staff", css=CSS)


def _text(value: str | None) -> str:
    return html.escape(value or "").replace("\n", "<br>")


def _age(created_at: str) -> str:
    from usage.ledger import parse_iso, utcnow

    seconds = int((utcnow() - parse_iso(created_at)).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _last_customer_text(services: Services, ticket: Ticket) -> str:
    rows = services.store.message_rows(ticket.conversation_id)
    return next((r["content"] for r in reversed(rows) if r["role"] == "user"), "")


def _last_staff_text(services: Services, ticket: Ticket) -> str:
    rows = services.store.message_rows(ticket.conversation_id)
    return next((r["content"] for r in reversed(rows) if r["role"] == "staff"), "")
