"""Answer-level evaluation: what `firstline eval` reports about the answers themselves.

bot/evaluation.py runs the questions and scores retrieval, routing and cost; this module judges each
reply with bot/quality.AnswerChecker and sums the figures up (per question, overall, per language, per
route, per model). Definitions (docs/quality.md):

- *shown answer*: an FAQ, extractive or model reply that answers (bot/evaluation.is_answer); `grounded`,
  `garbled_rate` and language figures are over shown answers, `..._model` over shown model answers.
- `reference_f1` / `reference_similarity`: over every question that has a `reference_answer`, whatever
  the reply was (asking back instead of answering scores what it scores: near 0).
- *abstention*: the reply gives no answer (asks back, says it does not know, or hands over). A question
  expects one when it is labelled `answerable: false`, or, without that label, when it has no
  `expected_source`, no `reference_answer` and `should_escalate` false (the knowledge base has no
  answer); it expects an answer when labelled `answerable: true`, or when it has an `expected_source` or
  a `reference_answer` and need not escalate. Questions that must escalate are left to the escalation
  figures.
- *guard replacements*: replies whose reason starts with "guard_" (bot/guard.py): the model's answer
  was replaced (extractive, asking back, handing over) or cut short; counted per action and cause.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.answering import ANSWER_REJECTED
from bot.judge import Judge, JudgeScore
from bot.quality import GARBLED_LIMIT, AnswerChecker, AnswerScore
from bot.types import Lang, Reply

if TYPE_CHECKING:
    from bot.evaluation import Question, QuestionResult

GUARD_PREFIX = "guard_"
EXTRACTIVE_REASONS = ("extractive", "guard_extractive")


@dataclass(frozen=True)
class AnswerResult:
    """Answer-level outcome of one question."""

    answer: str
    kind: str  # faq | extractive | model | clarify | dont_know | human
    model_id: str
    shown: bool
    score: AnswerScore | None  # of the shown answer
    reference_f1: float | None
    reference_similarity: float | None
    should_abstain: bool | None
    abstained: bool
    guard: str = ""  # the guard's action and cause, e.g. "extractive:ungrounded"; "" when it let it pass
    judge: JudgeScore | None = None


def answer_kind(route: str, reason: str, shown: bool) -> str:
    """What the customer got: an FAQ, extractive or model answer, a clarifying question, a don't-know, a human."""
    if route == "human":
        return "human"
    if reason.split(":", 1)[0] in EXTRACTIVE_REASONS:
        return "extractive"
    if not shown:
        return "clarify" if "clarify" in reason else "dont_know"
    return "faq" if route == "faq" else "model"


def abstention_label(q: Question) -> bool | None:
    """Whether a question expects an abstention (True), an answer (False), or is not labelled (None)."""
    if q.should_escalate:
        return None  # escalation figures judge these
    if q.answerable is not None:
        return not q.answerable
    if q.expected_source or q.reference_answer:
        return False
    return True if q.should_escalate is False else None


