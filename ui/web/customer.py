"""The customer chat page: streams the bot's answer token by token; staff replies appear live.

The conversation id lives in server-side `gr.State`, created on the first message: the browser never
holds it, so one browser session cannot read or write another's conversation. A timer polls the
conversation every few seconds for staff replies and notices (hand-back, "nobody free yet") and redraws
the chat from the database, the single source of truth.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import gradio as gr

from bot import prompts
from bot.conversation import Bot
from bot.conversation_store import new_conversation_id
from bot.errors import BotError, InputError
from bot.safety import sanitize_answer
from bot.types import Delta, Reply, Source
from ui.web.limits import ChatLimits
from usage.errors import StorageError

log = logging.getLogger(__name__)

ChatHistory = list[dict[str, Any]]
LANG_CHOICES = [("Automatisch / Automatic", "auto"), ("Deutsch", "de"), ("English", "en")]
SORRY = (
    "Entschuldigung, gerade ist ein technisches Problem aufgetreten. Bitte versuchen Sie es erneut. / "
    "Sorry, a technical problem occurred. Please try again."
)
STAFF_LABEL = {"en": "Support team", "de": "Support-Team"}
EMAIL_RX = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[A-Za-z]{2,}$")
POLL_S = 2.0


def sources_markdown(sources: list[dict[str, Any]] | tuple[Source, ...], lang: str) -> str:
    """A 'Sources:' line with a link per source (knowledge-base URLs only, else the document path)."""
    items = []
    for s in sources:
        d = s.as_dict() if isinstance(s, Source) else s
        title = str(d.get("title") or d.get("path") or "").replace("[", "(").replace("]", ")")
        url = str(d.get("url") or "")
        items.append(f"[{title}]({url})" if url.startswith(("https://", "http://")) else f"{title} (`{d.get('path')}`)")
    if not items:
        return ""
    label = prompts.SOURCES_LABEL.get(lang, "Sources")
    return f"\n\n**{label}:** " + " · ".join(dict.fromkeys(items))


def as_text(text: str) -> str:
    """What a person typed, shown as typed: no HTML, and no Markdown image the browser would fetch."""
    return html.escape(text, quote=False).replace("![", "!\\[")


def render(bot: Bot, conversation_id: str | None) -> tuple[ChatHistory, int]:
    """The conversation as chat bubbles, from the database; returns (history, last message id)."""
    if not conversation_id:
        return [], 0
    history: ChatHistory = []
    last = 0
    for row in bot.store.message_rows(conversation_id):
        last = max(last, int(row["id"]))
        lang = row.get("lang") or "en"
        if row["role"] == "user":
            history.append({"role": "user", "content": as_text(row["content"])})
        elif row["role"] == "staff":
            history.append(
                {"role": "assistant", "content": f"**{STAFF_LABEL.get(lang, 'Support')}:** {as_text(row['content'])}"}
            )
        elif row["role"] == "system":
            history.append({"role": "assistant", "content": f"*{row['content']}*"})
        else:
            sources = json.loads(row["sources"]) if row.get("sources") else []
            history.append({"role": "assistant", "content": row["content"] + sources_markdown(sources, lang)})
    return history, last


def respond(
    bot: Bot,
    message: str,
    history: ChatHistory | None,
    conversation_id: str | None,
    lang_choice: str = "auto",
) -> Iterator[tuple[str, ChatHistory, str, int]]:
    """Gradio handler: add the customer's message, then stream the answer into the last bubble."""
    # lone surrogates cannot be sent back as JSON (the echo would fail); the bot cleans the rest
    message = str(message or "").encode("utf-8", "replace").decode("utf-8")
    conversation_id = conversation_id or new_conversation_id()
    history = list(history or [])
    history.append({"role": "user", "content": as_text(message)})
    history.append({"role": "assistant", "content": ""})
    lang = None if lang_choice in (None, "", "auto") else lang_choice
    raw = ""
    try:
        for event in bot.stream_message(conversation_id, message, lang):  # type: ignore[arg-type]
            if isinstance(event, Delta):
                raw += event.text
                # the partial answer is shown as it grows: no remote image or unknown link may render
                history[-1] = {"role": "assistant", "content": sanitize_answer(raw)}
                yield "", history, conversation_id, 0
            elif isinstance(event, Reply):
                rendered, last = render(bot, conversation_id)
                yield "", rendered, conversation_id, last
    except InputError as exc:
        history = history[:-2] + [{"role": "assistant", "content": str(exc)}]
        yield message if message and message.strip() else "", history, conversation_id, 0
    except BotError as exc:
        log.warning("bot error in conversation %s: %s", conversation_id, exc)
        history[-1] = {"role": "assistant", "content": SORRY}
        yield message, history, conversation_id, 0
    except Exception:
        log.exception("failure in conversation %s", conversation_id)
        history[-1] = {"role": "assistant", "content": SORRY}
        yield message, history, conversation_id, 0


