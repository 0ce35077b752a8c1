"""The grounding guard on streamed text: what is released, when it stops, and why."""

from __future__ import annotations

import pytest
from test_quality import GARBLED_DE, article

from bot.embeddings import load_embedder
from bot.guard import GARBLED, UNGROUNDED, WRONG_LANGUAGE, GroundingGuard
from bot.quality import AnswerChecker


@pytest.fixture(scope="module")
def checker() -> AnswerChecker:
    return AnswerChecker(load_embedder("auto"), {"lumebox", "lumenet"})


def stream(guard: GroundingGuard, text: str, *, complete: bool = True) -> list[str]:
    """Feed `text` word by word as a model would; returns the pieces the guard released, in order."""
    out = []
    for i, word in enumerate(text.split(" ")):
        piece = guard.feed(word if i == 0 else " " + word)
        if piece:
            out.append(piece)
    last = guard.finish(complete)
    return out + [last] if last else out


def router_guard(checker: AnswerChecker, lang: str = "de") -> GroundingGuard:
    src = article(
        "de/technical/router-einrichten-lumebox-7.md" if lang == "de" else "en/technical/router-setup-lumebox-7.md"
    )
    question = "Mein Router blinkt orange, was bedeutet das?"
    return GroundingGuard(checker, checker.evidence([src], lang, question), lang, question)  # type: ignore[arg-type]


def test_a_grounded_answer_is_released_sentence_by_sentence(checker: AnswerChecker) -> None:
    guard = router_guard(checker)
    answer = "Wenn alle Leuchten orange blinken, läuft ein Update. Ziehen Sie in dieser Zeit nicht den Stecker."
    pieces = stream(guard, answer)
    assert pieces == [
        "Wenn alle Leuchten orange blinken, läuft ein Update. ",
        "Ziehen Sie in dieser Zeit nicht den Stecker.",
    ]
    assert guard.failure is None and guard.released == answer
    assert guard.score().grounded == 1.0


def test_the_garbled_answer_from_the_issue_is_never_released(checker: AnswerChecker) -> None:
    guard = router_guard(checker)
    assert stream(guard, GARBLED_DE) == []
    assert guard.rejected and guard.released == ""
    assert guard.failure is not None and guard.failure.reason in (GARBLED, UNGROUNDED)


def test_a_later_bad_sentence_stops_the_answer_after_the_good_ones(checker: AnswerChecker) -> None:
    guard = router_guard(checker)
    good = "Wenn alle Leuchten orange blinken, läuft ein Update."
    pieces = stream(guard, good + " Die LumeBox kostet dann 19,99 € extra. Danach ist alles gut.")
    assert "".join(pieces).strip() == good
    assert guard.truncated and not guard.rejected
    assert guard.failure is not None and guard.failure.reason == UNGROUNDED  # 19,99 is in no passage
    assert "19,99" not in guard.released


def test_an_answer_in_the_wrong_language_is_rejected(checker: AnswerChecker) -> None:
    guard = router_guard(checker, "en")
    stream(guard, "Wenn alle Leuchten orange blinken, läuft ein Update auf der LumeBox.")
    assert guard.rejected and guard.failure is not None and guard.failure.reason == WRONG_LANGUAGE


def test_a_sentence_cut_off_by_the_token_limit_is_dropped(checker: AnswerChecker) -> None:
    guard = router_guard(checker)
    pieces = stream(guard, "Wenn alle Leuchten orange blinken, läuft ein Update. Ziehen Sie in dieser", complete=False)
    assert "".join(pieces) == "Wenn alle Leuchten orange blinken, läuft ein Update. "
    assert guard.failure is None and guard.released.strip().endswith("Update.")


def test_an_empty_answer_fails(checker: AnswerChecker) -> None:
    guard = router_guard(checker)
    assert stream(guard, "   ") == []
    assert guard.rejected and guard.failure is not None and guard.failure.reason == "empty"
