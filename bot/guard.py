"""The grounding guard: a generated answer reaches the customer only sentence by checked sentence.

The model's stream is buffered until a sentence is complete (bot/textunits.complete_sentences); the
sentence is then checked (bot/quality.AnswerChecker) and released only when it

- is in the customer's language (not clearly the other one),
- keeps the answer's share of unknown words at or below `garbled_limit` (5 %), and
- is supported by the cited passages (or makes no claim, e.g. an offer to hand over).

The first failing sentence stops the generation and the answer has failed: in `auto` mode the bot
replaces all of it, also when its first sentences were already shown (by an extractive answer, else by
asking back or handing over); in `generate` mode an answer of which nothing was shown is replaced by
asking back, and one whose first sentences were shown ends after them. A sentence cut off by the token limit is
dropped. Releasing per sentence delays the first visible text by about one sentence of decoding plus one
check (tens of milliseconds), which `firstline bench` measures against the unguarded stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.quality import (
    GARBLED_LIMIT,
    LANGUAGE_MARGIN,
    AnswerChecker,
    AnswerScore,
    Evidence,
    SentenceCheck,
    summarize_checks,
)
from bot.textunits import complete_sentences
from bot.types import Lang

UNGROUNDED = "ungrounded"
GARBLED = "garbled"
WRONG_LANGUAGE = "wrong_language"
EMPTY = "empty"


@dataclass(frozen=True)
class Failure:
    """Why the guard stopped an answer, and the sentence that failed (None for an empty answer)."""

    reason: str
    check: SentenceCheck | None


def judge(check: SentenceCheck, lang: Lang, unknown: int, checked: int, garbled_limit: float) -> str:
    """'' when a sentence may be shown after `unknown`/`checked` earlier words, else the failure reason."""
    if check.lang not in (None, lang) and check.lang_margin >= LANGUAGE_MARGIN and check.checked_words >= 3:
        return WRONG_LANGUAGE
    words = checked + check.checked_words
    if words and (unknown + len(check.unknown)) / words > garbled_limit:
        return GARBLED
    if not check.supported:
        return UNGROUNDED
    return ""


class GroundingGuard:
    """Feed it the model's pieces; it returns the text that may be shown, and stops at the first failure."""

    def __init__(
        self,
        checker: AnswerChecker,
        evidence: Evidence,
        lang: Lang,
        question: str = "",
        *,
        garbled_limit: float = GARBLED_LIMIT,
    ) -> None:
        self.checker = checker
        self.evidence = evidence
        self.lang = lang
        self.question = question
        self.garbled_limit = garbled_limit
        self.buffer = ""
        self.released = ""
        self.checks: list[SentenceCheck] = []
        self.failure: Failure | None = None
        self._unknown = 0
        self._checked = 0
        self.check_s = 0.0  # compute spent checking (billed with the request, like retrieval)

    def feed(self, piece: str) -> str:
        """Add generated text; returns the newly releasable text ('' while a sentence is incomplete)."""
        if self.failure is not None:
            return ""
        self.buffer += piece
        sentences, rest = complete_sentences(self.buffer)
        if not sentences:
            return ""
        return self._release(sentences, len(self.buffer) - len(rest))

    def finish(self, complete: bool = True) -> str:
        """The stream ended: check the last sentence (`complete` False: it was cut off, drop it); returns
        the newly releasable text."""
        text = ""
        if self.failure is None and complete:
            sentences, _ = complete_sentences(self.buffer, final=True)
            if sentences:
                text = self._release(sentences, len(self.buffer))
        self.buffer = ""
        if self.failure is None and not self.released.strip():
            self.failure = Failure(EMPTY, None)
        return text

    @property
    def rejected(self) -> bool:
        """Whether the answer failed before any of it was shown (it must be replaced as a whole)."""
        return self.failure is not None and not self.released.strip()

    @property
    def truncated(self) -> bool:
        """Whether the answer was stopped after some of it was shown."""
        return self.failure is not None and bool(self.released.strip())

    def score(self) -> AnswerScore:
        """Answer-level figures of what was released (from the checks already made)."""
        return summarize_checks(self.checks, self.released, self.lang)

    def _release(self, sentences: list[str], upto: int) -> str:
        passed: list[str] = []
        t0 = time.perf_counter()
        checks = self.checker.check_sentences(sentences, self.evidence, self.question)
        self.check_s += time.perf_counter() - t0
        for check in checks:
            reason = judge(check, self.lang, self._unknown, self._checked, self.garbled_limit)
            if reason:
                self.failure = Failure(reason, check)
                break
            self.checks.append(check)
            passed.append(check.text)
            self._unknown += len(check.unknown)
            self._checked += check.checked_words
        # on a failure only the sentences before the failing one are released, and nothing after it
        text = self.buffer[:upto] if self.failure is None else _prefix_through(self.buffer, passed)
        self.released += text
        self.buffer = self.buffer[upto:] if self.failure is None else ""
        return text


def _prefix_through(buffer: str, sentences: list[str]) -> str:
    """The raw text of `buffer` up to and including the last of `sentences` (found in order)."""
    pos = 0
    for s in sentences:
        found = buffer.find(s, pos)
        if found < 0:
            break
        pos = found + len(s)
    return buffer[:pos]
