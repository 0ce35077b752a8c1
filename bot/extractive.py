"""Extractive answers: the passage sentences, steps or table rows that best answer a question, quoted.

A small model for a single task instead of a generative one: every unit (bot/textunits.py: sentence,
whole list, table row) of the retrieved passages is ranked against the question by the bundled embedding
model (question in query form, unit in passage form, as retrieval does) and by the share of the
question's content terms it contains. The best unit decides the article; up to `max_units` of that
article's units that score close to the best are added in document order, so a list of steps, an
introducing sentence and its continuation stay together. The answer's first line names the article and
the citation goes with the reply's sources. When no unit reaches `min_score` there is no extractive
answer, and the bot asks back or hands over as it does when nothing relevant is found.

Compute: one query embedding (already cached by retrieval) and the units' passage embeddings (cached on
disk after their first use): milliseconds, no generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot import prompts
from bot.embeddings import Embedder
from bot.kb.analysis import analyze
from bot.kb.ranking import rescale
from bot.quality import lexical_support
from bot.textunits import Unit, passage_units
from bot.types import Lang, Source

MIN_SCORE = 0.5  # best unit score below which no extractive answer is given (docs/quality.md)
NEAR_BEST = 0.85  # further units are taken when they score at least this share of the best one
QUESTION_COSINE = (0.75, 0.88)  # query vs passage cosines: unrelated .. answers the question
MAX_UNITS = 3
MAX_CHARS = 900
SOURCES_CONSIDERED = 3


@dataclass(frozen=True)
class Extract:
    """An extractive answer: the text shown (first line names the article), its source and its score."""

    text: str
    source: Source
    score: float
    units: tuple[str, ...]


@dataclass(frozen=True)
class _Scored:
    unit: Unit
    source: Source
    rank: int
    score: float


class ExtractiveAnswerer:
    """Picks passage units that answer a question; no generation."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        min_score: float = MIN_SCORE,
        max_units: int = MAX_UNITS,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self.embedder = embedder
        self.min_score = min_score
        self.max_units = max_units
        self.max_chars = max_chars

    def rank(self, question: str, lang: Lang, sources: Sequence[Source]) -> list[_Scored]:
        """Every unit of the first sources, best first."""
        candidates: list[tuple[Unit, Source, int]] = []
        for rank, source in enumerate(sources[:SOURCES_CONSIDERED]):
            units = passage_units(source.snippet, source.section)
            candidates += [(u, source, rank) for u in units if u.text.strip()]
        if not candidates:
            return []
        qterms = analyze(question, lang)
        semantic = [0.0] * len(candidates)
        if self.embedder is not None:
            qvec = self.embedder.embed_queries([question])[0]
            texts = [_embed_text(u, s) for u, s, _ in candidates]
            cos = np.asarray(self.embedder.embed_passages(texts)) @ np.asarray(qvec)
            semantic = [rescale(float(c), *QUESTION_COSINE) for c in cos]
        scored = []
        for (unit, source, rank), sem in zip(candidates, semantic, strict=True):
            lexical = lexical_support(qterms, set(analyze(f"{unit.section} {unit.text}", lang))) if qterms else 0.0
            score = lexical if self.embedder is None else 0.6 * sem + 0.4 * lexical
            scored.append(_Scored(unit, source, rank, score * (1.0 - 0.05 * rank)))
        return sorted(scored, key=lambda s: -s.score)

    def answer(self, question: str, lang: Lang, sources: Sequence[Source]) -> Extract | None:
        """The extractive answer, or None when nothing in the passages answers the question well enough."""
        ranked = self.rank(question, lang, sources)
        if not ranked or ranked[0].score < self.min_score:
            return None
        best = ranked[0]
        chosen = [best]
        size = len(best.unit.text)
        for s in ranked[1:]:
            if len(chosen) >= self.max_units or s.score < NEAR_BEST * best.score:
                break
            if s.source is not best.source or size + len(s.unit.text) > self.max_chars:
                continue
            chosen.append(s)
            size += len(s.unit.text)
        units = [s.unit for s in sorted(chosen, key=lambda s: s.unit.position)]
        body = _join(units)
        lead = prompts.extractive_lead(lang, best.source.title, is_faq=_is_faq(best.source))
        return Extract(f"{lead}\n\n{body}", best.source, round(best.score, 4), tuple(u.text for u in units))


def _embed_text(unit: Unit, source: Source) -> str:
    """A unit as embedded: with its section heading, which often carries what the unit is about."""
    return f"{unit.section}\n{unit.text}" if unit.section and unit.kind != "list" else unit.text


def _is_faq(source: Source) -> bool:
    return "#" in source.path  # FAQ entries are stored as "file#number"


def _join(units: Sequence[Unit]) -> str:
    """Units as Markdown: prose sentences of a paragraph run on, lists and table rows keep their lines."""
    out: list[str] = []
    previous: Unit | None = None
    for u in units:
        if (
            u.kind == "sentence"
            and previous is not None
            and previous.kind == "sentence"
            and (previous.position == u.position - 1)
        ):
            out[-1] += " " + u.text
        elif u.kind == "row":
            row = f"- {u.text}"
            if previous is not None and previous.kind == "row":
                out[-1] += "\n" + row  # rows of one table stay one list
            else:
                out.append(row)
        else:
            out.append(u.text)
        previous = u
    return "\n\n".join(out)
