"""What the staff console shows, as pure functions of the stores' data: tables, HTML fragments, labels.

Everything a customer (or a colleague) wrote is HTML-escaped here, before it reaches the page; tables
are plain-text Dataframes. Nothing in this module reads a database or the request.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from bot.canned import CannedReply
from bot.inbox import InboxRow
from bot.tickets import Ticket, reason_label
from ui.auth import User

QUEUE_COLUMNS = ["ticket", "unread", "waiting", "status", "reason", "claimed by"]
EARLIER_COLUMNS = ["ticket", "opened (UTC)", "status", "reason", "first message"]
CANNED_COLUMNS = ["id", "shortcut", "lang", "text", "changed by"]
ROLE_NAMES = {"user": "Customer", "assistant": "Bot", "staff": "Staff", "system": "Notice"}
LANG_NAMES = {"en": "English", "de": "German"}


def wait_text(seconds: float | None) -> str:
    """How long someone has waited, for a table cell ("—" when nobody waits)."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return "<1 min"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def queue_frame(rows: Sequence[InboxRow], now: datetime) -> pd.DataFrame:
    """The queue table: one row per ticket; a click on any cell opens the ticket."""
    data = [
        [
            r.ticket.id,
            r.unread or "",
            wait_text(r.waiting_s(now)),
            r.ticket.status,
            reason_label(r.ticket.reason),
            r.ticket.claimed_by or "",
        ]
        for r in rows
    ]
    return pd.DataFrame(data, columns=QUEUE_COLUMNS)


def earlier_frame(rows: Sequence[InboxRow]) -> pd.DataFrame:
    """The customer's other tickets (a click opens one)."""
    data = [
        [
            r.ticket.id,
            r.ticket.created_at[:16].replace("T", " "),
            r.ticket.status,
            reason_label(r.ticket.reason),
            _clip(r.first_message, 120),
        ]
        for r in rows
    ]
    return pd.DataFrame(data, columns=EARLIER_COLUMNS)


def canned_frame(replies: Iterable[CannedReply]) -> pd.DataFrame:
    data = [[r.id, "/" + r.shortcut, r.lang, _clip(r.text, 160), r.updated_by] for r in replies]
    return pd.DataFrame(data, columns=CANNED_COLUMNS)


def header_markdown(counts: dict[str, int], mine: int, unread: int, user: User) -> str:
    unread_text = f"**{unread} unread**" if unread else "no unread messages"
    return (
        f"**Open:** {counts['open']} · **Claimed:** {counts['claimed']} (by me: {mine}) · "
        f"**Resolved:** {counts['resolved']} · {unread_text}"
        f" — signed in as **{html.escape(user.name)}** ({user.role}) · [Log out](/logout)"
    )


def ticket_head(ticket: Ticket, waiting_s: float | None) -> str:
    """One line: id, state, reason, how long the customer has waited, who has it."""
    parts = [f"**{ticket.id}**", ticket.status, html.escape(reason_label(ticket.reason))]
    if waiting_s is not None:
        parts.append(f"customer waiting for a reply: {wait_text(waiting_s)}")
    elif ticket.status != "resolved":
        parts.append("answered, the customer has not written since")
    if ticket.claimed_by:
        parts.append(f"claimed by {html.escape(ticket.claimed_by)}")
    return " · ".join(parts)


def summary_html(ticket: Ticket) -> str:
    return f'<div id="summary-text">{text_html(ticket.summary)}</div>'


def transcript_html(rows: Sequence[dict[str, Any]]) -> str:
    """The full conversation (escaped), including what happened after the hand-over."""
    parts = []
    for row in rows:
        who = ROLE_NAMES.get(row["role"], "?")
        parts.append(
            f'<div class="msg msg-{html.escape(row["role"])}"><b>{who}</b> '
            f"<small>{html.escape(row['created_at'][:19])}</small><br>{text_html(row['content'])}</div>"
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


def events_html(events: Sequence[dict[str, Any]]) -> str:
    items = []
    for e in events:
        body = reason_label(e["body"]) if e["kind"] == "opened" and e["body"] else e["body"]
        items.append(
            f"<li><small>{html.escape(e['created_at'][:19])}</small> <b>{html.escape(e['kind'])}</b> "
            f"by {html.escape(e['actor'])}{': ' + text_html(body) if body else ''}</li>"
        )
    return '<ul id="events">' + "".join(items) + "</ul>"


def customer_html(ticket: Ticket, first_seen: str | None) -> str:
    """What is known about the customer: language, e-mail, since when the conversation runs."""
    rows = [("Language", LANG_NAMES.get(ticket.lang, ticket.lang))]
    rows.append(("E-mail", ticket.email or "not given"))
    if first_seen:
        rows.append(("Conversation started", first_seen[:16].replace("T", " ") + " UTC"))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="customer-facts">{cells}</table>'


def canned_data_html(replies: Iterable[CannedReply]) -> str:
    """The open ticket's canned replies for the page's /shortcut + Tab expansion (an escaped attribute)."""
    data = {r.shortcut: r.text for r in replies}
    return f'<div id="canned-data" hidden data-canned="{html.escape(json.dumps(data), quote=True)}"></div>'


def canned_choices(replies: Iterable[CannedReply]) -> list[tuple[str, str]]:
    """The picker's choices: the value is the shortcut, which the page looks up in `#canned-data`."""
    return [(f"/{r.shortcut} — {_clip(r.text, 60)}", r.shortcut) for r in replies]


def suggestion_html(row: dict[str, Any]) -> str:
    """One FAQ suggestion waiting for review."""
    ticket = f" from ticket {html.escape(row['ticket_id'])}" if row.get("ticket_id") else ""
    return (
        f'<div class="suggestion" data-id="{int(row["id"])}"><div><b>Question</b> '
        f"({html.escape(LANG_NAMES.get(row['lang'], row['lang']))}): {text_html(row['question'])}</div>"
        f"<div><b>Answer:</b> {text_html(row['answer'])}</div>"
        f"<small>#{int(row['id'])} proposed by {html.escape(row['proposed_by'])}{ticket}, "
        f"{html.escape(row['created_at'][:16].replace('T', ' '))} UTC</small></div>"
    )


def text_html(value: str | None) -> str:
    return html.escape(value or "").replace("\n", "<br>")


def _clip(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
