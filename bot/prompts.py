"""Prompt templates (pure: no I/O), built with langchain-core."""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from bot.types import Lang

SYSTEM_EN = (
    "You are the first-level customer support assistant of {company}. Answer the customer's question "
    "briefly and politely in English, in at most five sentences. Use only the facts in the knowledge "
    "base excerpts that come with the customer's messages; if they do not contain the answer, say "
    "that you do not know and offer to "
    "hand the conversation to a human colleague. Never invent prices, dates or account details. You "
    "cannot see customer accounts, bills or payments."
)
SYSTEM_DE = (
    "Du bist der Kundenservice-Assistent von {company} im First-Level-Support. Antworte kurz und "
    "höflich auf Deutsch (Sie-Form), in höchstens fünf Sätzen. Nutze nur die Fakten aus den "
    "Wissensdatenbank-Auszügen, die mit den Nachrichten des Kunden kommen; wenn sie die Antwort "
    "nicht enthalten, sage, dass du es nicht "
    "weißt, und biete an, das Gespräch an einen Mitarbeiter zu übergeben. Erfinde niemals Preise, "
    "Termine oder Kontodaten. Du kannst keine Kundenkonten, Rechnungen oder Zahlungen einsehen."
)
CONTEXT_HEADER = {"en": "Knowledge base excerpts:", "de": "Auszüge aus der Wissensdatenbank:"}
NO_CONTEXT = {
    "en": "(No knowledge base excerpts are available for this question.)",
    "de": "(Zu dieser Frage liegen keine Auszüge aus der Wissensdatenbank vor.)",
}

CHAT_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "{system}"),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ]
)


QUESTION_HEADER = {"en": "Customer question:", "de": "Frage des Kunden:"}
SEEN_ABOVE = {"en": "(the same excerpt as above)", "de": "(derselbe Auszug wie oben)"}


def system_prompt(lang: Lang, company: str) -> str:
    """The system message: role, language and grounding rules. It is the same for every turn and every
    conversation in a language, so its KV cache is reused; the retrieved passages go with each question."""
    return (SYSTEM_DE if lang == "de" else SYSTEM_EN).format(company=company)


def user_turn(lang: Lang, question: str, context: list[str] | None) -> str:
    """A customer message as the model sees it: the passages retrieved for it, then the question itself.

    `context` None means the bot has no knowledge base (the question goes alone); an empty list says so."""
    if context is None:
        return question
    body = "\n\n".join(context) if context else NO_CONTEXT[lang]
    return f"{CONTEXT_HEADER[lang]}\n{body}\n\n{QUESTION_HEADER[lang]} {question}"


EMPTY_INPUT = {
    "en": "Please type a question.",
    "de": "Bitte geben Sie eine Frage ein.",
}
TOO_LONG = {
    "en": "Your message is too long ({n} characters). Please keep it under {limit} characters.",
    "de": "Ihre Nachricht ist zu lang ({n} Zeichen). Bitte bleiben Sie unter {limit} Zeichen.",
}

