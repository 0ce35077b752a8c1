"""The held-out gate: answers of a model on the held-out examples, their answer-level figures, and the
rule that decides whether one version is better than another.

Answers are generated greedily (temperature 0) from the very prompts the examples were built with, so
base and tuned see identical inputs. Every answer is judged with the bot's answer checker
(bot/quality.py: groundedness against the passages shown, invented numbers/links, garbled words,
language, reference F1 against the example's target); abstention is judged on the examples whose passages
lack the answer, a false abstention on those whose passages hold it.

`compare(candidate, incumbent)` is the promotion rule (held-out loss only picks the epoch):
the candidate must agree better with the reference answers, and be no worse on groundedness, garbled
words, abstention and invented facts (each within a small tolerance for noise, listed in TOLERANCE).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.evaluation import is_answer
from bot.quality import AnswerChecker
from bot.tuning.dataset import TuneExample
from bot.types import Lang, Source
from models.types import ChatMessage, ChatModel

PromptBuilder = Callable[[str, Lang, Sequence[Source]], list[ChatMessage]]
Scorer = Callable[[str, TuneExample], dict[str, Any]]

# how much worse than the incumbent a figure may be and still count as "no worse" (answers of a 135M
# model on a few dozen questions move by about this much from one tie-breaking token to another)
TOLERANCE = {"grounded": 0.02, "garbled_rate": 0.005, "garbled_rate_de": 0.005, "abstention": 0.0,
             "false_abstention": 0.05, "invented_facts": 0}  # fmt: skip


@dataclass(frozen=True)
class HeldoutAnswer:
    example: TuneExample
    answer: str
    compute_s: float
    tokens: int


def generate_answers(
    model: ChatModel,
    examples: Sequence[TuneExample],
    build_prompt: PromptBuilder,
    *,
    max_tokens: int,
    progress: Callable[[Sequence[TuneExample], str], Any] | None = None,
    label: str = "held-out answers",
) -> list[HeldoutAnswer]:
    """Greedy answers to every example, from the example's own passages."""
    out = []
    items = progress(examples, label) if progress is not None else examples
    for ex in items:
        messages = build_prompt(ex.question, ex.lang, ex.sources)
        began = time.perf_counter()
        gen = model.stream(messages, max_tokens=max_tokens, temperature=0.0)
        text = "".join(gen).strip()
        usage = gen.usage
        out.append(HeldoutAnswer(ex, text, time.perf_counter() - began, usage.completion_tokens if usage else 0))
    return out


def heldout_metrics(answers: Sequence[HeldoutAnswer], score: Scorer) -> dict[str, Any]:
    """Answer-level figures over the held-out answers (per example scores come from `score`)."""
    answerable = [a for a in answers if a.example.answerable]
    unanswerable = [a for a in answers if not a.example.answerable]
    scored = [(a, score(a.answer, a.example)) for a in answerable]
    shown = [(a, s) for a, s in scored if is_answer("model", a.answer)]
    de = [s for a, s in shown if a.example.lang == "de"]
    refs = [s.get("reference_f1") for _, s in scored]
    return {
        "examples": len(answers),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "reference_f1": _mean(refs),
        "grounded": _mean([s.get("grounded") for _, s in shown]),
        "garbled_rate": _mean([s.get("garbled_rate") for _, s in shown]),
        "garbled_rate_de": _mean([s.get("garbled_rate") for s in de]),
        "lang_ok": _mean([float(bool(s.get("lang_ok"))) for _, s in shown]),
        "invented_facts": sum(int(s.get("invented_facts") or 0) for _, s in shown),
        "abstention": _mean([0.0 if is_answer("model", a.answer) else 1.0 for a in unanswerable]),
        "false_abstention": _mean([0.0 if is_answer("model", a.answer) else 1.0 for a in answerable]),
        "mean_answer_tokens": _mean([float(a.tokens) for a in answers]),
        "compute_s": round(sum(a.compute_s for a in answers), 3),
    }


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may replace the incumbent, with the reasons either way."""

    better: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"better": self.better, "reasons": list(self.reasons)}


def compare(candidate: dict[str, Any], incumbent: dict[str, Any]) -> Verdict:
    """The promotion rule over two sets of held-out figures (see the module docstring)."""
    reasons = []
    ok = True
    c_ref, i_ref = candidate.get("reference_f1"), incumbent.get("reference_f1")
    if c_ref is None or i_ref is None:
        return Verdict(False, ("no reference agreement measured on held-out answers",))
    if c_ref <= i_ref:
        ok = False
        reasons.append(f"reference F1 {c_ref:.3f} is not above {i_ref:.3f}")
    else:
        reasons.append(f"reference F1 {c_ref:.3f} > {i_ref:.3f}")
    for key, higher_is_better in (("grounded", True), ("abstention", True), ("garbled_rate", False),
                                  ("garbled_rate_de", False), ("false_abstention", False),
                                  ("invented_facts", False)):  # fmt: skip
        c, i = candidate.get(key), incumbent.get(key)
        if c is None or i is None:
            continue
        slack = TOLERANCE[key]
        worse = c < i - slack if higher_is_better else c > i + slack
        if worse:
            ok = False
            reasons.append(f"{key} {c:.3f} is worse than {i:.3f}")
    return Verdict(ok, tuple(reasons))


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def checker_scorer(checker: AnswerChecker) -> Scorer:
    """Per-answer figures from the answer checker: reference agreement with the example's target, support by
    the passages shown, garbled words, language, and numbers/links/addresses the passages do not contain."""

    def score(answer: str, example: TuneExample) -> dict[str, Any]:
        found = checker.score(answer, passages=example.sources, lang=example.lang, question=example.question,
                              reference=example.answer)  # fmt: skip
        return {
            "reference_f1": found.reference_f1,
            "reference_similarity": found.reference_similarity,
            "grounded": found.grounded,
            "garbled_rate": found.garbled_rate,
            "lang_ok": found.lang_ok,
            "invented_facts": sum(1 for c in found.checks if not c.facts_ok),
        }

    return score
