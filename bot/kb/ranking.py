"""Ranking: pure functions that score and order the passages that search found (no I/O).

Lexical: a BM25 over term groups (a query word scores once, by its best alternative: exact, typo,
compound part) with title, section and body weighted 3 : 1.5 : 1, plus the IDF-weighted coverage of the
query's words. Dense: cosines of the query vector, rescaled onto [0, 1] between "unrelated" and "same
meaning". Both rankings meet in weighted reciprocal rank fusion at document level: dense counts twice
(FUSION_WEIGHTS; fused in at 1.5x it lifted hit@1 on the demo questions from 0.51 to 0.70, at 2x the
dev set's hit@3 reached 0.856), because it copes with paraphrase and typos. `mix` then puts articles
first and caps each score by the one ranked above it, so scores never rise down the list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bot.kb.analysis import QueryTerm
from bot.types import Lang, Source

RRF_K = 60  # reciprocal rank fusion constant (the usual value)
# lexical, dense passages, dense outlines (title and headings): dense counts more (it copes with paraphrase
# and typos); the outline ranking breaks ties between articles on the same topic (docs/quality.md)
FUSION_WEIGHTS = (1.0, 2.0, 0.5)
FAQ_IN_SEARCH = 1  # FAQ entries among search results while articles fill the rest (see mix)
COSINE = (0.75, 0.90)  # passage cosines: unrelated .. clearly relevant (multilingual-e5-small)
QQ_COSINE = (0.80, 0.95)  # question-to-question cosines: unrelated .. same question


@dataclass(frozen=True)
class Hit:
    """One ranked passage with its document's fields; `score` is its relevance in [0, 1]."""

    chunk_id: int
    doc_id: int
    kind: str
    path: str
    title: str
    url: str
    lang: Lang
    category: str
    section: str
    text: str
    score: float

    def source(self) -> Source:
        section = self.category if self.kind == "faq" else self.section  # an FAQ entry: its category
        return Source(self.title, self.path, self.score, self.text, self.url, section)


def coverage(qterms: list[QueryTerm], present: set[str]) -> float:
    """IDF-weighted share of the query terms found among `present` (typo/compound matches count partly)."""
    total = sum(q.weight for q in qterms)
    got = sum(q.weight * max((f for a, f in q.alternatives if a in present), default=0.0) for q in qterms)
    return got / total if total else 0.0


def rank_lexical(qterms: list[QueryTerm], rows: list[tuple[Any, ...]]) -> dict[int, tuple[float, float]]:
    """BM25 over term groups (a query word scores once, by its best alternative) and coverage, per chunk."""
    if not rows:
        return {}
    k1, b = 1.2, 0.75
    docs = []
    for cid, title, section, body, _ in rows:
        tf: dict[str, float] = {}
        for weight, text in ((3.0, title), (1.5, section), (1.0, body)):
            for t in text.split():
                tf[t] = tf.get(t, 0.0) + weight
        docs.append((cid, tf, len(body.split()) + 1))
    avg = sum(d[2] for d in docs) / len(docs)
    out = {}
    for cid, tf, length in docs:
        norm = k1 * (1 - b + b * length / avg)
        score = 0.0
        for q in qterms:
            best = max((f * tf[a] * (k1 + 1) / (tf[a] + norm) for a, f in q.alternatives if a in tf), default=0.0)
            score += q.weight * best
        out[cid] = (score, coverage(qterms, set(tf)))
    return out


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of several rankings of the same ids (weighted by FUSION_WEIGHTS)."""
    fused: dict[int, float] = {}
    for weight, ranking in zip(FUSION_WEIGHTS, rankings, strict=False):
        for rank, cid in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + weight / (k + rank)
    return fused


def mix(hits: list[Hit], top: int) -> list[Hit]:
    """Articles lead; at most FAQ_IN_SEARCH FAQ entries, never first, unless articles run out.

    A relevant FAQ entry repeats an article's facts in short (and an FAQ entry close enough to answer
    on its own is served by faq_match before search matters), so the article is the better first
    passage and citation; FAQ entries fill the list when there are not enough articles.
    """
    articles = [h for h in hits if h.kind != "faq"]
    faqs = [h for h in hits if h.kind == "faq"]
    keep = {h.chunk_id for h in faqs[:FAQ_IN_SEARCH]}
    out = [h for h in hits if h.kind != "faq" or h.chunk_id in keep]
    if out and out[0].kind == "faq" and articles:
        out.remove(articles[0])
        out.insert(0, articles[0])
    out += [h for h in faqs if h.chunk_id not in keep][: max(top - len(out), 0)]
    ceiling, ranked = 1.0, []
    for h in out[:top]:  # scores read best first: each is capped by the one ranked above it
        ceiling = min(ceiling, h.score)
        ranked.append(h if h.score == ceiling else replace(h, score=ceiling))
    return ranked


def by_outline(outline: dict[int, float], faq: dict[int, float], doc_of: dict[int, int]) -> list[int]:
    """Documents by outline cosine: articles by their outline's, FAQ entries (no outline: a question and
    its answer) by their passage's, so both kinds stay in the race (chunk ids -> cosine; doc ids out)."""
    sims = {doc_of[c]: s for c, s in (outline | faq).items() if c in doc_of}
    return sorted(sims, key=lambda d: -sims[d])


def first_per_document(ranking: list[int], doc_of: dict[int, int]) -> list[int]:
    """Documents in the order of their best-ranked chunk."""
    return list(dict.fromkeys(doc_of[c] for c in ranking if c in doc_of))


def rescale(cosine: float, low: float, high: float) -> float:
    """Map an embedding cosine onto [0, 1]: `low` (unrelated texts) -> 0, `high` (same meaning) -> 1."""
    return min(max((cosine - low) / (high - low), 0.0), 1.0)