CLARIFY = {
    "en": (
        "I could not find anything about this in our help centre. Could you describe your question in a "
        "little more detail? If I still cannot help, I will pass you on to a colleague."
    ),
    "de": (
        "Dazu habe ich in unserem Hilfe-Center nichts gefunden. Können Sie Ihre Frage etwas genauer "
        "beschreiben? Wenn ich dann immer noch nicht helfen kann, gebe ich Sie an einen Kollegen weiter."
    ),
}
HANDOVER = {
    "en": (
        "I am passing you on to a colleague from our support team, who will reply here. Your ticket number is {ticket}."
    ),
    "de": (
        "Ich gebe Sie an einen Kollegen aus unserem Support-Team weiter, der Ihnen hier antwortet. "
        "Ihre Ticketnummer ist {ticket}."
    ),
}
# a model failure (an error, a timeout, a crashed model worker): the customer learns why, and that a person takes over
MODEL_FAILURE_HANDOVER = {
    "en": (
        "Sorry, I cannot answer this right now because of a technical problem. I am passing you on to a colleague "
        "from our support team, who will reply here. Your ticket number is {ticket}."
    ),
    "de": (
        "Entschuldigung, wegen eines technischen Problems kann ich das gerade nicht beantworten. Ich gebe Sie an "
        "einen Kollegen aus unserem Support-Team weiter, der Ihnen hier antwortet. Ihre Ticketnummer ist {ticket}."
    ),
}
WITH_STAFF = {
    "en": "Your message was added to ticket {ticket}; a colleague will reply here.",
    "de": "Ihre Nachricht wurde zu Ticket {ticket} hinzugefügt; ein Kollege antwortet Ihnen hier.",
}
RESOLVED = {
    "en": "Our colleague has closed ticket {ticket}. I am the support assistant again — ask me anything.",
    "de": "Unser Kollege hat Ticket {ticket} abgeschlossen. Ich bin wieder Ihr Support-Assistent — fragen Sie gern.",
}
UNCLAIMED = {
    "en": (
        "All colleagues are busy right now. We will answer ticket {ticket} as soon as possible — if you "
        "leave your e-mail address below, we will reply by e-mail."
    ),
    "de": (
        "Gerade sind alle Kollegen beschäftigt. Wir beantworten Ticket {ticket} so bald wie möglich — wenn Sie "
        "unten Ihre E-Mail-Adresse hinterlassen, antworten wir per E-Mail."
    ),
}
SOURCES_LABEL = {"en": "Sources", "de": "Quellen"}

EXTRACTIVE_LEAD = {
    "en": 'From our help centre article "{title}":',
    "de": "Aus unserem Hilfe-Center-Artikel „{title}“:",
}
EXTRACTIVE_LEAD_FAQ = {
    "en": 'From our FAQ "{title}":',
    "de": "Aus unseren häufigen Fragen „{title}“:",
}


def extractive_lead(lang: Lang, title: str, *, is_faq: bool = False) -> str:
    """The first line of an extractive answer: which article (or FAQ entry) the quoted text comes from."""
    return (EXTRACTIVE_LEAD_FAQ if is_faq else EXTRACTIVE_LEAD)[lang].format(title=title.strip())


ALREADY_WITH_STAFF = {
    "en": "You are already connected with our support team (ticket {ticket}); a colleague will reply here.",
    "de": "Sie sind bereits mit unserem Support-Team verbunden (Ticket {ticket}); ein Kollege antwortet Ihnen hier.",
}
JOINED = {
    "en": "{name} from our support team has joined the conversation.",
    "de": "{name} aus unserem Support-Team ist dem Gespräch beigetreten.",
}
TOO_LONG_FOR_MODEL = {
    "en": "Your message is too long for me to read in one go. Please shorten it a little.",
    "de": "Ihre Nachricht ist zu lang, um sie auf einmal zu lesen. Bitte kürzen Sie sie etwas.",
}
# a staff reply sent to the address a customer left (subject, then the body; {link} may be empty)
REPLY_MAIL_SUBJECT = {
    "en": "{company} support: a reply to your ticket {ticket}",
    "de": "{company} Support: Antwort auf Ihr Ticket {ticket}",
}
REPLY_MAIL_BODY = {
    "en": "Hello,\n\n{name} from the {company} support team replied to your ticket {ticket}:\n\n{reply}\n\n{link}"
    "Please do not reply to this e-mail.\n",
    "de": "Guten Tag,\n\n{name} vom {company}-Support hat auf Ihr Ticket {ticket} geantwortet:\n\n{reply}\n\n{link}"
    "Bitte antworten Sie nicht auf diese E-Mail.\n",
}
REPLY_MAIL_LINK = {
    "en": "Continue the conversation in the chat: {url}\n\n",
    "de": "Setzen Sie das Gespräch im Chat fort: {url}\n\n",
}


# What the model says when the passages it was given do not hold the answer (the fine-tune's target for
# such examples; bot.evaluation counts it as "don't know", not as an answer).
ABSTAIN = {
    "en": (
        "I'm sorry, I don't know: our help pages have no information about this. "
        "A colleague from our support team will be glad to help you."
    ),
    "de": (
        "Dazu finde ich in unseren Hilfeseiten leider keine Informationen. "
        "Ein Kollege aus unserem Support-Team hilft Ihnen gern weiter."
    ),
}
