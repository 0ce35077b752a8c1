"""The composition root: builds settings, the model, the stores, the ledger and the bot, once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.conversation import Bot
from bot.conversations import ConversationStore
from bot.settings import BotSettings
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
    model: ChatModel
    store: ConversationStore
    ledger: Ledger
    bot: Bot
    users: UserStore

    def close(self) -> None:
        self.ledger.close()
        self.store.close()
        self.users.close()


def load_model(model_settings: ModelSettings, backend: str) -> ChatModel:
    """The process's one model: llama.cpp, or the scripted fake for tests."""
    if backend == "scripted":
        from models.fake import ScriptedChatModel

        return ScriptedChatModel(context_size=model_settings.n_ctx)
    from models.llama import LlamaChatModel

    return LlamaChatModel(model_settings)


def build_services(data_dir: Path | None = None, model: ChatModel | None = None) -> Services:
    """Compose settings (environment, then explicit arguments) into running services."""
    bot_settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    model_settings = ModelSettings()
    server_settings = ServerSettings()
    bot_settings.data_dir.mkdir(parents=True, exist_ok=True)
    chat_model = model or load_model(model_settings, server_settings.model_backend)
    db_path = bot_settings.database_path
    ledger = Ledger(db_path)
    store = ConversationStore(db_path)
    bot = Bot(
        model=chat_model,
        store=store,
        ledger=ledger,
        settings=bot_settings,
        max_tokens=model_settings.max_tokens,
    )
    users = UserStore(db_path)
    return Services(bot_settings, model_settings, server_settings, chat_model, store, ledger, bot, users)
