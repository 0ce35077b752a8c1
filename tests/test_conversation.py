"""Bot.handle_message with the scripted model: stored rows, ledger rows, trimming, languages, errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import db_rows as rows_of
from conftest import open_db, store_target

from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.errors import ConversationError, InputError
from bot.language import detect_language
from bot.types import Delta, Reply
from models.fake import ScriptedChatModel
from usage.ledger import Ledger

pytestmark = pytest.mark.stores


def make_bot(data_dir: Path, model: ScriptedChatModel, **kw: object) -> Bot:
    db = store_target(data_dir)
    return Bot(model=model, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), **kw)  # type: ignore[arg-type]


def db_rows(data_dir: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    return rows_of(store_target(data_dir), sql, params)


def test_message_and_answer_are_stored_with_a_completed_ledger_row(data_dir: Path) -> None:
    model = ScriptedChatModel(seconds_per_token=0.001)
    model.enqueue("Sie können Ihr Passwort im Kundenportal zurücksetzen.")
    bot = make_bot(data_dir, model)
    reply = bot.handle_message("conv-1", "Wie kann ich mein Passwort zurücksetzen?")
    assert reply.route == "model" and reply.lang == "de"
    assert reply.text.startswith("Sie können")
    assert reply.compute_s > 0
    msgs = db_rows(
        data_dir, "SELECT role, content, request_id FROM messages WHERE conversation_id='conv-1' ORDER BY id"
    )
    assert [m[0] for m in msgs] == ["user", "assistant"]
    assert msgs[1][2] == reply.request_id
    ledger = db_rows(
        data_dir,
        "SELECT status, route, conversation_id, compute_s, completion_tokens, model_id FROM requests "
        "WHERE request_id = ?",
        (reply.request_id,),
    )
    assert ledger == [("completed", "model", "conv-1", pytest.approx(reply.compute_s), 7, "scripted-fake")]
    # the system prompt asked for German
    assert "Deutsch" in model.history[0].messages[0].content


def test_english_question_gets_english_system_prompt(data_dir: Path) -> None:
    model = ScriptedChatModel()
    bot = make_bot(data_dir, model)
    reply = bot.handle_message("c", "How do I reset my password?")
    assert reply.lang == "en"
    assert "in English" in model.history[0].messages[0].content


def test_history_is_sent_and_stored_in_order(data_dir: Path) -> None:
    model = ScriptedChatModel()
    model.enqueue("first answer", "second answer")
    bot = make_bot(data_dir, model)
    bot.handle_message("c", "first question please")
    bot.handle_message("c", "second question please")
    sent = [(m.role, m.content) for m in model.history[1].messages]
    assert sent[1:] == [
        ("user", "first question please"),
        ("assistant", "first answer"),
        ("user", "second question please"),
    ]


def test_streaming_yields_deltas_then_reply(data_dir: Path) -> None:
    model = ScriptedChatModel()
    model.enqueue("one two three")
    bot = make_bot(data_dir, model)
    events = list(bot.stream_message("c", "hello there, how are you"))
    assert [e.text for e in events if isinstance(e, Delta)] == ["one", " two", " three"]
    assert isinstance(events[-1], Reply) and events[-1].text == "one two three"


def test_long_conversation_is_trimmed_to_fit_the_context(data_dir: Path) -> None:
    model = ScriptedChatModel(context_size=400)
    bot = make_bot(data_dir, model, max_tokens=64)
    bot.settings.history_messages = 200
    for i in range(60):
        # distinct questions (a repeated question would rightly be escalated)
        reply = bot.handle_message("long", f"question number {i} " + " ".join(uuid.uuid4().hex[:6] for _ in range(20)))
        assert reply.route == "model" and reply.request_id
    for call in model.history:
        assert model.count_tokens(call.messages) <= 400 - 64
    last = model.history[-1].messages
    assert last[-1].content.startswith("question number 59")  # the newest question is always kept
    assert len(last) < 1 + 2 * 60  # older turns were dropped
    assert db_rows(data_dir, "SELECT count(*) FROM requests WHERE status='completed'") == [(60,)]


def test_single_huge_message_is_shortened_not_failed(data_dir: Path) -> None:
    model = ScriptedChatModel(context_size=300)
    bot = make_bot(data_dir, model, max_tokens=64)
    reply = bot.handle_message("c", "word " * 399)
    assert reply.route == "model"
    assert model.count_tokens(model.history[0].messages) <= 300 - 64


def test_empty_and_too_long_input_are_refused_and_nothing_is_stored(data_dir: Path) -> None:
    bot = make_bot(data_dir, ScriptedChatModel())
    with pytest.raises(InputError, match="type a question"):
        bot.handle_message("c", "   \n ")
    with pytest.raises(InputError, match="too long"):
        bot.handle_message("c", "x" * 5000)
    assert db_rows(data_dir, "SELECT count(*) FROM messages") == [(0,)]
    assert db_rows(data_dir, "SELECT count(*) FROM requests") == [(0,)]


def test_invalid_conversation_id_is_refused(data_dir: Path) -> None:
    bot = make_bot(data_dir, ScriptedChatModel())
    with pytest.raises(ConversationError):
        bot.handle_message("../etc/passwd", "hello")


def test_model_failure_is_recorded_and_escalates(data_dir: Path) -> None:
    model = ScriptedChatModel()
    model.enqueue(RuntimeError("llama exploded"))
    bot = make_bot(data_dir, model)
    reply = bot.handle_message("c", "How do I pay my bill?")
    row = db_rows(data_dir, "SELECT status, error FROM requests WHERE request_id = ?", (reply.request_id,))
    assert row[0][0] == "error" and "llama exploded" in str(row[0][1])
    assert reply.route == "human" and reply.ticket_id and reply.reason == "model_failure"
    assert db_rows(data_dir, "SELECT reason, status FROM tickets") == [("model_failure", "open")]
    assert db_rows(data_dir, "SELECT status FROM conversations") == [("human",)]


def test_cancelled_stream_is_recorded_and_partial_answer_kept(data_dir: Path) -> None:
    model = ScriptedChatModel(seconds_per_token=0.01)
    model.enqueue("alpha beta gamma delta")
    bot = make_bot(data_dir, model)
    stream = bot.stream_message("c", "tell me something long")
    first = next(stream)
    assert isinstance(first, Delta)
    stream.close()
    [(status, compute_s)] = db_rows(data_dir, "SELECT status, compute_s FROM requests")
    assert status == "cancelled" and compute_s > 0  # the time spent before the cancel is still accounted
    assert db_rows(data_dir, "SELECT role, content FROM messages ORDER BY id")[-1] == ("assistant", "alpha")
    # the model was released: another call works
    assert bot.handle_message("c", "next question please").route == "model"


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Wie kann ich mein Passwort zurücksetzen?", "de"),
        ("Mein Internet geht nicht", "de"),
        ("Rechnung zu hoch", "de"),
        ("How do I reset my password?", "en"),
        ("my internet is not working", "en"),
        ("Kündigung", "de"),
        ("refund please", "en"),
    ],
)
def test_language_detection(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_language_falls_back_when_unclear() -> None:
    assert detect_language("OK", fallback="de") == "de"
    assert detect_language("12345", fallback="en") == "en"


def test_faq_fast_path_answers_without_a_model_call(data_dir: Path) -> None:
    from bot.kb.demo import ensure_demo_kb
    from bot.kb.search import KnowledgeBase

    db = data_dir / "firstline.db"
    kb = KnowledgeBase(db)
    ensure_demo_kb(kb)
    model = ScriptedChatModel()
    bot = make_bot(data_dir, model, knowledge=kb)
    reply = bot.handle_message("faq", "How do I reset my password?")
    assert reply.route == "faq" and model.history == []
    assert reply.sources and reply.sources[0].path.startswith("faq/")
    [(route, status, compute_s, prefill_s, model_id)] = db_rows(
        data_dir, "SELECT route, status, compute_s, prefill_s, model_id FROM requests"
    )
    assert (route, status) == ("faq", "completed") and compute_s > 0 and prefill_s == 0 and not model_id


def test_the_period_count_of_started_conversations_uses_an_index(data_dir: Path, store_kind: str) -> None:
    """Reports count the conversations started in a period (outcome_counts): a range over an index on
    created_at, not a scan of every conversation kept (there was no such index before m003)."""
    store = ConversationStore(store_target(data_dir))
    for n in range(3):
        store.ensure(f"c{n}", "en")
    since, until = "2026-01-01T00:00:00", "2027-01-01T00:00:00"
    assert store.outcome_counts(since, until, set(), set()) == (3, 0, 3)
    store.close()
    count = "SELECT count(*) FROM conversations WHERE created_at >= ? AND created_at < ?"
    if store_kind == "postgresql":
        db = open_db(store_target(data_dir))
        try:
            db.execute("SET enable_seqscan = off")  # three rows: without this the planner rightly scans
            plan = " ".join(r[0] for r in db.execute(f"EXPLAIN {count}", [since, until]).fetchall())
        finally:
            db.close()
    else:
        plan = " ".join(
            str(r[-1]) for r in rows_of(store_target(data_dir), f"EXPLAIN QUERY PLAN {count}", (since, until))
        )
    assert "conversations_created_at" in plan, plan
