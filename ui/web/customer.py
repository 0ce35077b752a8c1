"""The customer chat page: the question shows at once, then a typing indicator, then the answer streams in;
staff replies and notices appear live; the conversation survives a reload.

The conversation id lives in server-side `gr.State`: no request names it. A reload resumes the conversation
through a bearer token the browser keeps (`gr.BrowserState`, localStorage of this origin): 256 random bits
whose hash alone is stored, unknown to staff, expiring after `FIRSTLINE_CONVERSATION_TOKEN_DAYS` unused
(see ConversationStore.resume). A reply e-mail carries a link with a fresh token (`?c=`), which the page
moves into the browser's storage and removes from the address bar.

A timer polls the conversation every few seconds for staff replies and notices and redraws the chat from
the database, the single source of truth — except while this process streams an answer into it (the
database does not hold the unfinished answer yet). The browser's send is two events: `accept` shows the
question and a typing indicator at once (it never waits for the model), `answer` streams. API clients call
`chat`, one event doing both. Every text follows the customer's language (chat_view.TEXTS).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import gradio as gr

from bot import prompts
from bot.conversation import Bot
from bot.conversation_store import new_conversation_id
from bot.errors import BotError, InputError
from bot.language import detect_language
from bot.safety import sanitize_answer
from bot.tickets import TicketError
from bot.types import Delta, Reply
from ui.web.chat_view import (
    LANGS,
    TEXTS,
    ChatHistory,
    Rendered,
    as_text,
    lang_of,
    preferred_language,
    render,
    text,
    typing_bubble,
)
from ui.web.limits import ChatLimits
from usage.errors import StorageError
from usage.feedback import FeedbackStore

log = logging.getLogger(__name__)

LANG_CHOICES = [("Auto", "auto"), ("Deutsch", "de"), ("English", "en")]  # each language in its own words
SORRY = TEXTS["en"]["sorry"]  # the English text (tests and callers that predate the German one)
EMAIL_RX = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[A-Za-z]{2,}$")
POLL_S = 2.0
# The browser's storage: the encryption BrowserState adds is no protection (the key is in the page's
# config); what protects the token is the browser keeping localStorage to this origin. A fixed key and
# secret keep the token readable after a server restart.
STORAGE_KEY = "firstline-conversation"
STORAGE_SECRET = "firstline-conversation-token"
CSS = """
.fl-typing{display:inline-flex;gap:5px;align-items:center;min-height:1.2em}
.fl-typing i{width:8px;height:8px;border-radius:50%;background:currentColor;opacity:.25;
  animation:fl-blink 1.2s infinite}
