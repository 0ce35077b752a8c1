"""The staff console (/staff, login required): an inbox in the manner of Chatwoot's.

A queue (open / mine / all, searchable, with unread counts and how long each customer has waited for a
reply) where a click opens a ticket; the open ticket's summary, conversation and history stay current
while the customer writes on; only the actions the ticket's state allows are enabled, and "Resolve" asks
first; replies can start from a knowledge-base draft or a canned reply (`/shortcut` + Tab, or the picker)
and go out with Ctrl+Enter; beside the ticket, what is known about the customer and their earlier
tickets. FAQ suggestions wait in a review list with approve / reject buttons that updates by itself; a
third tab keeps the canned replies. A 3-second timer keeps everything current and plays a tone (and a
desktop notification, once allowed) for every new ticket.

Every handler re-reads the logged-in user from the session cookie on the server (never from browser
state) and refuses anyone without the staff or admin role. Customer text is HTML-escaped before it is
shown (see views.py), so nothing a customer types can run in a staff member's browser.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from bot import prompts
from bot.canned import LANGS, CannedReplyStore
from bot.errors import BotError
from bot.inbox import VIEWS, InboxStore
from bot.suggestions import SuggestionStore
from bot.tickets import ACTIONS, Ticket, reason_label
from ui.app import Services
from ui.auth import User
from ui.web.access import STAFF_PATH, mount_protected, require_role
from ui.web.staff import views
from ui.web.staff.assets import CSS, HEAD
from usage.ledger import utcnow

REVIEW_TAB = "FAQ suggestions to review"
FULL_REFRESH_TICKS = 10  # the timer resends everything this often, whatever it believes the page shows
Out = dict[Any, Any]


def build_staff_app(services: Services) -> gr.Blocks:
    """The staff console as a Gradio Blocks app."""
    db_path = services.bot_settings.database
    suggestions = SuggestionStore(db_path, services.knowledge)
    inbox = InboxStore(db_path)
    canned = CannedReplyStore(db_path)
    with gr.Blocks(title="Staff inbox · firstline", analytics_enabled=False) as app:
        with gr.Row():
            header = gr.Markdown("", elem_id="staff-header")
            notify_btn = gr.Button("Turn on notifications", size="sm", elem_id="notify", scale=0)
        notify_state = gr.Markdown("", elem_id="notify-state")
        signal = gr.JSON(visible=False)
        current, sent, pending = gr.State(None), gr.State({}), gr.State([])
        with gr.Tab("Inbox", elem_id="inbox-tab"), gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                view = gr.Radio(
                    [("Open", "open"), ("Mine", "mine"), ("All", "all")],
                    value="open",
                    show_label=False,
                    elem_id="queue-view",
                )
                search = gr.Textbox(
                    placeholder="Search tickets: id, words, e-mail … (Enter)",
                    show_label=False,
                    elem_id="search",
                    max_length=200,
                )
                queue = gr.Dataframe(
                    headers=views.QUEUE_COLUMNS,
                    datatype="str",
                    interactive=False,
                    elem_id="queue",
                    wrap=True,
                    max_height=640,
                )
            with gr.Column(scale=5, min_width=420):
                head = gr.Markdown("", elem_id="ticket-head")
                status = gr.Markdown("", elem_id="status")
                summary = gr.HTML("", elem_id="summary")
                with gr.Row():
                    claim_btn = gr.Button("Claim", elem_id="claim", interactive=False)
                    resolve_btn = gr.Button("Resolve", elem_id="resolve", interactive=False)
                    reopen_btn = gr.Button("Reopen", elem_id="reopen", interactive=False)
                with gr.Row(visible=False, elem_id="confirm-resolve-row") as confirm_row:
                    confirm_text = gr.Markdown("")
                    confirm_btn = gr.Button("Yes, resolve", variant="stop", elem_id="confirm-resolve")
                    cancel_btn = gr.Button("Cancel", elem_id="cancel-resolve")
                transcript = gr.HTML("", elem_id="transcript-box")
                reply_box = gr.Textbox(
                    label="Reply to the customer or internal note (Ctrl+Enter sends the reply; "
                    "/shortcut then Tab inserts a canned reply)",
                    lines=4,
                    elem_id="reply",
                )
                canned_pick = gr.Dropdown([], value=None, label="Insert a canned reply", elem_id="canned-pick")
                with gr.Row():
                    draft_btn = gr.Button("Suggest draft from knowledge base", elem_id="draft", interactive=False)
                    reply_btn = gr.Button("Send reply", variant="primary", elem_id="send-reply", interactive=False)
                    note_btn = gr.Button("Add internal note", elem_id="add-note", interactive=False)
                with gr.Accordion("Save this answer to the knowledge base", open=False):
                    kb_question = gr.Textbox(label="Customer question", elem_id="kb-question")
                    kb_answer = gr.Textbox(label="Answer", lines=3, elem_id="kb-answer")
                    kb_lang = gr.Radio(["en", "de"], value="en", label="Language")
                    propose_btn = gr.Button("Propose as FAQ entry (reviewed before it goes live)", elem_id="propose")
            with gr.Column(scale=2, min_width=260):
                gr.Markdown("**Customer**")
                customer = gr.HTML("", elem_id="customer")
                gr.Markdown("**Earlier tickets** (same chat or e-mail; click to open)")
                earlier = gr.Dataframe(
                    headers=views.EARLIER_COLUMNS, datatype="str", interactive=False, elem_id="earlier", wrap=True
                )
                with gr.Accordion("Bot's sources and ticket history", open=False):
                    sources = gr.HTML("")
                    events = gr.HTML("")
                canned_data = gr.HTML(views.canned_data_html([]), elem_id="canned-data-box")
        with gr.Tab(REVIEW_TAB, elem_id="review-tab") as review_tab:
            review_status = gr.Markdown("", elem_id="review-status")

            @gr.render(inputs=[pending])
            def show_pending(rows: list[dict[str, Any]]) -> None:
                if not rows:
                    gr.Markdown("No FAQ suggestions are waiting for review.", elem_id="no-suggestions")
                for row in rows:
                    with gr.Group():
                        gr.HTML(views.suggestion_html(row))
                        with gr.Row():
                            ok = gr.Button(
                                "Approve → knowledge base",
                                variant="primary",
                                size="sm",
                                elem_id=f"approve-{row['id']}",
                                elem_classes=["approve"],
                            )
                            no = gr.Button("Reject", size="sm", elem_id=f"reject-{row['id']}", elem_classes=["reject"])
                    ok.click(review(True, int(row["id"])), None, review_out, api_visibility="private")
                    no.click(review(False, int(row["id"])), None, review_out, api_visibility="private")

        with gr.Tab("Canned replies", elem_id="canned-tab"):
            gr.Markdown(
                "Saved replies, per language. In the reply box type `/shortcut` and press Tab, or use "
                "the picker under it; the customer's language decides which text is inserted."
            )
            canned_list = gr.Dataframe(
                headers=views.CANNED_COLUMNS, datatype="str", interactive=False, elem_id="canned-list", wrap=True
            )
            canned_sel = gr.State(None)
            with gr.Row():
                canned_shortcut = gr.Textbox(
                    label="Shortcut", placeholder="refund-delay", elem_id="canned-shortcut", max_length=40, scale=1
                )
                canned_lang = gr.Radio(list(LANGS), value="en", label="Language", elem_id="canned-lang", scale=1)
            canned_text = gr.Textbox(label="Text", lines=4, elem_id="canned-text", max_length=4000)
            with gr.Row():
                canned_save = gr.Button("Save canned reply", variant="primary", elem_id="canned-save")
                canned_delete = gr.Button("Delete selected", elem_id="canned-delete")
            canned_status = gr.Markdown("", elem_id="canned-status")

        buttons = {
            "claim": claim_btn,
            "resolve": resolve_btn,
            "reopen": reopen_btn,
            "reply": reply_btn,
            "note": note_btn,
        }
        assert set(buttons) == set(ACTIONS)
        review_out = [review_status, pending, review_tab]
        page = [
            header,
            queue,
            signal,
            head,
            summary,
            transcript,
            events,
            sources,
            customer,
            earlier,
            canned_pick,
            canned_data,
            draft_btn,
            *buttons.values(),
            pending,
            review_tab,
            sent,
        ]
        panel = [*page, current, status, confirm_row, reply_box, kb_question, kb_answer, kb_lang]

        # -- what the page shows, for one user ----------------------------------------------------------
        def snapshot(user: User, view_name: str, query: str, tid: str | None) -> Out:
            now = utcnow()
            ticket = _find(services, tid)
            out: Out = {}
            allowed: frozenset[str] = frozenset()
            if ticket is None:
                out |= {
                    head: "Click a ticket in the queue to open it.",
                    summary: "",
                    transcript: "",
                    events: "",
                    sources: "",
                    customer: "",
                    earlier: views.earlier_frame([]),
                    canned_pick: gr.update(choices=[], value=None),
                    canned_data: views.canned_data_html([]),
                }
            else:
                rows = services.store.message_rows(ticket.conversation_id)
                if rows:  # what is shown is read
                    inbox.mark_read(ticket.conversation_id, user.name, int(rows[-1]["id"]))
                row = inbox.row(user.name, ticket.id)
                allowed = services.tickets.allowed(ticket.id, user.name)
                replies = canned.list(ticket.lang if ticket.lang in LANGS else "en")
                out |= {
                    head: views.ticket_head(ticket, row.waiting_s(now) if row else None),
                    summary: views.summary_html(ticket),
                    transcript: views.transcript_html(rows),
                    events: views.events_html(services.tickets.events(ticket.id)),
                    sources: views.sources_html(ticket),
                    customer: views.customer_html(ticket, rows[0]["created_at"] if rows else None),
                    earlier: views.earlier_frame(inbox.earlier(ticket)),
                    canned_pick: gr.update(choices=views.canned_choices(replies), value=None),
                    canned_data: views.canned_data_html(replies),
                }
            out |= {btn: gr.update(interactive=action in allowed) for action, btn in buttons.items()}
            out[draft_btn] = gr.update(interactive="reply" in allowed)
            out[queue] = views.queue_frame(inbox.queue(user.name, _view(view_name), query), now)
            unread = inbox.unread_total(user.name)
            mine = len(services.tickets.list(status="claimed", claimed_by=user.name))
            out[header] = views.header_markdown(services.tickets.counts(), mine, unread, user)
            fresh = [{"id": r.ticket.id, "reason": reason_label(r.ticket.reason)} for r in inbox.queue(user.name)]
            out[signal] = {"open": fresh, "unread": unread}
            rows_pending = suggestions.pending()
            out[pending] = rows_pending
            out[review_tab] = gr.update(label=f"{REVIEW_TAB} ({len(rows_pending)})")
            return out

        def render(user: User, view_name: str, query: str, tid: str | None, seen: dict[str, Any]) -> Out:
            """The snapshot, less what the page already shows (the timer's answers stay small)."""
            tick = int(seen.get("tick", 0)) + 1
            out = snapshot(user, view_name, query, tid)
            known = {} if tick % FULL_REFRESH_TICKS == 0 else seen
            changed = {c: v for c, v in out.items() if known.get(str(c._id)) != _digest(v)}
            changed[sent] = {**seen, **{str(c._id): _digest(v) for c, v in out.items()}, "tick": tick}
            return changed

        def live(view_name: str, query: str, tid: str | None, seen: dict[str, Any], request: gr.Request) -> Out:
            return render(require_role(services, request, "staff"), view_name, query, tid, seen)

        def open_ticket(
            view_name: str, query: str, seen: dict[str, Any], evt: gr.SelectData, request: gr.Request
        ) -> Out:
            user = require_role(services, request, "staff")
            tid = str((evt.row_value or [""])[0] or "")[:40]
            ticket = _find(services, tid)
            if ticket is None:
                return {status: f"⚠️ unknown ticket {tid!r}" if tid else ""}
            out = render(user, view_name, query, tid, {})
            last_customer = _last(services, ticket, "user")
            return out | {
                current: tid,
                status: "",
                confirm_row: gr.update(visible=False),
                kb_question: last_customer,
                kb_answer: _last(services, ticket, "staff"),
                kb_lang: ticket.lang if ticket.lang in LANGS else "en",
            }

        def act(action: str) -> Callable[..., Out]:
            def handler(
                view_name: str, query: str, tid: str | None, text: str, seen: dict[str, Any], request: gr.Request
            ) -> Out:
                user = require_role(services, request, "staff")
                ticket = _find(services, tid)
                extra: Out = {confirm_row: gr.update(visible=False)}
                if ticket is None:
                    return extra | {status: "Open a ticket first: click it in the queue."}
                try:
                    if action == "claim":
                        services.tickets.claim(ticket.id, user.name)
                    elif action == "resolve":
                        lang = ticket.lang if ticket.lang in LANGS else "en"
                        notice = prompts.RESOLVED[lang].format(ticket=ticket.id)  # type: ignore[index]
                        services.tickets.resolve(ticket.id, user.name, notice=notice)
                    elif action == "reopen":
                        services.tickets.reopen(ticket.id, user.name)
                    elif action == "reply":
                        services.tickets.reply(ticket.id, user.name, text)
                        extra[reply_box] = ""
                    elif action == "note":
                        services.tickets.note(ticket.id, user.name, text)
                        extra[reply_box] = ""
                    extra[status] = f"Done: {action}."
                except BotError as exc:
                    extra[status] = f"⚠️ {exc}"
                return render(user, view_name, query, ticket.id, seen) | extra

            return handler

        def ask_resolve(tid: str | None, request: gr.Request) -> Out:
            require_role(services, request, "staff")
            if _find(services, tid) is None:
                return {status: "Open a ticket first: click it in the queue."}
            question = f"Resolve **{tid}** and hand the conversation back to the bot? The customer is told."
            return {confirm_row: gr.update(visible=True), confirm_text: question}

        def cancel_resolve(request: gr.Request) -> Out:
            require_role(services, request, "staff")
            return {confirm_row: gr.update(visible=False), status: "Not resolved."}

        def make_draft(tid: str | None, request: gr.Request) -> Out:
            require_role(services, request, "staff")
            ticket = _find(services, tid)
            return {reply_box: draft_reply(services, ticket)} if ticket else {}

        def propose(tid: str | None, q: str, a: str, lang: str, request: gr.Request) -> Out:
            user = require_role(services, request, "staff")
            try:
                sid = suggestions.propose(q, a, lang, user.name, ticket_id=tid or None)
            except BotError as exc:
                return {status: f"⚠️ {exc}"}
            rows = suggestions.pending()
            return {
                status: f"Suggestion #{sid} saved; it goes live after review (tab '{REVIEW_TAB}').",
                pending: rows,
                review_tab: gr.update(label=f"{REVIEW_TAB} ({len(rows)})"),
            }

        def review(approve: bool, sid: int) -> Callable[..., Out]:
            def handler(request: gr.Request) -> Out:
                user = require_role(services, request, "staff")
                try:
                    if approve:
                        path = suggestions.approve(sid, user.name)
                        msg = f"Approved #{sid}: now in the knowledge base as `{path}`."
                    else:
                        suggestions.reject(sid, user.name)
                        msg = f"Rejected #{sid}."
                except BotError as exc:
                    msg = f"⚠️ {exc}"
                rows = suggestions.pending()
                return {review_status: msg, pending: rows, review_tab: gr.update(label=f"{REVIEW_TAB} ({len(rows)})")}

            return handler

        def canned_table(request: gr.Request) -> pd.DataFrame:
            require_role(services, request, "staff")
            return views.canned_frame(canned.list())

        def pick_canned(evt: gr.SelectData, request: gr.Request) -> Out:
            require_role(services, request, "staff")
            try:
                reply = canned.get(int((evt.row_value or [0])[0]))
            except (BotError, TypeError, ValueError):
                return {canned_status: "⚠️ that canned reply no longer exists", canned_sel: None}
            return {
                canned_sel: reply.id,
                canned_shortcut: reply.shortcut,
                canned_lang: reply.lang,
                canned_text: reply.text,
                canned_status: f"Editing /{reply.shortcut} ({reply.lang}).",
            }

        def save_canned(shortcut: str, lang: str, text: str, request: gr.Request) -> Out:
            user = require_role(services, request, "staff")
            try:
                reply = canned.save(shortcut, lang, text, user.name)
            except BotError as exc:
                return {canned_status: f"⚠️ {exc}"}
            return {
                canned_status: f"Saved /{reply.shortcut} ({reply.lang}).",
                canned_sel: reply.id,
                canned_list: views.canned_frame(canned.list()),
            }

        def delete_canned(reply_id: int | None, request: gr.Request) -> Out:
            require_role(services, request, "staff")
            if reply_id is None:
                return {canned_status: "Click a canned reply in the list first."}
            try:
                reply = canned.get(reply_id)
                canned.delete(reply_id)
            except BotError as exc:
                return {canned_status: f"⚠️ {exc}"}
            return {
                canned_status: f"Deleted /{reply.shortcut} ({reply.lang}).",
                canned_sel: None,
                canned_list: views.canned_frame(canned.list()),
                canned_shortcut: "",
                canned_text: "",
            }

        # -- wiring (every event is private: the browser calls it by index, behind the staff login) ------
        private: dict[str, Any] = {"api_visibility": "private"}
        live_in = [view, search, current, sent]
        for trigger in (app.load, view.change, search.submit):
            trigger(live, live_in, page, **private)
        gr.Timer(3.0).tick(live, live_in, page, show_progress="hidden", **private)
        signal.change(None, [signal], None, js="(s) => window.firstlineInbox && window.firstlineInbox(s)")
        notify_btn.click(None, None, [notify_state], js="() => window.firstlineEnableNotifications()")
        for table in (queue, earlier):
            table.select(open_ticket, [view, search, sent], panel, **private)
        act_in = [view, search, current, reply_box, sent]
        for action in ("claim", "reopen", "reply", "note"):
            buttons[action].click(act(action), act_in, panel, **private)
        resolve_btn.click(ask_resolve, [current], [confirm_row, confirm_text, status], **private)
        confirm_btn.click(act("resolve"), act_in, panel, **private)
        cancel_btn.click(cancel_resolve, None, [confirm_row, status], **private)
        draft_btn.click(make_draft, [current], [reply_box], **private)
        # in the page: a server round trip would answer with the reply box as it was when the pick fired
        canned_pick.select(None, [canned_pick], [canned_pick], js="(s) => window.firstlineInsertCanned(s)")
        propose_btn.click(propose, [current, kb_question, kb_answer, kb_lang], [status, pending, review_tab], **private)
        app.load(canned_table, None, [canned_list], **private)
        canned_list.select(
            pick_canned, None, [canned_sel, canned_shortcut, canned_lang, canned_text, canned_status], **private
        )
        canned_save.click(
            save_canned,
            [canned_shortcut, canned_lang, canned_text],
            [canned_status, canned_sel, canned_list],
            **private,
        )
        canned_delete.click(
            delete_canned,
            [canned_sel],
            [canned_status, canned_sel, canned_list, canned_shortcut, canned_text],
            **private,
        )
    return app


def mount_staff(app: FastAPI, services: Services) -> None:
    """Mount the staff console at /staff (staff or admin login required on every route)."""
    blocks = build_staff_app(services)
    blocks.queue(default_concurrency_limit=8)
    mount_protected(app, services, blocks, STAFF_PATH, "staff", css=CSS, head=HEAD)


def draft_reply(services: Services, ticket: Ticket) -> str:
    """A suggested answer from the knowledge base for the customer's latest question (editable)."""
    question = _last(services, ticket, "user")
    lang = ticket.lang if ticket.lang in ("en", "de") else "en"
    faq = services.knowledge.faq_match(question, lang)  # type: ignore[arg-type]
    if faq is not None and faq.score >= 0.5:
        return faq.answer
    hits = services.knowledge.search(question, lang, top=1)  # type: ignore[arg-type]
    if not hits:
        return ""
    intro = {"en": "From our help article", "de": "Aus unserem Hilfe-Artikel"}[lang]
    return f'{intro} "{hits[0].title}": {hits[0].snippet[:600]}'


def _find(services: Services, tid: str | None) -> Ticket | None:
    if not tid or not isinstance(tid, str):
        return None
    try:
        return services.tickets.get(tid)
    except BotError:
        return None


def _view(name: str) -> str:
    return name if name in VIEWS else "open"


def _last(services: Services, ticket: Ticket, role: str) -> str:
    rows = services.store.message_rows(ticket.conversation_id)
    return next((r["content"] for r in reversed(rows) if r["role"] == role), "")


def _digest(value: Any) -> str:
    """A fingerprint of an output value, to tell whether the page already shows it."""
    if isinstance(value, pd.DataFrame):
        text = value.to_json(orient="split")
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
