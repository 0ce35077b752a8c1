"""What a customer sees, in their language: the chat page's texts (German/English) and the conversation
drawn from the database.

The page's language is the customer's: the browser's Accept-Language on a fresh page, then the language of
their conversation (or the one they pick). Every text the page shows comes from `TEXTS`; the bot's own
messages (answers, hand-over notices) are stored in the language they were written in.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from bot import prompts
from bot.conversation import PARTIAL_ROUTE, Bot
from bot.types import Lang, Source

ChatHistory = list[dict[str, Any]]
LANGS: tuple[Lang, ...] = ("en", "de")
RATED_ROUTES = ("faq", "model", "extractive")  # answers a customer can rate (not notices, not clarifying questions)

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "{company} Support",
        "intro": "Ask us anything, in English or German.",
        "placeholder": "Your question …",
        "send": "Send",
        "human": "Talk to a person",
        "lang": "Language",
        "welcome": "**Hello!** I am the {company} support assistant. Ask me a question, or pick a topic.",
        "topic": "Common questions about {topic}: pick one, or type your own.",
        "typing": "The assistant is typing",
        "interrupted": "(this answer was interrupted)",
        "sent": "✓ sent to our team",
        "staff": "Support team",
        "sorry": "Sorry, a technical problem occurred. Please try again.",
        "email_label": "Your e-mail address (optional)",
        "email_save": "Save",
        "email_invalid": "Please enter a valid e-mail address.",
        "email_saved": "Thank you: we will also send our reply to {email}.",
        "email_none": "There is no open ticket to send a reply for.",
        "rate_resolution": "How happy are you with our colleague's help? (1 = not at all, 5 = very)",
        "rated": "Thank you for your feedback!",
        "rate_answer_only": "Only the assistant's answers can be rated.",
    },
    "de": {
        "title": "{company} Kundenservice",
        "intro": "Fragen Sie uns, auf Deutsch oder Englisch.",
        "placeholder": "Ihre Frage …",
        "send": "Senden",
        "human": "Mit einem Menschen sprechen",
        "lang": "Sprache",
        "welcome": "**Guten Tag!** Ich bin der digitale Assistent von {company}. Stellen Sie Ihre Frage oder "
        "wählen Sie ein Thema.",
        "topic": "Häufige Fragen zu {topic}: wählen Sie eine aus oder schreiben Sie Ihre eigene.",
        "typing": "Der Assistent schreibt",
        "interrupted": "(diese Antwort wurde unterbrochen)",
        "sent": "✓ an unser Team übermittelt",
        "staff": "Support-Team",
        "sorry": "Entschuldigung, gerade ist ein technisches Problem aufgetreten. Bitte versuchen Sie es erneut.",
        "email_label": "Ihre E-Mail-Adresse (freiwillig)",
        "email_save": "Speichern",
        "email_invalid": "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "email_saved": "Danke: Wir senden unsere Antwort auch an {email}.",
        "email_none": "Es gibt kein offenes Ticket, für das wir Ihnen antworten könnten.",
        "rate_resolution": "Wie zufrieden sind Sie mit der Hilfe unseres Kollegen? (1 = gar nicht, 5 = sehr)",
        "rated": "Vielen Dank für Ihre Rückmeldung!",
        "rate_answer_only": "Bewerten lassen sich nur die Antworten des Assistenten.",
    },
}
# a typing indicator: three dots that pulse (CSS in customer.py); the label is read out by screen readers
TYPING = '<span class="fl-typing" role="status" aria-label="{label}"><i></i><i></i><i></i></span>'


def lang_of(value: str | None, fallback: Lang = "en") -> Lang:
    """A supported language code, else `fallback`."""
    return value if value in LANGS else fallback  # type: ignore[return-value]


def text(lang: str | None, key: str, **values: Any) -> str:
    """A page text in the customer's language."""
    return TEXTS[lang_of(lang)][key].format(**values)


def preferred_language(accept_language: str | None, fallback: Lang = "en") -> Lang:
    """The first of German/English in an Accept-Language header (by its q-values), else `fallback`."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()[:2]))
    for _, _, code in sorted(ranked):
        if code in LANGS:
            return code  # type: ignore[return-value]
    return fallback


def as_text(value: str) -> str:
    """What a person typed, shown as typed: no HTML, and no Markdown image the browser would fetch."""
    return html.escape(value, quote=False).replace("![", "!\\[")


def sources_markdown(sources: list[dict[str, Any]] | tuple[Source, ...], lang: str) -> str:
    """A 'Sources:' line: each source's title, linked to its help-centre page when it has one. Internal
    paths (files, FAQ line numbers) are never shown to a customer."""
    items = []
    for s in sources:
        d = s.as_dict() if isinstance(s, Source) else s
        title = str(d.get("title") or "").replace("[", "(").replace("]", ")").strip()
        url = str(d.get("url") or "")
        if not title:
            continue
        items.append(f"[{as_text(title)}]({url})" if url.startswith(("https://", "http://")) else as_text(title))
    if not items:
        return ""
    label = prompts.SOURCES_LABEL.get(lang, "Sources")
    return f"\n\n**{label}:** " + " · ".join(dict.fromkeys(items))


def typing_bubble(lang: str) -> dict[str, Any]:
    return {"role": "assistant", "content": TYPING.format(label=text(lang, "typing"))}


@dataclass(frozen=True)
class Rendered:
    """The conversation as chat bubbles, what each bubble rates (a request id, or None), the newest id."""

    history: ChatHistory
    rates: list[str | None]
    last: int


def render(bot: Bot, conversation_id: str | None) -> Rendered:
    """The conversation from the database, each message its own bubble, in the language it was written."""
    if not conversation_id:
        return Rendered([], [], 0)
    history: ChatHistory = []
    rates: list[str | None] = []
    last = 0
    for row in bot.store.message_rows(conversation_id):
        last = max(last, int(row["id"]))
        lang = lang_of(row.get("lang"))
        role, route, content = row["role"], row.get("route"), row["content"]
        rated = None
        if role == "user":
            shown = as_text(content) + (f"\n\n*{text(lang, 'sent')}*" if route == "human" else "")
            history.append({"role": "user", "content": shown})
        elif role == "staff":
            who = as_text(row.get("author") or "")
            label = f"{who} · {text(lang, 'staff')}" if who else text(lang, "staff")
            history.append({"role": "assistant", "content": f"**{label}:** {as_text(content)}"})
        elif role == "system":  # notices: hand-back, "nobody free yet", acknowledgements, who joined
            history.append({"role": "assistant", "content": f"*{content}*"})
        elif route == PARTIAL_ROUTE:
            history.append({"role": "assistant", "content": f"{content} …\n\n*{text(lang, 'interrupted')}*"})
        else:
            sources = json.loads(row["sources"]) if row.get("sources") else []
            history.append({"role": "assistant", "content": content + sources_markdown(sources, lang)})
            rated = row.get("request_id") if route in RATED_ROUTES else None
        rates.append(rated)
    return Rendered(history, rates, last)