.fl-typing i:nth-child(2){animation-delay:.2s}.fl-typing i:nth-child(3){animation-delay:.4s}
@keyframes fl-blink{0%,80%,100%{opacity:.2}40%{opacity:1}}
.progress-text,.meta-text,.meta-text-center,.eta-bar,.progress-level,.timer{display:none!important}
"""  # fmt: skip  (the last rule: Gradio's own "processing | 0.2s" timers never show on a customer page)
STRIP_RESUME_LINK = """() => { const u = new URL(window.location.href);
  if (u.searchParams.has("c")) { u.searchParams.delete("c"); window.history.replaceState(null, "", u.toString()); } }"""


def chosen_lang(choice: str | None) -> str | None:
    """The language picked in the dropdown, or None for automatic."""
    return choice if choice in LANGS else None


def stream_reply(
    bot: Bot, message: str, history: ChatHistory, conversation_id: str, lang: str | None, page_lang: str
) -> Iterator[tuple[ChatHistory, Rendered | None, bool]]:
    """The chat while one message is answered: (history, the final rendering or None, keep the text in the box).

    Shows the question and a typing indicator at once, then the answer as it grows (sanitised like the
    stored one: no remote image or unknown link may render), then the conversation from the database."""
    shown = [*history, {"role": "user", "content": as_text(message)}, typing_bubble(page_lang)]
    yield shown, None, False
    raw = ""
    try:
        for event in bot.stream_message(conversation_id, message, lang):  # type: ignore[arg-type]
            if isinstance(event, Delta):
                raw += event.text
                if raw.strip():
                    shown[-1] = {"role": "assistant", "content": sanitize_answer(raw)}
                    yield shown, None, False
            elif isinstance(event, Reply):
                final = render(bot, conversation_id)
                yield final.history, final, False
    except InputError as exc:
        yield [*history, {"role": "assistant", "content": str(exc)}], None, bool(message.strip())
    except BotError as exc:
        log.warning("bot error in conversation %s: %s", conversation_id, exc)
        yield [*shown[:-1], {"role": "assistant", "content": text(page_lang, "sorry")}], None, True
    except Exception:
        log.exception("failure in conversation %s", conversation_id)
        yield [*shown[:-1], {"role": "assistant", "content": text(page_lang, "sorry")}], None, True


def _session(request: Any) -> str:
    return str(getattr(request, "session_hash", None) or "")


def respond(
    bot: Bot,
    message: str,
    history: ChatHistory | None,
    conversation_id: str | None,
    lang_choice: str = "auto",
    page_lang: str | None = None,
) -> Iterator[tuple[Any, ChatHistory, str, Any]]:
    """One message, answered: yields (text box, chat, conversation id, newest message id) as the answer grows."""
    # lone surrogates cannot be sent back as JSON (the echo would fail); the bot cleans the rest
    message = str(message or "").encode("utf-8", "replace").decode("utf-8")
    conversation_id = conversation_id or new_conversation_id()
    lang = chosen_lang(lang_choice)
    page = lang or page_lang or bot.settings.default_language
    if message.strip() and lang is None:
        page = detect_language(message, fallback=lang_of(page))
    for shown, final, keep in stream_reply(bot, message, list(history or []), conversation_id, lang, page):
        box = message if keep else ""
        yield box, shown, conversation_id, final.last if final is not None else gr.skip()


def build_customer_app(
    bot: Bot, *, title: str | None = None, unclaimed_after_s: float | None = None, limits: ChatLimits | None = None
) -> gr.Blocks:
    """The customer chat as a Gradio Blocks app (`limits`: message rate per session and client)."""
    after_s = bot.settings.unclaimed_notice_s if unclaimed_after_s is None else unclaimed_after_s
    company = bot.settings.company_name
    default_lang = lang_of(bot.settings.default_language)
    token_life = timedelta(days=bot.settings.conversation_token_days)
    feedback = FeedbackStore(bot.store.path)
    streaming: set[str] = set()  # conversations whose answer this process is streaming (the poll keeps off)
    streaming_lock = threading.Lock()
    # a rate-limit notice given while this browser's previous answer still streams: the stream's next frames
    # would redraw the chat without it, so they carry it along (keyed by Gradio's session)
    late_notices: dict[str, str] = {}
    streaming_sessions: dict[str, int] = {}  # how many answers each session has streaming

    def welcome(lang: str) -> tuple[str, list[dict[str, str]]]:
        """The empty chat: a greeting and one chip per knowledge-base topic."""
        topics = bot.knowledge.topics(lang_of(lang)) if bot.knowledge is not None else []  # type: ignore[arg-type]
        chips = [{"text": c, "display_text": c.replace("_", " ").replace("-", " ").capitalize()} for c, _ in topics]
        return text(lang, "welcome", company=company), chips

    first_welcome, first_chips = welcome(default_lang)
    with gr.Blocks(title=title or text(default_lang, "title", company=company), analytics_enabled=False) as app:
        header = gr.Markdown(
            f"## {text(default_lang, 'title', company=company)}\n{text(default_lang, 'intro')}", elem_id="fl-header"
        )
        conversation_id = gr.State(None)
        seen = gr.State(0)
        page_lang = gr.State(default_lang)
        token = gr.State(None)  # this tab's resume token (plain text lives only here and in the browser)
        pending = gr.State(None)  # a message accepted by `accept`, answered by `answer`
        rates = gr.State([])  # per chat bubble: the request id a thumb rates (or None)
        stored = gr.BrowserState({"token": None}, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
        chatbot = gr.Chatbot(
            label="Chat",
            elem_id="chat",
            height=480,
            sanitize_html=True,
            feedback_options=("Like", "Dislike"),
            buttons=["copy"],
            group_consecutive_messages=False,
            placeholder=first_welcome,
            examples=first_chips or None,  # type: ignore[arg-type]
        )
        suggestions = gr.Dataset(
            components=["textbox"], samples=[], visible=False, elem_id="suggestions", type="values"
        )
        with gr.Row():
            box = gr.Textbox(
                placeholder=text(default_lang, "placeholder"),
                show_label=False,
                scale=8,
                elem_id="message",
                max_lines=6,
            )
            send = gr.Button(text(default_lang, "send"), variant="primary", scale=1, elem_id="send")
        with gr.Row():
            human = gr.Button(text(default_lang, "human"), elem_id="talk-to-person", size="sm")
            lang = gr.Dropdown(LANG_CHOICES, value="auto", label=text(default_lang, "lang"), scale=0, elem_id="lang")
        with gr.Row(visible=False, elem_id="rating-row") as rating_row:
            stars = gr.Radio(["1", "2", "3", "4", "5"], label=text(default_lang, "rate_resolution"), elem_id="stars")
        with gr.Row(visible=False, elem_id="email-row") as email_row:
            email = gr.Textbox(label=text(default_lang, "email_label"), elem_id="email", scale=4)
            email_send = gr.Button(text(default_lang, "email_save"), scale=1, elem_id="email-save")
        note = gr.Markdown("", elem_id="email-note")

        def throttled(request: gr.Request | None, lang_: str) -> str | None:
            if limits is None or request is None:
                return None
            client = getattr(request, "client", None)
            return limits.check(getattr(request, "session_hash", None), getattr(client, "host", None), lang_)

        def message_lang(message: str, lang_choice: str, page: str) -> str:
            chosen = chosen_lang(lang_choice)
            if chosen is not None:
                return chosen
            return detect_language(message, fallback=lang_of(page)) if message.strip() else lang_of(page)

        # -- the page opens: resume the conversation the browser (or a reply e-mail's link) names ----------
        def on_load(saved: Any, request: gr.Request) -> tuple[Any, ...]:
            query = dict(getattr(request, "query_params", {}) or {})
            headers = getattr(request, "headers", {}) or {}
            page = lang_of(query.get("lang")) if query.get("lang") in LANGS else None
            page = page or preferred_language(headers.get("accept-language"), default_lang)
            candidate = query.get("c") or (saved.get("token") if isinstance(saved, dict) else None)
            conv = None
            if token_life.total_seconds() > 0 and candidate:
                try:
                    conv = bot.store.resume(str(candidate), token_life)
                except StorageError as exc:
                    log.warning("cannot resume a conversation: %s", exc)
            header_update = gr.update(visible=query.get("embed") != "1")
            if conv is None:
                return gr.skip(), None, 0, page, None, [], header_update
            page = lang_of((bot.store.get(conv) or {}).get("lang"), lang_of(page))
            shown = render(bot, conv)
            return shown.history, conv, shown.last, page, str(candidate), shown.rates, header_update

        def remember(tok: str | None, saved: Any) -> Any:
            """Keep this tab's token in the browser (written only when it changed)."""
            known = saved.get("token") if isinstance(saved, dict) else None
            return {"token": tok} if tok and tok != known else gr.skip()

        load_outputs = [chatbot, conversation_id, seen, page_lang, token, rates, header]
        app.load(on_load, [stored], load_outputs, api_visibility="private", show_progress="hidden").then(
            remember, [token, stored], [stored], api_visibility="private", show_progress="hidden"
        ).then(None, js=STRIP_RESUME_LINK)

        # -- the page's texts follow the customer's language -----------------------------------------------
        def relabel(lang_: str) -> tuple[Any, ...]:
            greeting, chips = welcome(lang_)
            return (
                gr.update(value=f"## {text(lang_, 'title', company=company)}\n{text(lang_, 'intro')}"),
                gr.update(placeholder=text(lang_, "placeholder")),
                gr.update(value=text(lang_, "send")),
                gr.update(value=text(lang_, "human")),
                gr.update(label=text(lang_, "lang")),
                gr.update(placeholder=greeting, examples=chips or None),
                gr.update(label=text(lang_, "email_label")),
                gr.update(value=text(lang_, "email_save")),
                gr.update(label=text(lang_, "rate_resolution")),
            )

        page_lang.change(relabel, [page_lang], [header, box, send, human, lang, chatbot, email, email_send, stars],
                         api_visibility="private", show_progress="hidden", concurrency_limit=None)  # fmt: skip
        lang.change(lambda c, p: chosen_lang(c) or p, [lang, page_lang], [page_lang], api_visibility="private",
                    show_progress="hidden")  # fmt: skip

        # -- sending: the browser's two steps, and the one-step API ----------------------------------------
        def accept(message: str, history: ChatHistory, lang_choice: str, page: str, request: gr.Request) -> tuple:
            message = str(message or "").encode("utf-8", "replace").decode("utf-8")
            if not message.strip():
                return gr.skip(), gr.skip(), None, gr.skip(), gr.skip()
            lang_ = message_lang(message, lang_choice, page)
            notice = throttled(request, lang_)
            if notice is not None:  # nothing is stored for a refused message; it stays in the box
                with streaming_lock:
                    if streaming_sessions.get(_session(request)):
                        late_notices[_session(request)] = notice
                return message, [*(history or []), {"role": "assistant", "content": notice}], None, lang_, gr.skip()
            shown = [*(history or []), {"role": "user", "content": as_text(message)}, typing_bubble(lang_)]
            return "", shown, message, lang_, gr.update(visible=False)

        def answer(
            message: str | None,
            history: ChatHistory,
            conv: str | None,
            lang_choice: str,
            page: str,
            tok: str | None,
            request: gr.Request,
        ) -> Iterator[tuple[Any, ...]]:
            session = _session(request)

            def with_notice(shown: ChatHistory) -> ChatHistory:
                with streaming_lock:
                    notice = late_notices.get(session)
                return [*shown, {"role": "assistant", "content": notice}] if notice else shown

            if message is None:  # refused or empty
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
                return
            conv = conv or new_conversation_id()
            base = _without_pending(list(history or []), message)
            with streaming_lock:
                streaming.add(conv)
                streaming_sessions[session] = streaming_sessions.get(session, 0) + 1
            try:
                for shown, final, keep in stream_reply(bot, message, base, conv, chosen_lang(lang_choice), page):
                    box_value = message if keep else gr.skip()
                    shown = with_notice(shown)
                    if final is None:
                        yield shown, conv, gr.skip(), gr.skip(), gr.skip(), box_value, gr.skip()
                        continue
                    if tok is None and token_life.total_seconds() > 0:
                        tok = bot.store.issue_token(conv, token_life)
                    # `pending` is left alone: a message sent while this answer streamed is waiting in it
                    yield shown, conv, final.last, tok, final.rates, box_value, gr.skip()
            finally:
                with streaming_lock:
                    streaming.discard(conv)
                    streaming_sessions[session] -= 1
                    if not streaming_sessions[session]:
                        del streaming_sessions[session]
                        late_notices.pop(session, None)  # shown in the last frame; the next answer starts clean

        def answered(accepted: Any) -> None:
            """After `accept`: stream the answer, then keep the token in the browser."""
            # trigger_mode "multiple": a message sent while the previous answer streams is queued behind it
            # (Gradio's default, "once", drops a trigger while the same event is still running)
            accepted.then(
                answer, [pending, chatbot, conversation_id, lang, page_lang, token],
                [chatbot, conversation_id, seen, token, rates, box, pending],
                api_visibility="private", show_progress="hidden", trigger_mode="multiple",
            ).then(remember, [token, stored], [stored], api_visibility="private", show_progress="hidden",
                   trigger_mode="multiple")  # fmt: skip

        accept_args = ([box, chatbot, lang, page_lang], [box, chatbot, pending, page_lang, suggestions])
        # `accept` never waits behind the model: it only shows the question
        answered(gr.on([box.submit, send.click], accept, *accept_args, api_visibility="private",
                       show_progress="hidden", concurrency_limit=None))  # fmt: skip

        def api_chat(
            message: str, history: ChatHistory, conv: str | None, lang_choice: str, page: str, request: gr.Request
        ) -> Iterator[tuple[Any, ...]]:
            lang_ = message_lang(str(message or ""), lang_choice, page)
            notice = throttled(request, lang_)
            if notice is not None:  # nothing is stored for a refused message
                yield message, [*(history or []), {"role": "assistant", "content": notice}], gr.skip(), gr.skip()
                return
            yield from respond(bot, message, history, conv, lang_choice, page)

        gr.on([], api_chat, [box, chatbot, conversation_id, lang, page_lang], [box, chatbot, conversation_id, seen],
              api_name="chat", show_progress="hidden")  # fmt: skip

        # -- "talk to a person" ----------------------------------------------------------------------------
        def ask_for_person(
            conv: str | None, lang_choice: str, page: str, tok: str | None, request: gr.Request
        ) -> tuple[Any, ...]:
            lang_ = chosen_lang(lang_choice) or lang_of(page)
            notice = throttled(request, lang_)
            if notice is not None:
                before = _safe_render(bot, conv).history
                return [*before, {"role": "assistant", "content": notice}], gr.skip(), gr.skip(), gr.skip(), gr.skip()
            conv = conv or new_conversation_id()
            try:
                bot.request_human(conv, lang_)  # type: ignore[arg-type]
                if tok is None and token_life.total_seconds() > 0:
                    tok = bot.store.issue_token(conv, token_life)
                shown = render(bot, conv)
            except Exception:
                log.exception("hand-over failed in conversation %s", conv)
                failed = [*_safe_render(bot, conv).history, {"role": "assistant", "content": text(lang_, "sorry")}]
                return failed, conv, gr.skip(), gr.skip(), gr.skip()
            return shown.history, conv, shown.last, tok, shown.rates

        human.click(
            ask_for_person, [conversation_id, lang, page_lang, token], [chatbot, conversation_id, seen, token, rates],
            api_name="talk_to_person", show_progress="hidden",
        ).then(remember, [token, stored], [stored], api_visibility="private", show_progress="hidden")  # fmt: skip

        # -- topics: a chip opens its common questions; picking one sends it ------------------------------
        def show_topic(page: str, evt: gr.SelectData) -> Any:
            chosen = str((evt.value or {}).get("text") or "") if isinstance(evt.value, dict) else str(evt.value)
            topics = dict(bot.knowledge.topics(lang_of(page))) if bot.knowledge is not None else {}  # type: ignore[arg-type]
            questions = topics.get(chosen, [])
            label = text(page, "topic", topic=chosen.replace("_", " ").replace("-", " ").capitalize())
            return gr.update(samples=[[q] for q in questions], visible=bool(questions), label=label)

        chatbot.example_select(show_topic, [page_lang], [suggestions], api_visibility="private",
                               show_progress="hidden")  # fmt: skip
        picked = suggestions.click(lambda sample: (sample or [""])[0], [suggestions], [box], api_visibility="private",
                                   show_progress="hidden", concurrency_limit=None)  # fmt: skip
        answered(picked.then(accept, *accept_args, api_visibility="private", show_progress="hidden",
                             concurrency_limit=None))  # fmt: skip

        # -- e-mail, ratings -----------------------------------------------------------------------------
        def save_email(conv: str | None, address: str, page: str, request: gr.Request) -> str:
            notice = throttled(request, lang_of(page))
            if notice is not None:
                return notice
            address = (address or "").strip()
            if not EMAIL_RX.match(address):
                return text(page, "email_invalid")
            if not conv:
                return text(page, "email_none")
            try:
                bot.tickets.set_email(conv, address)
            except TicketError:
                return text(page, "email_none")
            except Exception:
                log.exception("saving the e-mail address failed in conversation %s", conv)
                return text(page, "sorry")
            return text(page, "email_saved", email=as_text(address))

        email_send.click(save_email, [conversation_id, email, page_lang], [note], api_name="leave_email",
                         show_progress="hidden")  # fmt: skip

        def rate_answer(conv: str | None, shown_rates: list[str | None], page: str, data: gr.LikeData) -> str:
            index = data.index[0] if isinstance(data.index, list | tuple) else data.index
            # the request ids come from this session's own rendering of its own conversation (server-side state)
            in_range = conv and isinstance(index, int) and 0 <= index < len(shown_rates or [])
            request_id = shown_rates[index] if in_range else None
            if not request_id:
                return text(page, "rate_answer_only")
            try:
                if data.liked is True or data.liked is False:
                    feedback.rate("answer", request_id, 1 if data.liked else 0)
                else:  # the thumb was clicked again: no rating
                    feedback.withdraw("answer", request_id)
            except StorageError as exc:
                log.warning("cannot store a rating: %s", exc)
                return text(page, "sorry")
            return text(page, "rated")

        chatbot.like(rate_answer, [conversation_id, rates, page_lang], [note], api_visibility="private",
                     show_progress="hidden")  # fmt: skip

        def rate_resolution(conv: str | None, value: str | None, page: str) -> tuple[str, Any]:
            ticket = bot.tickets.latest_for(conv) if conv else None
            if ticket is None or ticket.status != "resolved" or value not in ("1", "2", "3", "4", "5"):
                return gr.skip(), gr.skip()
            feedback.rate("resolution", ticket.id, int(value))
            return text(page, "rated"), gr.update(visible=False)

        stars.input(rate_resolution, [conversation_id, stars, page_lang], [note, rating_row], api_visibility="private",
                    show_progress="hidden")  # fmt: skip

        # -- live: staff replies and notices ----------------------------------------------------------------
        def poll(conv: str | None, last_seen: int) -> tuple[Any, ...]:
            try:
                return poll_once(conv, last_seen)
            except StorageError as exc:  # the next tick tries again; no error toast every two seconds
                log.warning("chat refresh failed: %s", exc)
                return (gr.skip(),) * 5

        def poll_once(conv: str | None, last_seen: int) -> tuple[Any, ...]:
            if not conv:
                return (gr.skip(),) * 5
            with streaming_lock:
                if conv in streaming:  # the answer being streamed is not in the database yet: leave it be
                    return (gr.skip(),) * 5
            ticket = bot.tickets.active_for(conv)
            if ticket is not None and after_s >= 0:
                lang_ = lang_of(ticket.lang)
                bot.tickets.notify_unclaimed(conv, after_s, prompts.UNCLAIMED[lang_].format(ticket=ticket.id))
            show_email = gr.update(visible=ticket is not None and ticket.status == "open" and _notified(bot, ticket.id))
            latest = ticket or bot.tickets.latest_for(conv)
            unrated = (
                latest is not None and latest.status == "resolved" and feedback.score("resolution", latest.id) is None
            )
            if bot.store.newest_message_id(conv) <= last_seen:
                return gr.skip(), gr.skip(), gr.skip(), show_email, gr.update(visible=unrated)
            shown = render(bot, conv)
            return shown.history, shown.last, shown.rates, show_email, gr.update(visible=unrated)

        timer = gr.Timer(POLL_S)
        timer.tick(poll, [conversation_id, seen], [chatbot, seen, rates, email_row, rating_row],
                   api_visibility="private", show_progress="hidden", concurrency_limit=None)  # fmt: skip

        # -- a new conversation (the chat's clear button) ---------------------------------------------------
        def start_over(tok: str | None) -> tuple[Any, ...]:
            try:
                bot.store.revoke_token(tok)
            except StorageError as exc:
                log.warning("cannot revoke a conversation token: %s", exc)
            return None, 0, None, [], {"token": None}, gr.update(visible=False), gr.update(visible=False), ""

        chatbot.clear(start_over, [token], [conversation_id, seen, token, rates, stored, rating_row, email_row, note],
                      api_visibility="private", show_progress="hidden")  # fmt: skip
    return app


def _without_pending(history: ChatHistory, message: str) -> ChatHistory:
    """The chat without the question and typing indicator that `accept` added (if they are still shown)."""
    pending = len(history) >= 2 and "fl-typing" in _plain(history[-1])
    if pending and history[-2].get("role") == "user" and _plain(history[-2]) == as_text(message):
        return history[:-2]
    return history


def _plain(message: dict[str, Any]) -> str:
    """A chat message's text (Gradio hands messages back with their content as a list of parts)."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _safe_render(bot: Bot, conversation_id: str | None) -> Rendered:
    """The conversation from the database, or nothing when the database cannot be read."""
    try:
        return render(bot, conversation_id)
    except Exception:
        log.exception("cannot render conversation %s", conversation_id)
        return Rendered([], [], 0)


def _notified(bot: Bot, ticket_id: str) -> bool:
    return any(e["kind"] == "customer_notified" for e in bot.tickets.events(ticket_id))
