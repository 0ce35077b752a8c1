"""Answer-level quality: is an answer supported by what it cites, in the right language, made of words?

One function API for everything that judges answers (`firstline eval`, the grounding guard in the chat
path, the fine-tuning gate): `AnswerChecker.score(answer, passages=..., lang=..., question=...,
reference=...)` returns an `AnswerScore`; `AnswerChecker.check_sentence(...)` judges one sentence the way
the guard needs it. The method (docs/quality.md has the full account and its limits):

*Groundedness*, sentence by sentence against the cited passages, cut into units (sentences, whole lists
and each of their lines, table rows with their header). A sentence is *supported* when one unit holds at
least 80 % of its content terms (words without stop words, stemmed as the search index analyses them;
German compounds also match their parts; the unit's article title and section count) **and** its
embedding under the bundled multilingual-e5-small model is at least 0.84 cosine-close to the sentence,
**and** every number, URL and e-mail address in the sentence also occurs in the passages or the
question (invented prices, dates and phone numbers are the worst kind of error and embeddings are blind
to them). One unit must do both: words gathered from all over an article do not support a sentence.
Sentences without claims (fewer than two content terms, or a "don't know / a colleague will help"
offer) are neutral: they count neither way. An answer's `grounded` is the content-term-weighted share
of its claim sentences that are supported.

*Well-formedness*: the share of words that are in neither the language's word list nor the knowledge
base's vocabulary nor the question (bot/wordlists.py). *Language*: the answer's language by a unigram
model over the word lists. *Reference agreement*: token F1 (SQuAD style: lower-case words, no stemming)
and the embedding cosine between answer and reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bot import prompts
from bot.embeddings import Embedder
from bot.kb.analysis import analyze, words
from bot.textunits import iter_lines, passage_units, split_sentences
from bot.types import Lang, Source
from bot.wordlists import identify_language, unknown_words, vocabulary

# A sentence is supported by a passage unit that holds this share of its content terms and whose
# embedding is at least this close to it (chosen on hand-labelled sentences: docs/quality.md).
MIN_OVERLAP = 0.8
MIN_SIMILARITY = 0.84
GARBLED_LIMIT = 0.05  # share of unknown words above which an answer is garbled
LANGUAGE_MARGIN = 0.5  # per-word log-likelihood margin from which a sentence is clearly in the other language
MIN_CLAIM_TERMS = 2
# the first line of an extractive answer (bot/prompts.extractive_lead), whatever the title
_LEAD = re.compile(
    "|".join(
        re.escape(template).replace(re.escape("{title}"), ".+")
        for table in (prompts.EXTRACTIVE_LEAD, prompts.EXTRACTIVE_LEAD_FAQ)
        for template in table.values()
    )
)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")  # a step's number is not a fact
_CITATION = re.compile(r"\[\d{1,2}\]")
_FACT = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\S+@\S+\.\w+|\d+(?:[.,:/]\d+)*")
# offers to hand over and admissions of not knowing: what the prompt asks the model to say without facts
NEUTRAL_MARKERS = (
    "i don't know", "i do not know", "not sure", "colleague", "human agent", "a person", "support team",
    "weiß ich nicht", "weiß es nicht", "nicht weiß", "kollege", "kollegin", "mitarbeiter", "support-team",
)  # fmt: skip


@dataclass(frozen=True)
class SentenceCheck:
    """One sentence of an answer, judged against the cited passages."""

    text: str
    terms: int  # content terms (the sentence's weight)
    lexical: float  # share of content terms found in the best passage unit
    semantic: float  # cosine to that unit (0 without an embedder)
    support: float  # 1.0 when both reach their minimum, else how close the nearer one comes
    facts_ok: bool  # every number/URL/address also appears in the passages or the question
    neutral: bool  # no claim to check (too few content terms, or an offer to hand over)
    supported: bool
    lang: Lang | None
    lang_margin: float
    unknown: tuple[str, ...] = ()
    checked_words: int = 0

    @property
    def garbled_rate(self) -> float:
        return len(self.unknown) / self.checked_words if self.checked_words else 0.0


@dataclass(frozen=True)
class AnswerScore:
    """Answer-level figures of one shown answer (None: not measurable, e.g. no reference given)."""

    grounded: float | None  # weighted share of claim sentences that are supported
    support_mean: float | None  # mean support of claim sentences
    sentences: int
    unsupported: tuple[str, ...]
    garbled_rate: float
    unknown_words: tuple[str, ...]
    answer_lang: Lang | None
    lang_ok: bool
    reference_f1: float | None = None
    reference_similarity: float | None = None
    checks: tuple[SentenceCheck, ...] = field(default_factory=tuple)

    def as_dict(self, with_sentences: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out.pop("checks")
        out["unsupported"] = list(self.unsupported)
        out["unknown_words"] = list(self.unknown_words)
        if with_sentences:
            out["sentence_checks"] = [asdict(c) for c in self.checks]
        return out


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 between two texts (lower-case words, punctuation dropped, no stemming)."""
    a, r = words(answer), words(reference)
    if not a or not r:
        return float(a == r)
    from collections import Counter

    common = sum((Counter(a) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def facts(text: str) -> set[str]:
    """Numbers, URLs and e-mail addresses of a text, normalised ("4,99" and "4.99" meet); citation
    markers such as "[2]" are not facts."""
    text = _CITATION.sub(" ", text)
    return {m.group(0).lower().rstrip(".,;:").replace(",", ".") for m in _FACT.finditer(text)}


def _term_found(term: str, terms: set[str]) -> bool:
    if term in terms:
        return True
    if len(term) < 6:
        return False
    # German compounds and their parts: "statusleucht" ~ "leucht", "glasfasermodem" ~ "modem"
    return any(len(t) >= 4 and (term.endswith(t) or term.startswith(t) or t.endswith(term)) for t in terms)


def _plain(text: str) -> str:
    """Lower-case words of a text joined by single spaces (markup, punctuation and list markers dropped)."""
    return " ".join(words(text))


def lexical_support(sentence_terms: Sequence[str], passage_terms: set[str]) -> float:
    """Share of a sentence's content terms found among the passages' terms (1.0 when it has none)."""
    if not sentence_terms:
        return 1.0
    return sum(_term_found(t, passage_terms) for t in sentence_terms) / len(sentence_terms)


def is_neutral(sentence: str, terms: int) -> bool:
    """A sentence with no claim to check: too few content terms, an offer to hand over, or the line of an
    extractive answer that names the article it quotes."""
    low = sentence.casefold()
    return terms < MIN_CLAIM_TERMS or any(m in low for m in NEUTRAL_MARKERS) or _LEAD.fullmatch(sentence) is not None


@dataclass
class Evidence:
    """The passages an answer cites, prepared once: per unit its text, terms and vector; all facts."""

    lang: Lang
    units: list[str]
    unit_terms: list[set[str]]
    facts: set[str]
    vectors: Any  # (n, dim) float32, or None without an embedder
    plain: str = ""  # the passages as lower-case words, for spotting word-for-word quotes


def evidence_units(passage: Source | str) -> list[tuple[str, str]]:
    """(unit text, its context) of a passage: sentences, whole lists, each list line, table rows.

    The context (title and section heading) counts for the lexical check: a sentence naming the
    product of the article is supported by the article."""
    if isinstance(passage, Source):
        context, units = f"{passage.title} {passage.section}", passage_units(passage.snippet, passage.section)
    else:
        context, units = "", passage_units(passage)
    out: list[tuple[str, str]] = []
    for u in units:
        out.append((u.text, f"{context} {u.section}"))
        # a sentence may restate one step or item of a list, or one sentence of a longer unit
        lines = list(iter_lines(u.text)) if u.kind == "list" else [u.text]
        parts = [p for line in lines for p in [line, *split_sentences(line)] if p != u.text]
        out += [(p, f"{context} {u.section}") for p in dict.fromkeys(parts)]
    return out


class AnswerChecker:
    """Scores answers against passages; `embedder` None gives lexical-only support (documented)."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        vocabulary_words: Iterable[str] = (),
        *,
        min_overlap: float = MIN_OVERLAP,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        self.embedder = embedder
        self.vocabulary = frozenset(vocabulary_words)
        self.min_overlap = min_overlap
        self.min_similarity = min_similarity

    # -- evidence ---------------------------------------------------------------------------------------
    def evidence(self, passages: Sequence[Source] | Sequence[str], lang: Lang, question: str = "") -> Evidence:
        """Units (with their terms and vectors) and facts of the cited passages."""
        pairs = [pair for p in passages for pair in evidence_units(p)]
        units = [text for text, _ in pairs]
        unit_terms = [set(analyze(f"{context} {text}", lang)) for text, context in pairs]
        texts = [f"{p.title} {p.section} {p.snippet}" if isinstance(p, Source) else p for p in passages]
        known_facts = facts(" ".join(texts) + " " + question)
        vectors = self.embedder.embed_passages(units) if self.embedder is not None and units else None
        plain = " | ".join(f" {_plain(t)} " for t in texts)
        return Evidence(lang, units, unit_terms, known_facts, vectors, plain)

    # -- sentences --------------------------------------------------------------------------------------
    def check_sentences(self, sentences: Sequence[str], evidence: Evidence, question: str = "") -> list[SentenceCheck]:
        """Judge sentences against prepared evidence (one embedding call for all of them)."""
        if not sentences:
            return []
        cos = None
        if self.embedder is not None and evidence.vectors is not None and evidence.units:
            # the answer may echo customer text: query form, which is never cached on disk
            cos = np.asarray(self.embedder.embed_queries(list(sentences))) @ np.asarray(evidence.vectors).T
        known = self.vocabulary | {w.lower() for w in words(question)}
        out = []
        for n, text in enumerate(sentences):
            body = _LIST_MARKER.sub("", text)
            terms = analyze(body, evidence.lang)
            lexical, similarity = self._best_unit(terms, evidence, None if cos is None else cos[n])
            support = min(lexical / self.min_overlap, 1.0)
            if cos is not None:
                support = min(support, similarity / self.min_similarity)
            if _plain(body) and f" {_plain(body)} " in evidence.plain:  # quoted word for word: supported
                support = 1.0
            facts_ok = facts(body) <= evidence.facts
            neutral = is_neutral(text, len(terms)) and facts_ok
            lang, margin = identify_language(text)
            # our own line naming a quoted article is no model text: not checked for unknown words
            unknown, checked = ([], 0) if _LEAD.fullmatch(text) else unknown_words(text, evidence.lang, known)
            out.append(
                SentenceCheck(
                    text,
                    len(terms),
                    round(lexical, 4),
                    round(similarity, 4),
                    round(support, 4),
                    facts_ok,
                    neutral,
                    neutral or (facts_ok and support >= 1.0),
                    lang,
                    round(margin, 3),
                    tuple(unknown),
                    checked,
                )  # fmt: skip
            )
        return out

    def _best_unit(self, terms: list[str], evidence: Evidence, cosines: Any) -> tuple[float, float]:
        """(overlap, cosine) of the unit that comes closest to supporting a sentence on both counts."""
        best, best_pair = -1.0, (0.0, 0.0)
        for k, unit_terms in enumerate(evidence.unit_terms):
            lexical = lexical_support(terms, unit_terms)
            similarity = 1.0 if cosines is None else float(cosines[k])
            closeness = min(lexical / self.min_overlap, similarity / self.min_similarity)
            if closeness > best:
                best, best_pair = closeness, (lexical, similarity if cosines is not None else 0.0)
        return best_pair

    def check_sentence(self, sentence: str, evidence: Evidence, question: str = "") -> SentenceCheck:
        """One sentence (the guard's unit of release)."""
        return self.check_sentences([sentence], evidence, question)[0]

    # -- whole answers ----------------------------------------------------------------------------------
    def score(
        self,
        answer: str,
        *,
        passages: Sequence[Source] | Sequence[str],
        lang: Lang,
        question: str = "",
        reference: str | None = None,
    ) -> AnswerScore:
        """Every answer-level figure of one answer."""
        evidence = self.evidence(passages, lang, question)
        checks = self.check_sentences(split_sentences(answer), evidence, question)
        return summarize_checks(checks, answer, lang, reference, self.similarity(answer, reference))

    def similarity(self, a: str, b: str | None) -> float | None:
        """Cosine of two texts under the embedder (both in query form: a symmetric comparison)."""
        if self.embedder is None or b is None or not a.strip() or not b.strip():
            return None
        va, vb = self.embedder.embed_queries([a, b])
        return round(float(np.dot(va, vb)), 4)


def summarize_checks(
    checks: Sequence[SentenceCheck],
    answer: str,
    lang: Lang,
    reference: str | None = None,
    similarity: float | None = None,
) -> AnswerScore:
    """An AnswerScore from sentence checks (the guard reuses the checks it already made)."""
    claims = [c for c in checks if not c.neutral]
    weight = sum(max(c.terms, 1) for c in claims)
    grounded = sum(max(c.terms, 1) for c in claims if c.supported) / weight if claims else None
    support_mean = sum(c.support for c in claims) / len(claims) if claims else None
    unknown = tuple(w for c in checks for w in c.unknown)
    checked = sum(c.checked_words for c in checks)
    answer_lang, margin = identify_language(answer)
    lang_ok = answer_lang is None or answer_lang == lang or margin < LANGUAGE_MARGIN / 5
    return AnswerScore(
        grounded=None if grounded is None else round(grounded, 4),
        support_mean=None if support_mean is None else round(support_mean, 4),
        sentences=len(checks),
        unsupported=tuple(c.text for c in claims if not c.supported),
        garbled_rate=round(len(unknown) / checked, 4) if checked else 0.0,
        unknown_words=unknown,
        answer_lang=answer_lang,
        lang_ok=lang_ok,
        reference_f1=None if reference is None else round(token_f1(answer, reference), 4),
        reference_similarity=similarity,
        checks=tuple(checks),
    )


def kb_vocabulary(kb: Any) -> frozenset[str]:
    """The knowledge base's own words (article and FAQ texts and titles), for the well-formedness check.

    Asked of the knowledge base (which owns its tables) and cached per index state, like the search lexicon.
    """
    key = kb.index_state()
    cached = _VOCAB.get(str(kb.path))
    if cached is not None and cached[0] == key:
        return cached[1]
    vocab = vocabulary(kb.texts())
    _VOCAB[str(kb.path)] = (key, vocab)
    return vocab


_VOCAB: dict[str, tuple[tuple[Any, ...], frozenset[str]]] = {}
