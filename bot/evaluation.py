"""Scoring a question set (JSON Lines) against the running bot: retrieval, routing, escalation, cost.

Every question runs in a fresh conversation through `Bot.handle_message`, the same path as the chat, so
routing, the ledger and the model are measured as customers meet them. Retrieval metrics instead call
`KnowledgeBase.search(question, lang)` directly, so they do not depend on the route a question took
(an FAQ or escalated answer may carry no sources at all). The arithmetic lives in pure functions
(`source_matches`, `hit_at`, `escalation_scores`, `faq_tradeoff`, `summarize`) that
the tests check on hand-made sets.

Conventions: a question counts for hit@k only when it has `expected_source`; escalation precision is
1.0 when nothing was escalated and recall is 1.0 when nothing should have been (no mistake possible).
`answered_rate` is the share of all questions whose reply came from the FAQ or the model and is neither
a clarifying question (Reply.reason "clarify") nor a "don't know / no relevant information" reply
(`is_answer`); escalations are never answers. `faq_rate` counts FAQ answers only, not clarifications.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.types import Lang, Source
from usage.stats import percentile

if TYPE_CHECKING:
    from bot.answer_eval import AnswerResult

# Reply.reason of replies that ask back instead of answering (also when the guard replaced a model answer)
NON_ANSWER_REASONS = frozenset({"clarify", "guard_clarify"})
# extractive answers (bot/extractive.py) go out on the FAQ route (no generation) but are not FAQ answers
NOT_FAQ = NON_ANSWER_REASONS | {"extractive", "guard_extractive"}
THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# Replies that route to the FAQ or model but give no answer (the prompt tells the model to say so).
DONT_KNOW_MARKERS = (
    "i don't know", "i do not know", "don't have information", "do not have information", "no information",
    "not sure", "can't help with", "cannot help with", "unable to help", "no relevant",
    "weiß ich nicht", "nicht weiß", "weiß es nicht", "keine informationen", "keine relevanten",
    "kann ich nicht helfen", "kann ich leider nicht", "nicht beantworten",
)  # fmt: skip


@dataclass(frozen=True)
class Question:
    """One line of a question file."""

    question: str
    lang: Lang | None = None
    expected_source: str | None = None
    should_escalate: bool | None = None
    reference_answer: str | None = None  # what a good answer says (answer-level scoring, bot/answer_eval.py)
    answerable: bool | None = None  # False: the knowledge base has no answer, the bot must not invent one


@dataclass(frozen=True)
class QuestionResult:
    """What happened to one question."""

    question: str
    lang: str
    route: str
    reason: str
    hit_at_1: bool | None
    hit_at_3: bool | None
    escalated: bool
    should_escalate: bool | None
    answered: bool
    latency_s: float
    compute_s: float
    cost_micros: int = 0
    faq_score: float | None = None
    faq_correct: bool | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)
    answer: AnswerResult | None = None  # answer-level scores (None when not measured)


def question_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, question text) of every non-empty line of a question file; ValueError names the first bad line."""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = str(row["question"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'question' ({exc})") from exc
        yield row, text


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    """Parse a question file; ValueError names the first bad line."""
    out: list[Question] = []
    for row, text in question_rows(path):
        lang = row.get("lang") if row.get("lang") in ("en", "de") else None
        esc = row.get("should_escalate")
        answerable = row.get("answerable")
        reference = str(row.get("reference_answer") or "").strip() or None
        out.append(
            Question(
                text,
                lang,
                row.get("expected_source") or None,
                None if esc is None else bool(esc),
                reference,
                None if answerable is None else bool(answerable),
            )  # fmt: skip
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# -- pure scoring ----------------------------------------------------------------------------------------
def source_matches(expected: str, source: Source) -> bool:
    """`expected` names the source: its path, the path's final component, or its title (case-insensitive);
    "a.md|b.md" accepts either (a question that two articles answer equally well)."""
    path = source.path.casefold()
    final = path.split("#", 1)[0].rsplit("/", 1)[-1]
    names = (path, final, source.title.strip().casefold())
    return any(want.strip().casefold() in names for want in expected.split("|"))


def hit_at(expected: str | None, sources: Sequence[Source], k: int) -> bool | None:
    """Whether one of the first k sources matches; None when the question has no expected source."""
    if not expected:
        return None
    return any(source_matches(expected, s) for s in sources[:k])


def is_answer(route: str, text: str, reason: str = "") -> bool:
    """An FAQ or model reply that actually answers: not a clarifying question, not a "don't know"."""
    if route not in ("faq", "model") or _kind(reason) in NON_ANSWER_REASONS or not text.strip():
        return False
    low = text.casefold()
    return not any(marker in low for marker in DONT_KNOW_MARKERS)


def _kind(reason: str) -> str:
    """A reply reason without its detail ("guard_extractive:ungrounded" -> "guard_extractive")."""
    return reason.split(":", 1)[0]


def escalation_scores(pairs: Iterable[tuple[bool, bool | None]]) -> tuple[float, float]:
    """(precision, recall) of escalation over (escalated, should_escalate) pairs with a label.

    Precision is 1.0 when nothing was escalated, recall 1.0 when nothing should have been.
    """
    tp = fp = fn = 0
    for escalated, label in pairs:
        if label is None:
            continue
        tp += escalated and label
        fp += escalated and not label
        fn += (not escalated) and label
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall


def rate(flags: Iterable[bool | None]) -> float | None:
    """Share of True among the non-None flags; None when there are none."""
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def faq_tradeoff(
    items: Sequence[tuple[float | None, bool | None]], thresholds: Sequence[float] = THRESHOLDS
) -> list[dict[str, Any]]:
    """For each threshold: share of questions answered from the FAQ and the precision of those answers.

    `items` holds (best faq_match score or None, whether that FAQ entry is right for the question);
    an FAQ answer with an unknown verdict counts as wrong. Precision is 1.0 when no FAQ answer is given.
    """
    rows = []
    n = len(items)
    for t in thresholds:
        taken = [ok for score, ok in items if score is not None and score >= t]
        correct = sum(1 for ok in taken if ok)
        rows.append(
            {
                "threshold": t,
                "faq_answers": len(taken),
                "faq_share": len(taken) / n if n else 0.0,
                "faq_precision": correct / len(taken) if taken else 1.0,
            }
        )
    return rows


def summarize(results: Sequence[QuestionResult], currency: str = "EUR") -> dict[str, Any]:
    """The report's headline figures over per-question results."""
    from usage.pricing import from_micros

    n = len(results)
    precision, recall = escalation_scores((r.escalated, r.should_escalate) for r in results)
    cost = from_micros(sum(r.cost_micros for r in results)) / n if n else Decimal(0)
    return {
        "questions": n,
        "retrieval_hit_at_1": rate(r.hit_at_1 for r in results),
        "retrieval_hit_at_3": rate(r.hit_at_3 for r in results),
        "retrieval_questions": sum(1 for r in results if r.hit_at_1 is not None),
        "escalation_precision": precision,
        "escalation_recall": recall,
        "answered_rate": sum(r.answered for r in results) / n if n else 0.0,
        "faq_rate": sum(r.route == "faq" and _kind(r.reason) not in NOT_FAQ for r in results) / n if n else 0.0,
        "clarify_rate": sum(_kind(r.reason) in NON_ANSWER_REASONS for r in results) / n if n else 0.0,
        "mean_compute_s": sum(r.compute_s for r in results) / n if n else 0.0,
        "p95_latency_s": percentile([r.latency_s for r in results], 95) or 0.0,
        "cost_per_question": float(round(cost, 6)),
        "currency": currency,
    }


def by_language(results: Sequence[QuestionResult]) -> dict[str, dict[str, Any]]:
    """Retrieval hit rates per language."""
    out = {}
    for lang in sorted({r.lang for r in results}):
        part = [r for r in results if r.lang == lang]
        out[lang] = {
            "questions": len(part),
            "retrieval_hit_at_1": rate(r.hit_at_1 for r in part),
            "retrieval_hit_at_3": rate(r.hit_at_3 for r in part),
        }
    return out


# -- running ----------------------------------------------------------------------------------------------
def faq_verdict(
    question: Question, match_source: Source | None, match_category: str, categories: dict[str, str]
) -> bool:
    """Whether an FAQ entry suits a question: it names the expected source, or shares its category."""
    if match_source is None or not question.expected_source or question.should_escalate:
        return False
    if source_matches(question.expected_source, match_source):
        return True
    wanted = (w.strip().casefold().rsplit("/", 1)[-1] for w in question.expected_source.split("|"))
    expected_cats = {categories.get(w, "") for w in wanted} - {""}
    return match_category in expected_cats


def run(
    services: Any,
    kb: Any,
    questions: Sequence[Question],
    *,
    top: int = 3,
    checker: Any = None,
    judge: Any = None,
) -> list[QuestionResult]:
    """Ask every question in a fresh conversation; retrieval is scored with kb.search directly.

    Every reply is also judged answer by answer (bot/answer_eval.py) with `checker` (default: an
    AnswerChecker with the knowledge base's embedder and vocabulary) and, when given, the LLM `judge`.
    """
    from bot.answer_eval import evaluate_answer
    from bot.conversation_store import new_conversation_id
    from bot.quality import AnswerChecker, kb_vocabulary

    categories = kb.categories()
    if checker is None:
        checker = AnswerChecker(getattr(kb, "embedder", None), kb_vocabulary(kb))
    results = []
    for q in questions:
        sources = kb.search(q.question, q.lang, top=max(top, 3))
        match = kb.faq_match(q.question, q.lang)
        conversation_id = new_conversation_id()
        began = time.perf_counter()
        reply = services.bot.handle_message(conversation_id, q.question, q.lang)
        latency = time.perf_counter() - began
        compute_s, cost, model_id = _ledger_totals(services.ledger, conversation_id, reply.compute_s)
        answered = is_answer(reply.route, reply.text, reply.reason)
        judged = evaluate_answer(checker, q, reply, shown=answered, model_id=model_id, judge=judge)
        results.append(
            QuestionResult(
                question=q.question,
                lang=q.lang or reply.lang,
                route=reply.route,
                reason=reply.reason,
                hit_at_1=hit_at(q.expected_source, sources, 1),
                hit_at_3=hit_at(q.expected_source, sources, 3),
                escalated=reply.route == "human",
                should_escalate=q.should_escalate,
                answered=answered,
                latency_s=latency,
                compute_s=compute_s,
                cost_micros=cost,
                faq_score=match.score if match else None,
                faq_correct=faq_verdict(
                    q, match.source if match else None, match.source.section if match else "", categories
                ),
                sources=tuple(s.path for s in sources[:3]),
                answer=judged,
            )  # fmt: skip
        )
    return results


def _ledger_totals(ledger: Any, conversation_id: str, fallback_s: float) -> tuple[float, int, str]:
    """Compute seconds, cost (micro-units) and the model id of all ledger rows of one conversation."""
    compute, cost, rows, model_id = ledger.conversation_totals(conversation_id)
    return (compute if rows else fallback_s), cost, model_id


def report(results: Sequence[QuestionResult], thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """The full JSON report: headline figures, per language, FAQ threshold table, per-question rows."""
    from bot.answer_eval import answer_figures, breakdown, row_fields

    out = summarize(results)
    answered = sum(r.answered for r in results)
    out["cost_per_answer"] = round(out["cost_per_question"] * len(results) / answered, 6) if answered else None
    out |= answer_figures(results)
    out["by_language"] = by_language(results)
    for lang, figures in breakdown(results, lambda r: r.lang).items():
        out["by_language"].setdefault(lang, {}).update(figures)
    out["by_route"] = breakdown(results, lambda r: r.answer.kind if r.answer else r.route)
    out["by_model"] = breakdown(results, lambda r: r.answer.model_id if r.answer else "")
    out["faq_threshold_tradeoff"] = faq_tradeoff([(r.faq_score, r.faq_correct) for r in results], thresholds)
    out["rows"] = [
        {k: v for k, v in asdict(r).items() if k not in ("cost_micros", "faq_correct", "answer")}
        | {"latency_s": round(r.latency_s, 4), "compute_s": round(r.compute_s, 4)}
        | row_fields(r.answer)
        for r in results
    ]
    return out
