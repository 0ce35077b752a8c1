"""The composition root: builds settings, the model, the stores, the ledger and the bot, once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.embeddings import load_embedder
from bot.kb.demo import ensure_demo_kb
from bot.kb.search import KnowledgeBase, KnowledgeSettings
from bot.settings import BotSettings
from bot.tickets import TicketStore
from bot.tuning.classifier import ClassifierStore, EscalationClassifier
from bot.tuning.registry import ModelRegistry, Serving, serving_choice, serving_of
from models.settings import ModelSettings
from models.types import ChatModel
from ui.auth import UserStore
from ui.settings import ServerSettings
from usage.budgets import BudgetGuard
from usage.ledger import Ledger
from usage.profiles import ProfileBook, active_profile, load_profiles
from usage.provisioning import ProvisioningRecorder

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
    profiles: ProfileBook
    budget: BudgetGuard
    provisioning: ProvisioningRecorder | None = None
    owns_model: bool = False  # built here (not passed in): closing the services stops it (and its worker)

    def close(self) -> None:
        close_model = getattr(self.model, "close", None)
        if (self.owns_model or self.provisioning is not None) and close_model is not None:
            close_model()  # an on-demand model records its final unload; a worker process is stopped
        if self.provisioning is not None:
            self.provisioning.close()
        for store in (self.budget, self.ledger, self.knowledge, self.tickets, self.store, self.users):
            store.close()


def load_model(
    model_settings: ModelSettings,
    backend: str,
    scripted_seconds_per_token: float = 0.0,
    serving: Serving | None = None,
) -> ChatModel:
    """The process's one model under FIRSTLINE_ENGINE (models.engine): llama.cpp in its supervised worker
    process by default, a local llama-server, OpenAI-compatible replicas, or the scripted fake; with the
    active fine-tuned adapter (if any) and named like the active version, so ledger rows carry its id."""
    from models.engine import load_engine

    return load_engine(
        model_settings,
        backend,
        scripted_seconds_per_token=scripted_seconds_per_token,
        load_options=serving.load_options() if serving is not None else None,
        model_id=serving.model_id if serving is not None else None,
    )


def active_serving(
    db_path: Path | str, model_settings: ModelSettings, version: str | None = None, data_dir: Path | None = None
) -> Serving:
    """The model version that serves (`firstline models activate`), or the named `version`, checked
    against the configured base model."""
    from models.loader import resolve_model

    registry = ModelRegistry(db_path, data_dir)
    try:
        path, sha = resolve_model(model_settings.model_path, model_settings.model_sha256)
        serving = serving_choice(registry, path, sha) if version is None else serving_of(registry, version, path, sha)
    finally:
        registry.close()
    if serving.problem:
        log.error("%s; the base model serves instead", serving.problem)
    elif serving.adapter is not None:
        log.info("serving model version %s (%s)", serving.version, serving.model_id)
    return serving


def active_classifier(db_path: Path | str, knowledge: KnowledgeBase) -> EscalationClassifier | None:
    """The trained escalation classifier the router asks after its rules, if one beat the rules on held-out."""
    store = ClassifierStore(db_path)
    try:
        return store.active(knowledge.embedder)
    finally:
        store.close()


def build_services(
    data_dir: Path | None = None,
    model: ChatModel | None = None,
    *,
    demo_kb: bool = True,
    model_version: str | None = None,
) -> Services:
    """Compose settings (environment, then explicit arguments) into running services.

    With `demo_kb` (and FIRSTLINE_DEMO_KB=auto, the default) an empty knowledge base gets the bundled
    demo help centre, so a new installation can chat at once. `model_version` serves that recorded
    model version instead of the active one (`firstline eval --model`).
    """
    bot_settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    model_settings = ModelSettings()
    server_settings = ServerSettings()
    knowledge_settings = KnowledgeSettings()
    bot_settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_path = bot_settings.database  # the shared store (SQLite file or PostgreSQL URL)
    kb_path = bot_settings.database_path  # the knowledge-base index: always this host's SQLite file
    profiles = load_profiles(bot_settings.data_dir, database=db_path)
    ledger = Ledger(db_path, profile=active_profile(profiles))
    provisioning: ProvisioningRecorder | None = None
    serving = active_serving(db_path, model_settings, model_version, bot_settings.data_dir) if model is None else None
    if model is not None:
        chat_model = model
    elif model_settings.idle_unload_s > 0:
        from models.ondemand import OnDemandModel

        provisioning = ProvisioningRecorder(db_path, owner=ledger.owner)
        chat_model = OnDemandModel(
            lambda: load_model(
                model_settings, server_settings.model_backend, server_settings.scripted_seconds_per_token, serving
            ),
            idle_s=model_settings.idle_unload_s,
            on_event=provisioning,
            n_ctx=model_settings.n_ctx,
        )
    else:
        backend, pace = server_settings.model_backend, server_settings.scripted_seconds_per_token
        chat_model = load_model(model_settings, backend, pace, serving)
    budget = BudgetGuard(db_path, profiles, profile=ledger.profile.name)
    store = ConversationStore(db_path)
    knowledge = KnowledgeBase(kb_path, embedder=load_embedder(knowledge_settings.embeddings))
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
        budget=budget,
    )
    bot.router.classifier = active_classifier(db_path, knowledge)
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
        profiles,
        budget,
        provisioning,
        owns_model=model is None,
    )
