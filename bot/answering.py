"""Answer modes: how a question with relevant passages is answered (FIRSTLINE_ANSWER_MODE).

- `generate`: the model writes the answer; the grounding guard (bot/guard.py) checks every sentence
  before it is shown, and an answer that fails is replaced by asking back (or handing over).
- `extractive`: no generation; the passage sentences, steps or table rows that answer best are quoted
  (bot/extractive.py), with the article named in the first line.
- `auto` (default): generate, and when the guard rejects the model's answer, quote instead.

`AnswerModes` holds what the modes need per process (the embedder, the checker's settings) and makes a
guard or an extract for one question; bot/conversation.py streams and records. Reasons recorded on the
reply and the ledger row: "extractive" (extractive mode), "guard_extractive:<cause>",
"guard_clarify:<cause>", "guard_truncated:<cause>" and, when the conversation already asked back,
escalation with ANSWER_REJECTED; <cause> is the guard's (ungrounded, garbled, wrong_language, empty).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bot.extractive import Extract, ExtractiveAnswerer
from bot.guard import GroundingGuard
from bot.quality import MIN_OVERLAP, MIN_SIMILARITY, AnswerChecker, kb_vocabulary
from bot.types import Lang, Source

log = logging.getLogger(__name__)

ANSWER_REJECTED = "answer_rejected"  # ticket reason: the model failed the guard and nothing could be quoted


class AnswerModes:
    """The answer mode of a bot and the parts it needs (guard, extractive answerer)."""

    def __init__(
        self,
        mode: str,
        knowledge: Any,
        *,
        guard: bool = True,
        min_overlap: float = MIN_OVERLAP,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        self.mode = mode
        self.knowledge = knowledge
        self.use_guard = guard and knowledge is not None
        self.min_overlap = min_overlap
        self.min_similarity = min_similarity
        embedder = getattr(knowledge, "embedder", None)
        self.extractive = ExtractiveAnswerer(embedder) if knowledge is not None else None

    @property
    def generates(self) -> bool:
        """Whether the model writes answers (generate and auto); extractive mode never calls it."""
        return self.mode != "extractive" or self.knowledge is None

    @property
    def falls_back_to_quotes(self) -> bool:
        """Whether a rejected model answer is replaced by an extractive one (auto)."""
        return self.mode == "auto" and self.extractive is not None

    def checker(self) -> AnswerChecker:
        """A checker with the knowledge base's embedder and current vocabulary."""
        return AnswerChecker(
            getattr(self.knowledge, "embedder", None),
            kb_vocabulary(self.knowledge),
            min_overlap=self.min_overlap,
            min_similarity=self.min_similarity,
        )

    def guard(self, question: str, lang: Lang, sources: Sequence[Source]) -> GroundingGuard | None:
        """A guard for one model answer, or None when answers are not checked (guard off, no knowledge base)."""
        if not self.use_guard:
            return None
        checker = self.checker()
        return GroundingGuard(checker, checker.evidence(sources, lang, question), lang, question)

    def extract(self, question: str, lang: Lang, sources: Sequence[Source]) -> Extract | None:
        """The extractive answer, or None when nothing quotable answers the question."""
        if self.extractive is None or not sources:
            return None
        return self.extractive.answer(question, lang, sources)

    def warm(self) -> None:
        """Load the word lists and the embedding model now, not in the first customer's answer."""
        from bot.wordlists import LANGS, word_list

        for lang in LANGS:
            word_list(lang)
        embedder = getattr(self.knowledge, "embedder", None)
        if embedder is not None:
            embedder.embed_queries(["warm up"])
