"""The customer chat page: streams the bot's answer token by token.

The conversation id lives in server-side `gr.State`, created on the first message: the browser never
holds it, so one browser session cannot read or write another's conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from bot.conversation import Bot
from bot.conversations import new_conversation_id
from bot.errors import InputError
from bot.types import Delta, Reply
from usage.errors import StorageError

log = logging.getLogger(__name__)

ChatHistory = list[dict[str, Any]]
LANG_CHOICES = [("Automatisch / Automatic", "auto"), ("Deutsch", "de"), ("English", "en")]
SORRY = (
    "Entschuldigung, gerade ist ein technisches Problem aufgetreten. Bitte versuchen Sie es erneut. / "
    "Sorry, a technical problem occurred. Please try again."
)


def format_reply(reply: Reply) -> str:
    """The answer as shown in the chat, with its sources."""
    return reply.text


def respond(
    bot: Bot,
    message: str,
    history: ChatHistory | None,
    conversation_id: str | None,
    lang_choice: str = "auto",
) -> Iterator[tuple[str, ChatHistory, str]]:
    """Gradio handler: add the customer's message, then stream the answer into the last bubble."""
    conversation_id = conversation_id or new_conversation_id()
    history = list(history or [])
    history.append({"role": "user", "content": message})
    history.append({"role": "assistant", "content": ""})
    lang = None if lang_choice in (None, "", "auto") else lang_choice
    try:
        for event in bot.stream_message(conversation_id, message, lang):  # type: ignore[arg-type]
            if isinstance(event, Delta):
                history[-1] = {"role": "assistant", "content": history[-1]["content"] + event.text}
                yield "", history, conversation_id
            elif isinstance(event, Reply):
                history[-1] = {"role": "assistant", "content": format_reply(event)}
                yield "", history, conversation_id
    except InputError as exc:
        history = history[:-2]
        history.append({"role": "assistant", "content": str(exc)})
        yield message if message and message.strip() else "", history, conversation_id
    except StorageError:
        log.exception("storage failure in conversation %s", conversation_id)
        history[-1] = {"role": "assistant", "content": SORRY}
        yield message, history, conversation_id


def build_customer_app(bot: Bot, *, title: str = "Support") -> gr.Blocks:
    """The customer chat as a Gradio Blocks app."""
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\nFragen Sie uns auf Deutsch oder Englisch. · Ask us in German or English.")
        conversation_id = gr.State(None)
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
        lang = gr.Dropdown(LANG_CHOICES, value="auto", label="Sprache / Language", scale=0)

        def handler(
            message: str, history: ChatHistory, conv: str | None, lang_choice: str
        ) -> Iterator[tuple[str, ChatHistory, str]]:
            yield from respond(bot, message, history, conv, lang_choice)

        inputs = [text, chatbot, conversation_id, lang]
        outputs = [text, chatbot, conversation_id]
        text.submit(handler, inputs, outputs, api_name="chat")
        send.click(handler, inputs, outputs, api_visibility="private")
    return app