def build_customer_app(
    bot: Bot, *, title: str = "Support", unclaimed_after_s: float | None = None, limits: ChatLimits | None = None
) -> gr.Blocks:
    """The customer chat as a Gradio Blocks app (`limits`: message rate per session and client)."""
    after_s = bot.settings.unclaimed_notice_s if unclaimed_after_s is None else unclaimed_after_s
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\nFragen Sie uns auf Deutsch oder Englisch. · Ask us in German or English.")
        conversation_id = gr.State(None)
        seen = gr.State(0)
        chatbot = gr.Chatbot(
            label="Chat",
            elem_id="chat",
            height=480,
            sanitize_html=True,
            feedback_options=None,
            buttons=["copy"],
        )
        with gr.Row():
            text = gr.Textbox(
                placeholder="Ihre Frage … / Your question …",
                show_label=False,
                scale=8,
                elem_id="message",
                max_lines=6,
            )
            send = gr.Button("Senden / Send", variant="primary", scale=1, elem_id="send")
        with gr.Row():
            human = gr.Button("Mit einem Menschen sprechen / Talk to a person", elem_id="talk-to-person", size="sm")
            lang = gr.Dropdown(LANG_CHOICES, value="auto", label="Sprache / Language", scale=0)
        with gr.Row(visible=False, elem_id="email-row") as email_row:
            email = gr.Textbox(label="E-Mail (optional)", elem_id="email", scale=4)
            email_send = gr.Button("Speichern / Save", scale=1, elem_id="email-save")
        email_note = gr.Markdown("", elem_id="email-note")

        def throttled(request: gr.Request | None) -> str | None:
            if limits is None or request is None:
                return None
            client = getattr(request, "client", None)
            return limits.check(getattr(request, "session_hash", None), getattr(client, "host", None))

        def handler(
            message: str, history: ChatHistory, conv: str | None, lang_choice: str, request: gr.Request
        ) -> Iterator[tuple[Any, ChatHistory, Any, Any]]:
            notice = throttled(request)
            if notice is not None:  # nothing is stored for a refused message
                yield message, [*(history or []), {"role": "assistant", "content": notice}], gr.skip(), gr.skip()
                return
            yield from respond(bot, message, history, conv, lang_choice)

        def ask_for_person(conv: str | None, lang_choice: str, request: gr.Request) -> tuple[Any, Any, Any]:
            notice = throttled(request)
            if notice is not None:
                return [*_safe_render(bot, conv), {"role": "assistant", "content": notice}], gr.skip(), gr.skip()
            conv = conv or new_conversation_id()
            choice = None if lang_choice in (None, "", "auto") else lang_choice
            try:
                bot.request_human(conv, choice)  # type: ignore[arg-type]
                rendered, last = render(bot, conv)
            except Exception:
                log.exception("hand-over failed in conversation %s", conv)
                return [*_safe_render(bot, conv), {"role": "assistant", "content": SORRY}], conv, gr.skip()
            return rendered, conv, last

        def poll(conv: str | None, last_seen: int) -> tuple[Any, Any, Any]:
            try:
                return poll_once(conv, last_seen)
            except StorageError as exc:  # the next tick tries again; no error toast every two seconds
                log.warning("chat refresh failed: %s", exc)
                return gr.skip(), gr.skip(), gr.skip()

        def poll_once(conv: str | None, last_seen: int) -> tuple[Any, Any, Any]:
            if not conv:
                return gr.skip(), gr.skip(), gr.skip()
            ticket = bot.tickets.active_for(conv)
            if ticket is not None and after_s >= 0:
                lang_ = ticket.lang if ticket.lang in ("en", "de") else "en"
                bot.tickets.notify_unclaimed(conv, after_s, prompts.UNCLAIMED[lang_].format(ticket=ticket.id))
            newest = bot.store.newest_message_id(conv, roles=("staff", "system", "assistant"))
            show_email = gr.update(visible=ticket is not None and ticket.status == "open" and _notified(bot, ticket.id))
            if newest <= last_seen:
                return gr.skip(), gr.skip(), show_email
            rendered, last = render(bot, conv)
            return rendered, last, show_email

        def save_email(conv: str | None, address: str, request: gr.Request) -> str:
            notice = throttled(request)
            if notice is not None:
                return notice
            address = (address or "").strip()
            if not conv or not EMAIL_RX.match(address):
                return "Bitte eine gültige E-Mail-Adresse eingeben. / Please enter a valid e-mail address."
            try:
                bot.tickets.set_email(conv, address)
            except BotError as exc:
                return str(exc)
            except Exception:
                log.exception("saving the e-mail address failed in conversation %s", conv)
                return SORRY
            return "Danke, wir antworten per E-Mail. / Thank you, we will reply by e-mail."

        inputs = [text, chatbot, conversation_id, lang]
        outputs = [text, chatbot, conversation_id, seen]
        text.submit(handler, inputs, outputs, api_name="chat")
        send.click(handler, inputs, outputs, api_visibility="private")
        human.click(
            ask_for_person,
            [conversation_id, lang],
            [chatbot, conversation_id, seen],
            api_name="talk_to_person",
        )
        email_send.click(save_email, [conversation_id, email], [email_note], api_name="leave_email")
        chatbot.clear(lambda: (None, 0), None, [conversation_id, seen], api_visibility="private")
        timer = gr.Timer(POLL_S)
        timer.tick(poll, [conversation_id, seen], [chatbot, seen, email_row], api_visibility="private",
                   show_progress="hidden", concurrency_limit=None)  # fmt: skip
    return app


def _safe_render(bot: Bot, conversation_id: str | None) -> ChatHistory:
    """The conversation from the database, or nothing when the database cannot be read."""
    try:
        return render(bot, conversation_id)[0]
    except Exception:
        log.exception("cannot render conversation %s", conversation_id)
        return []


def _notified(bot: Bot, ticket_id: str) -> bool:
    return any(e["kind"] == "customer_notified" for e in bot.tickets.events(ticket_id))