def evaluate_answer(
    checker: AnswerChecker,
    q: Question,
    reply: Reply,
    *,
    shown: bool,
    model_id: str = "",
    judge: Judge | None = None,
) -> AnswerResult:
    """Judge one reply: its answer-level scores, reference agreement, abstention and guard action."""
    lang: Lang = q.lang or reply.lang
    score = None
    if shown:
        score = checker.score(reply.text, passages=reply.sources, lang=lang, question=q.question)
    reference_f1 = similarity = None
    if q.reference_answer:
        from bot.quality import token_f1

        reference_f1 = round(token_f1(reply.text, q.reference_answer), 4)
        similarity = checker.similarity(reply.text, q.reference_answer)
    guard = reply.reason[len(GUARD_PREFIX) :] if reply.reason.startswith(GUARD_PREFIX) else ""
    if reply.reason == ANSWER_REJECTED:
        guard = "escalate"  # the guard rejected the model's answer and the customer had already been asked
    verdict = judge.score(q.question, reply.text, reply.sources) if judge is not None and shown else None
    return AnswerResult(
        answer=reply.text,
        kind=answer_kind(reply.route, reply.reason, shown),
        model_id=model_id,
        shown=shown,
        score=score,
        reference_f1=reference_f1,
        reference_similarity=similarity,
        should_abstain=abstention_label(q),
        abstained=not shown,
        guard=guard,
        judge=verdict,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def answer_figures(results: Sequence[QuestionResult]) -> dict[str, Any]:
    """Answer-level headline figures over per-question results (those without answer results are skipped)."""
    items = [r.answer for r in results if r.answer is not None]
    shown = [a for a in items if a.shown and a.score is not None]
    model = [a for a in shown if a.kind == "model"]
    scores = [a.score for a in shown if a.score is not None]
    model_scores = [a.score for a in model if a.score is not None]
    labelled = [a for a in items if a.should_abstain is not None]
    no_answer = [a for a in labelled if a.should_abstain]
    answerable = [a for a in labelled if not a.should_abstain]
    attempts = [a for a in items if a.kind == "model" or a.guard]
    replaced = [a for a in items if a.guard]
    judged = [a.judge for a in items if a.judge is not None]
    out: dict[str, Any] = {
        "answers_shown": len(shown),
        "grounded_mean": _mean([s.grounded for s in scores]),
        "grounded_mean_model": _mean([s.grounded for s in model_scores]),
        "grounded_full_rate": _mean([float(s.grounded == 1.0) for s in scores if s.grounded is not None]),
        "support_mean": _mean([s.support_mean for s in scores]),
        "garbled_rate": _mean([s.garbled_rate for s in scores]),
        "garbled_rate_model": _mean([s.garbled_rate for s in model_scores]),
        "garbled_answers": sum(1 for s in scores if s.garbled_rate > GARBLED_LIMIT),
        "garbled_model_answers": sum(1 for s in model_scores if s.garbled_rate > GARBLED_LIMIT),
        "language_match_rate": _mean([float(s.lang_ok) for s in scores]),
        "reference_questions": sum(1 for a in items if a.reference_f1 is not None),
        "reference_f1": _mean([a.reference_f1 for a in items]),
        "reference_similarity": _mean([a.reference_similarity for a in items]),
        "abstention_questions": len(no_answer),
        "abstention_recall": _mean([float(a.abstained) for a in no_answer]),
        "false_abstention_rate": _mean([float(a.abstained) for a in answerable]),
        "abstention_accuracy": _mean([float(a.abstained == a.should_abstain) for a in labelled]),
        "model_answer_rate": len(model) / len(items) if items else 0.0,
        "extractive_rate": sum(1 for a in items if a.kind == "extractive") / len(items) if items else 0.0,
        "guard_replacements": len(replaced),
        "guard_replacement_rate": round(len(replaced) / len(attempts), 4) if attempts else 0.0,
        "guard_by_reason": dict(sorted(Counter(a.guard for a in replaced).items())),
    }
    if judged:
        out["judge_faithfulness"] = _mean([j.faithfulness for j in judged])
        out["judge_relevance"] = _mean([j.relevance for j in judged])
        out["judge_errors"] = sum(1 for j in judged if j.error)
    return out


def breakdown(results: Sequence[QuestionResult], key: Callable[[QuestionResult], str]) -> dict[str, dict[str, Any]]:
    """Answer-level figures per group (language, route, model id)."""
    groups: dict[str, list[QuestionResult]] = {}
    for r in results:
        groups.setdefault(key(r) or "-", []).append(r)
    return {name: {"questions": len(part)} | answer_figures(part) for name, part in sorted(groups.items())}


def row_fields(a: AnswerResult | None) -> dict[str, Any]:
    """The per-question row's answer-level columns."""
    if a is None:
        return {}
    s = a.score
    row: dict[str, Any] = {
        "answer": a.answer,
        "answer_kind": a.kind,
        "model_id": a.model_id,
        "grounded": None if s is None else s.grounded,
        "support_mean": None if s is None else s.support_mean,
        "unsupported": [] if s is None else list(s.unsupported),
        "garbled_rate": None if s is None else s.garbled_rate,
        "unknown_words": [] if s is None else list(s.unknown_words),
        "answer_lang": None if s is None else s.answer_lang,
        "lang_ok": None if s is None else s.lang_ok,
        "reference_f1": a.reference_f1,
        "reference_similarity": a.reference_similarity,
        "should_abstain": a.should_abstain,
        "abstained": a.abstained,
        "guard": a.guard,
    }
    if a.judge is not None:
        row |= {"judge_faithfulness": a.judge.faithfulness, "judge_relevance": a.judge.relevance,
                "judge_error": a.judge.error}  # fmt: skip
    return row
