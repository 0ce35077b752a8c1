"""Bot: the one orchestration point for a customer message.

`stream_message` stores the customer's text, decides the route, builds the prompt with LangChain, streams
the model's answer through the ledger (a `started` row before generation, finished after it) and stores
the answer. `handle_message` is the same path, collected.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import cast

from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk, HumanMessage

from bot import prompts
from bot.conversations import ConversationStore
from bot.errors import InputError
from bot.language import detect_language
from bot.settings import BotSettings
from bot.types import Delta, Lang, Message, Reply, Source
from models.errors import GenerationError
from models.langchain import FirstlineChatModel
from models.types import ChatModel, Usage
from usage.ledger import Ledger, Measurement

log = logging.getLogger(__name__)

# Tokens kept free besides the answer budget: chat-template overhead differs slightly between
# counting and generation (generation prompt, BOS), so never plan to the last token.
SAFETY_TOKENS = 8


class Bot:
    """Answers customer messages; every model call goes through the ledger."""

    def __init__(
        self,
        *,
        model: ChatModel,
        store: ConversationStore,
        ledger: Ledger,
        settings: BotSettings | None = None,
        max_tokens: int = 256,
    ) -> None:
        self.model = model
        self.store = store
        self.ledger = ledger
        self.settings = settings or BotSettings()
        self.max_tokens = max_tokens  # reserved for, and at most spent on, one answer
        self.llm = FirstlineChatModel(chat_model=model)

    # -- public API --------------------------------------------------------------------------------
    def handle_message(self, conversation_id: str, text: str, lang: Lang | None = None) -> Reply:
        """Answer one customer message (not streamed)."""
        reply: Reply | None = None
        for event in self.stream_message(conversation_id, text, lang):
            if isinstance(event, Reply):
                reply = event
        assert reply is not None
        return reply

    def stream_message(
        self, conversation_id: str, text: str, lang: Lang | None = None
    ) -> Iterator[Delta | Reply]:
        """Answer one customer message, yielding Delta pieces and finally the Reply."""
        conv = self.store.ensure(conversation_id)
        previous_lang: Lang = conv.get("lang") or self.settings.default_language  # type: ignore[assignment]
        text = self.clean_input(text, previous_lang)
        lang = lang or detect_language(text, fallback=previous_lang)
        if conv.get("lang") != lang:
            self.store.set_fields(conversation_id, lang=lang)
        history = self.store.messages(conversation_id, limit=self.settings.history_messages)
        self.store.add_message(conversation_id, "user", text, lang=lang)
        yield from self._answer_with_model(conversation_id, text, lang, history, context=None, sources=())

    def clean_input(self, text: str, lang: Lang) -> str:
        """Normalise the customer's text; raise InputError (customer-facing) when it cannot be used."""
        text = (text or "").strip()
        if not text:
            raise InputError(prompts.EMPTY_INPUT[lang])
        limit = self.settings.max_input_chars
        if len(text) > limit:
            raise InputError(prompts.TOO_LONG[lang].format(n=len(text), limit=limit))
        return text

    # -- the model route ---------------------------------------------------------------------------
    def _answer_with_model(
        self,
        conversation_id: str,
        text: str,
        lang: Lang,
        history: list[Message],
        context: list[str] | None,
        sources: tuple[Source, ...],
    ) -> Iterator[Delta | Reply]:
        messages = self.build_messages(text, lang, history, context)
        rid = self.ledger.start(
            conversation_id=conversation_id,
            route="model",
            model_id=self.model.model_id,
            device=self.model.device,
        )
        pieces: list[str] = []
        usages: list[Usage] = []
        stream = cast(
            Generator[BaseMessageChunk, None, None],
            self.llm.stream(messages, max_tokens=self.max_tokens, usage_sink=usages.append),
        )
        try:
            for chunk in stream:
                piece = str(chunk.content)
                if piece:
                    pieces.append(piece)
                    yield Delta(piece)
        except GeneratorExit:
            stream.close()
            self.ledger.finish(rid, status="cancelled", measurement=_measure(usages))
            if pieces:
                self.store.add_message(
                    conversation_id, "assistant", "".join(pieces), lang=lang, request_id=rid, route="model"
                )
            raise
        except GenerationError as exc:
            log.warning("model failed for conversation %s: %s", conversation_id, exc)
            self.ledger.finish(rid, status="error", measurement=_measure(usages), error=str(exc)[:500])
            answer = prompts.MODEL_FAILED[lang]
            self.store.add_message(
                conversation_id, "assistant", answer, lang=lang, request_id=rid, route="model"
            )
            yield Reply(answer, "model", conversation_id, rid, lang, reason="model error")
            return
        answer = "".join(pieces).strip()
        row = self.ledger.finish(rid, status="completed", measurement=_measure(usages))
        self.store.add_message(
            conversation_id, "assistant", answer, lang=lang, request_id=rid, route="model", sources=sources
        )
        yield Reply(
            text=answer,
            route="model",
            conversation_id=conversation_id,
            request_id=rid,
            lang=lang,
            sources=sources,
            compute_s=float(row.get("compute_s") or 0.0),
        )

    def build_messages(
        self, text: str, lang: Lang, history: list[Message], context: list[str] | None
    ) -> list[BaseMessage]:
        """The prompt: system (+ context), as much recent history as fits, and the question."""
        budget = self.model.n_ctx - self.max_tokens - SAFETY_TOKENS
        system = prompts.system_prompt(lang, self.settings.company_name, context)
        turns = [m for m in history if m.role in ("user", "assistant", "staff")]
        while True:
            value = prompts.CHAT_PROMPT.invoke(
                {"system": system, "history": _as_langchain(turns), "question": text}
            )
            messages = value.to_messages()
            if self._count(messages) <= budget:
                return messages
            if turns:
                turns = turns[1:]  # drop the oldest turn first
            elif context:
                context = context[:-1]  # then the least relevant passage
                system = prompts.system_prompt(lang, self.settings.company_name, context)
            else:
                text = _shorten(text)  # finally the question itself (only when it alone overflows)

    def _count(self, messages: list[BaseMessage]) -> int:
        from models.langchain import to_chat_messages

        return self.model.count_tokens(to_chat_messages(messages))


def _as_langchain(history: list[Message]) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for m in history:
        out.append(HumanMessage(m.content) if m.role == "user" else AIMessage(m.content))
    return out


def _shorten(text: str) -> str:
    keep = max(1, int(len(text) * 0.8))
    if keep >= len(text):
        raise InputError("message too long for the model's context window")
    return text[:keep]


def _measure(usages: list[Usage]) -> Measurement:
    if not usages:
        return Measurement()
    usage = usages[-1]
    return Measurement(
        queue_wait_s=usage.queue_wait_s,
        prefill_s=usage.prefill_s,
        decode_s=usage.decode_s,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        model_id=usage.model_id,
        device=usage.device,
    )
