"""Answer modes and the grounding guard in the chat path, with the scripted model (fast tier).

A garbled or ungrounded model answer must never reach the customer: not streamed, not stored, not in
the final reply; the replacement is recorded in the ledger and the reply's reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.types import Delta, Reply
from models.fake import ScriptedChatModel

GARBLED_DE = (
    "Ich habe eine kleine Nachrichta für die Kunden. Sie ist ein neue Art mit der LumeBox 7, das wichtig zu "
    "erfahrbar. Dieser Art sind nur für die Auszuglängler von Lumenet im First-Level-Support."
)
ORANGE_Q = "Mein Router blinkt seit heute morgen orange, was bedeutet das?"
GOOD_DE = "Wenn alle Leuchten orange blinken, läuft ein Update. Ziehen Sie dann nicht den Stecker."


def make_services(data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    from ui.app import build_services

    for key, value in env.items():
        monkeypatch.setenv(f"FIRSTLINE_{key.upper()}", value)
    return build_services(data_dir, model=model)


@pytest.fixture
def model() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
def services(data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    svc = make_services(data_dir, model, monkeypatch)
    yield svc
    svc.close()


def ask(services: Any, conversation_id: str, text: str, lang: str = "de") -> tuple[list[str], Reply]:
    """Run one turn; returns the streamed pieces and the final reply."""
    pieces: list[str] = []
    reply = None
    for event in services.bot.stream_message(conversation_id, text, lang):
        if isinstance(event, Delta):
            pieces.append(event.text)
        else:
            reply = event
    assert isinstance(reply, Reply)
    return pieces, reply


def rows(data_dir: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "firstline.db") as conn:
        return conn.execute(sql, params).fetchall()


def test_the_garbled_answer_never_reaches_the_customer(services: Any, model: ScriptedChatModel, data_dir: Path) -> None:
    model.enqueue(GARBLED_DE)
    pieces, reply = ask(services, "c-garbled", ORANGE_Q)
    seen = "".join(pieces) + reply.text
    for word in ("Nachrichta", "Auszuglängler", "erfahrbar", "kleine"):
        assert word not in seen
    # auto mode: the passages are quoted instead, the article named first, and only it is cited
    assert reply.route == "faq" and reply.reason.startswith("guard_extractive:")
    assert reply.text.startswith("Aus unserem Hilfe-Center-Artikel „LumeBox 7 einrichten und Bedeutung der Leuchten“")
    assert "orange blinkend" in reply.text
    assert [s.title for s in reply.sources] == ["LumeBox 7 einrichten und Bedeutung der Leuchten"]
    stored = rows(data_dir, "SELECT role, content, route FROM messages WHERE conversation_id = 'c-garbled'")
    assert all("Nachrichta" not in content for _, content, _ in stored)
    assert stored[-1][2] == "extractive"
    # the ledger row keeps the model's compute and records the replacement
    ledger = rows(data_dir, "SELECT route, status, reason, completion_tokens FROM requests WHERE request_id = ?",
                  (reply.request_id,))  # fmt: skip
    assert ledger[0][:3] == ("model", "completed", reply.reason) and ledger[0][3] > 0


def test_a_grounded_answer_streams_sentence_by_sentence(services: Any, model: ScriptedChatModel) -> None:
    model.enqueue(GOOD_DE)
    pieces, reply = ask(services, "c-good", ORANGE_Q)
    assert pieces == [
        "Wenn alle Leuchten orange blinken, läuft ein Update. ",
        "Ziehen Sie dann nicht den Stecker.",
    ]
    assert reply.route == "model" and reply.reason == "kb_answer" and reply.text == GOOD_DE


def test_an_invented_fact_ends_the_answer_before_it(
    data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = make_services(data_dir, model, monkeypatch, answer_mode="generate")
    try:
        model.enqueue("Wenn alle Leuchten orange blinken, läuft ein Update. Das Update kostet 19,99 € extra.")
        pieces, reply = ask(services, "c-trunc", ORANGE_Q)
        assert "".join(pieces).strip() == "Wenn alle Leuchten orange blinken, läuft ein Update."
        assert reply.text == "Wenn alle Leuchten orange blinken, läuft ein Update."
        assert reply.reason == "guard_truncated:ungrounded" and reply.route == "model"
        assert "19,99" not in str(rows(data_dir, "SELECT content FROM messages"))
    finally:
        services.close()


def test_auto_mode_replaces_a_failing_answer_even_after_its_first_sentence(
    services: Any, model: ScriptedChatModel, data_dir: Path
) -> None:
    model.enqueue("Wenn alle Leuchten orange blinken, läuft ein Update. Das Update kostet 19,99 € extra.")
    pieces, reply = ask(services, "c-auto-trunc", ORANGE_Q)
    assert "".join(pieces).strip() == "Wenn alle Leuchten orange blinken, läuft ein Update."  # streamed, checked
    assert reply.reason == "guard_extractive:ungrounded" and reply.route == "faq"  # then replaced by the quote
    assert reply.text.startswith("Aus unserem Hilfe-Center-Artikel") and "19,99" not in reply.text
    stored = rows(data_dir, "SELECT content, route FROM messages WHERE conversation_id = 'c-auto-trunc' "
                            "AND role = 'assistant'")  # fmt: skip
    assert stored == [(reply.text, "extractive")]  # the chat page redraws the bubble from this row


def test_generate_mode_asks_back_then_hands_over(
    data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = make_services(data_dir, model, monkeypatch, answer_mode="generate")
    try:
        model.enqueue(GARBLED_DE, GARBLED_DE)
        _, first = ask(services, "c-gen", ORANGE_Q)
        assert first.reason == "guard_clarify:garbled" or first.reason == "guard_clarify:ungrounded"
        assert first.text.startswith("Dazu habe ich in unserem Hilfe-Center nichts gefunden")
        _, second = ask(services, "c-gen", "Die Lampe an der LumeBox blinkt orange, was heißt das?")
        assert second.route == "human" and second.ticket_id is not None
        ticket = rows(data_dir, "SELECT reason FROM tickets WHERE id = ?", (second.ticket_id,))
        assert ticket == [("answer_rejected",)]
        reasons = [r[0] for r in rows(data_dir, "SELECT reason FROM requests WHERE conversation_id = 'c-gen' "
                                                "ORDER BY started_at")]  # fmt: skip
        assert reasons[0].startswith("guard_clarify:") and reasons[1].startswith("guard_escalate:")
    finally:
        services.close()


def test_extractive_mode_never_calls_the_model(
    data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = make_services(data_dir, model, monkeypatch, answer_mode="extractive")
    try:
        pieces, reply = ask(services, "c-ext", "how do i pair my cordless handset with the router", "en")
        assert model.history == [] and pieces == []
        assert reply.route == "faq" and reply.reason == "extractive"
        assert reply.text.startswith('From our help centre article "Landline phone not working"')
        assert "0000" in reply.text
        ledger = rows(data_dir, "SELECT route, reason, prompt_tokens FROM requests WHERE request_id = ?",
                      (reply.request_id,))  # fmt: skip
        assert ledger == [("faq", "extractive", 0)]
    finally:
        services.close()


def test_guard_off_shows_the_model_unchecked(
    data_dir: Path, model: ScriptedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = make_services(data_dir, model, monkeypatch, grounding_guard="false")
    try:
        model.enqueue(GARBLED_DE)
        _, reply = ask(services, "c-off", ORANGE_Q)
        assert reply.text == GARBLED_DE and reply.route == "model"  # for measuring the model only
    finally:
        services.close()


def test_a_cancelled_answer_keeps_only_what_was_shown(services: Any, model: ScriptedChatModel, data_dir: Path) -> None:
    model.enqueue(GOOD_DE + " Noch ein Satz über Nachrichta.")
    stream = services.bot.stream_message("c-cancel", ORANGE_Q, "de")
    first = next(stream)
    assert isinstance(first, Delta) and first.text.startswith("Wenn alle Leuchten")
    stream.close()  # the customer left after the first sentence
    stored = rows(data_dir, "SELECT content FROM messages WHERE conversation_id = 'c-cancel' AND role = 'assistant'")
    assert stored == [("Wenn alle Leuchten orange blinken, läuft ein Update.",)]


def test_eval_counts_the_replacements(tmp_path: Path, data_dir: Path, model: ScriptedChatModel,
                                      services: Any) -> None:  # fmt: skip
    from bot import evaluation

    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"question": "Mein Router blinkt seit heute morgen orange, was bedeutet das?", "lang": "de", '
        '"expected_source": "router-einrichten-lumebox-7.md", "reference_answer": "Blinken alle Leuchten orange, '
        'läuft ein Update: Ziehen Sie nicht den Stecker."}\n'
        '{"question": "Wie wird das Wetter am Wochenende in Hamburg?", "lang": "de", "should_escalate": false}\n'
    )
    model.enqueue(GARBLED_DE, GARBLED_DE)
    items = evaluation.load_questions(questions)
    report = evaluation.report(evaluation.run(services, services.knowledge, items))
    assert report["guard_replacements"] == 1 and report["guard_by_reason"] in (
        {"extractive:garbled": 1}, {"extractive:ungrounded": 1})  # fmt: skip
    assert report["garbled_model_answers"] == 0 and report["garbled_answers"] == 0
    assert report["grounded_mean"] == 1.0 and report["language_match_rate"] == 1.0
    assert report["reference_questions"] == 1 and report["reference_f1"] > 0.1
    assert report["abstention_questions"] == 1 and report["abstention_recall"] == 1.0
    first = report["rows"][0]
    assert first["answer_kind"] == "extractive" and first["guard"].startswith("extractive:")
    assert report["by_route"]["extractive"]["questions"] == 1
