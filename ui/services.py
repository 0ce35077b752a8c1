"""The composition root: builds settings, the model, the stores, the ledger and the bot, once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.conversation import Bot
from bot.conversations import ConversationStore
from bot.knowledge import KnowledgeBase, KnowledgeSettings, ensure_demo_kb
from bot.settings import BotSettings
from bot.tickets import TicketStore
from models.settings import ModelSettings
from models.types import ChatModel
from ui.auth import UserStore
from ui.settings import ServerSettings
from usage.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a process needs, built once."""

    bot_settings: BotSettings
    model_settings: ModelSettings
    server_settings: ServerSettings
    knowledge_settings: KnowledgeSettings
    model: ChatModel
    store: ConversationStore
    ledger: Ledger
    knowledge: KnowledgeBase
    tickets: TicketStore
    bot: Bot
    users: UserStore

    def close(self) -> None:
        for store in (self.ledger, self.knowledge, self.tickets, self.store, self.users):
            store.close()


def load_model(model_settings: ModelSettings, backend: str) -> ChatModel:
    """The process's one model: llama.cpp, or the scripted fake for tests."""
    if backend == "scripted":
        from models.fake import ScriptedChatModel

        return ScriptedChatModel(context_size=model_settings.n_ctx)
    from models.llama import LlamaChatModel

    return LlamaChatModel(model_settings)


def build_services(data_dir: Path | None = None, model: ChatModel | None = None, *, demo_kb: bool = True) -> Services:
    """Compose settings (environment, then explicit arguments) into running services.

    With `demo_kb` (and FIRSTLINE_DEMO_KB=auto, the default) an empty knowledge base gets the bundled
    demo help centre, so a new installation can chat at once.
    """
    bot_settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    model_settings = ModelSettings()
    server_settings = ServerSettings()
    knowledge_settings = KnowledgeSettings()
    bot_settings.data_dir.mkdir(parents=True, exist_ok=True)
    chat_model = model or load_model(model_settings, server_settings.model_backend)
    db_path = bot_settings.database_path
    ledger = Ledger(db_path)
    store = ConversationStore(db_path)
    knowledge = KnowledgeBase(db_path)
    if demo_kb and server_settings.demo_kb == "auto":
        report = ensure_demo_kb(knowledge)
        if report is not None:
            log.warning("empty knowledge base: ingested the demo help centre (%d documents)", report.documents)
    tickets = TicketStore(db_path, conversations=store)
    bot = Bot(
        model=chat_model,
        store=store,
        ledger=ledger,
        settings=bot_settings,
        max_tokens=model_settings.max_tokens,
        knowledge=knowledge,
        knowledge_settings=knowledge_settings,
        tickets=tickets,
    )
    users = UserStore(db_path)
    return Services(
        bot_settings,
        model_settings,
        server_settings,
        knowledge_settings,
        chat_model,
        store,
        ledger,
        knowledge,
        tickets,
        bot,
        users,
    )
