"""Router: decide how to handle a customer message — FAQ answer, model answer, clarify, or a human.

Rules first (bot/escalation.py), then retrieval: a confident FAQ match is answered as is, relevant
passages go to the model, and an empty result asks one clarifying question — the second empty result in
a row goes to a human. The router does no generation; when the cheap signals are unsure it says so and
the bot asks the model with a constrained grammar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot import escalation
from bot.kb.search import FaqMatch, KnowledgeBase, KnowledgeSettings
from bot.settings import BotSettings
from bot.types import Lang, Message, Source

DecisionKind = Literal["faq", "model", "clarify", "human"]
CLARIFY_ROUTE = "clarify"  # stored in messages.route so the next turn knows a clarifying question was asked


class EscalationCheck(Protocol):
    """A learnt escalation decision (bot/tuning/classifier.py): a signal when it says escalate, else None."""

    def check(self, text: str, lang: Lang | None = None) -> escalation.Signal | None: ...


@dataclass(frozen=True)
class Decision:
    """What to do with one message, with everything retrieval found."""

    kind: DecisionKind
    reason: str = ""
    faq: FaqMatch | None = None
    sources: tuple[Source, ...] = field(default_factory=tuple)
    ask_model: bool = False  # cheap signals were unsure: let the model decide answer/escalate
    retrieval_s: float = 0.0


class Router:
    """Decides the route of one message from rules, conversation history and retrieval."""

    def __init__(
        self,
        knowledge: KnowledgeBase | None,
        settings: BotSettings,
        knowledge_settings: KnowledgeSettings | None = None,
        classifier: EscalationCheck | None = None,
    ) -> None:
        self.knowledge = knowledge
        self.settings = settings
        self.ks = knowledge_settings or KnowledgeSettings()
        self.classifier = classifier  # a trained escalation classifier, asked when the rules found nothing

    def decide(self, text: str, lang: Lang, history: list[Message]) -> Decision:
        """Route one message (history excludes the message itself)."""
        t0 = time.perf_counter()
        signal = escalation.check_message(text, self.settings.sensitive_topics)
        if not signal.escalate:
            signal = escalation.check_conversation(text, history) if not signal.unsure else signal
        faq: FaqMatch | None = None
        sources: tuple[Source, ...] = ()
        if self.knowledge is not None:
            sources = tuple(self.knowledge.search(text, lang, top=self.ks.passages))
        if not signal.escalate and self.classifier is not None:  # after search: the query vector is cached
            signal = self.classifier.check(text, lang) or signal
        if self.knowledge is not None and not signal.escalate:
            faq = self.knowledge.faq_match(text, lang)
        elapsed = time.perf_counter() - t0
        if signal.escalate:
            return Decision("human", signal.reason, sources=sources, retrieval_s=elapsed)
        if self.knowledge is None:  # no knowledge base configured: the model answers on its own
            return Decision("model", "no_knowledge_base", ask_model=signal.unsure, retrieval_s=elapsed)
        relevant = tuple(s for s in sources if s.score >= self.ks.min_relevance)
        if faq is not None and faq.score >= self.ks.faq_threshold and not signal.unsure:
            return Decision("faq", "faq_match", faq=faq, sources=(faq.source,), retrieval_s=elapsed)
        if not relevant:
            if _asked_to_clarify(history):
                return Decision("human", escalation.NO_KB_MATCH, sources=sources, retrieval_s=elapsed)
            return Decision("clarify", "no_kb_match_first", sources=(), ask_model=signal.unsure, retrieval_s=elapsed)
        return Decision("model", "kb_answer", sources=relevant, ask_model=signal.unsure, retrieval_s=elapsed)


def _asked_to_clarify(history: list[Message]) -> bool:
    last_bot = next((m for m in reversed(history) if m.role in ("assistant", "staff", "system")), None)
    return last_bot is not None and last_bot.route == CLARIFY_ROUTE
