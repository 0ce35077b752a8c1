"""The customer chat's logic without a browser: what each bubble says, in which language, what is stored.

(What a person sees in Chromium is in tests/test_chat_browser.py; these check the same rules fast and on
database rows.)
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import prompts
from bot.conversation import PARTIAL_ROUTE
from models.fake import ScriptedChatModel
from ui.web.chat_view import preferred_language, render, sources_markdown, text
from ui.web.customer import respond
from ui.web.limits import TOO_FAST, ChatLimits
from usage.feedback import FeedbackStore, feedback
from usage.reports import outcomes, parse_when


def rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data_dir / "firstline.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def contents(history: list[dict[str, Any]]) -> list[str]:
    return [str(m["content"]) for m in history]


# -- 1. the question shows at once, with a typing indicator ---------------------------------------------------
def test_the_question_and_a_typing_indicator_come_before_any_answer(services: Any) -> None:
    frames = respond(services.bot, "Why is my internet so slow today?", [], "c-first", "en")
    box, history, conv, _ = next(frames)  # before the bot has done anything
    assert box == "" and conv == "c-first"
    assert history[0] == {"role": "user", "content": "Why is my internet so slow today?"}
    assert 'class="fl-typing"' in history[1]["content"] and "typing" in history[1]["content"]
    assert rows(services.bot_settings.data_dir, "SELECT count(*) FROM messages") == [(0,)]  # nothing asked yet
    last = list(frames)[-1][1]
    assert "fl-typing" not in str(last) and last[-1]["content"]


# -- 3. acknowledgements after a hand-over; a cut-off answer stays apart from the notice ----------------------
def test_messages_to_staff_and_the_button_are_acknowledged_once(services: Any, data_dir: Path) -> None:
    bot = services.bot
    handover = bot.request_human("c-ack", "en")
    first = bot.handle_message("c-ack", "My router is blinking red")
    second = bot.handle_message("c-ack", "It started yesterday evening")
    again = bot.request_human("c-ack", "en")
    bot.request_human("c-ack", "en")  # pressed twice: said once
    assert first.text == prompts.WITH_STAFF["en"].format(ticket=handover.ticket_id) == second.text
    assert again.text == prompts.ALREADY_WITH_STAFF["en"].format(ticket=handover.ticket_id)
    shown = contents(render(bot, "c-ack").history)
    acks = [c for c in shown if "was added to ticket" in c]
    assert len(acks) == 1  # the first message of a run is acknowledged, not every one
    assert sum("already connected" in c for c in shown) == 1
    assert all(c.endswith(f"*{text('en', 'sent')}*") for c in shown if "blinking" in c or "yesterday" in c)
    # once a colleague has joined and talks with the customer, no more "added to ticket" notices
    bot.tickets.reply(handover.ticket_id, "sam", "Hi, Sam here. Which light exactly?")
    bot.handle_message("c-ack", "The one on the left")
    shown = contents(render(bot, "c-ack").history)
    assert sum("was added to ticket" in c for c in shown) == 1
    assert any("sam from our support team has joined" in c for c in shown)
    assert any(c.startswith("**sam · Support team:** Hi, Sam here") for c in shown)


def test_a_timed_out_answer_is_marked_and_kept_apart_from_the_hand_over(services: Any, monkeypatch: Any) -> None:
    model: ScriptedChatModel = services.model
    monkeypatch.setattr(services.bot.settings, "model_timeout_s", 0.05)
    monkeypatch.setattr(services.bot.settings, "ask_model_when_unsure", False)
    monkeypatch.setattr(services.bot.answers, "use_guard", False)  # the cut-off text is shown as it comes
    model.seconds_per_token = 0.03
    model.enqueue("The router needs a restart and then a few minutes to reconnect to the network")
    frames = list(respond(services.bot, "How can I set up my new router and Wi-Fi at home?", [], "c-cut", "en"))
    final = frames[-1][1]
    stored = rows(services.bot_settings.data_dir, "SELECT role, route FROM messages ORDER BY id")
    assert ("assistant", PARTIAL_ROUTE) in stored
    partial = next(m["content"] for m in final if "interrupted" in m["content"])
    notice = next(m["content"] for m in final if "ticket number" in m["content"])
    assert partial != notice and "The router" in partial and "The router" not in notice
    assert final.index(next(m for m in final if m["content"] == notice)) == len(final) - 1


# -- 5. sources: the title and the help-centre link, never an internal path ------------------------------------
def test_sources_show_titles_and_links_only() -> None:
    faq = {"title": "When is my bill debited?", "path": "faq/faq.jsonl#32", "url": ""}
    article = {"title": "Payment methods", "path": "articles/en/billing/x.md", "url": "https://help.example/x"}
    line = sources_markdown([faq, article, faq], "de")
    assert line == "\n\n**Quellen:** When is my bill debited? · [Payment methods](https://help.example/x)"
    assert "faq.jsonl" not in line and ".md" not in line


def test_an_faq_answer_on_the_page_names_no_file(services: Any) -> None:
    frames = list(respond(services.bot, "When is my bill debited?", [], "c-faq", "en"))
    answer = frames[-1][1][-1]["content"]
    assert "SEPA" in answer and "Sources" in answer
    assert "faq.jsonl" not in answer and "#" not in answer.split("Sources")[1]


# -- 6. the customer's language everywhere -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-US,en;q=0.9,de;q=0.5", "en"),
        ("fr-FR,fr;q=0.9,de;q=0.7,en;q=0.6", "de"),
        ("en;q=0.3,de;q=0.8", "de"),
        ("fr", "en"),
        ("", "en"),
        ("xx;q=abc,,;;", "en"),
    ],
)
def test_the_page_language_comes_from_the_browser(header: str, expected: str) -> None:
    assert preferred_language(header) == expected


def test_errors_and_the_button_follow_the_language(services: Any, monkeypatch: Any) -> None:
    # the button on a fresh page: the hand-over notice in the page's language
    reply = services.bot.request_human("c-de", "de")
    assert "Ticketnummer" in reply.text
    # a technical failure: the apology in the customer's language, the message kept in the box
    monkeypatch.setattr(services.bot, "stream_message", _raise)
    box, history, *_ = list(respond(services.bot, "Wie setze ich mein Passwort zurück?", [], "c-x", "auto"))[-1]
    assert history[-1]["content"] == text("de", "sorry") and "technisches Problem" in history[-1]["content"]
    assert box == "Wie setze ich mein Passwort zurück?"
    monkeypatch.undo()
    # too many messages: the wait in the customer's language
    limits = ChatLimits.create(1, 100, 60)
    assert limits.check("s", "c", "de") is None
    assert limits.check("s", "c", "de") == TOO_FAST["de"].format(s=60)
    # a refused message (too long) in the language of the conversation
    long = list(respond(services.bot, "Wort " * 900, [], "c-de", "auto"))[-1]
    assert "Ihre Nachricht ist zu lang" in long[1][-1]["content"]


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("boom")


# -- 4. a reload resumes the conversation: tokens --------------------------------------------------------------
def test_resume_tokens_are_unguessable_hashed_sliding_and_revocable(services: Any, data_dir: Path) -> None:
    store = services.store
    store.ensure("c-tok")
    token = store.issue_token("c-tok", timedelta(days=30))
    assert len(token) >= 43  # 256 bits, URL-safe
    assert store.resume(token, timedelta(days=30)) == "c-tok"
    stored = rows(data_dir, "SELECT token_hash, conversation_id FROM conversation_tokens")
    assert stored[0][1] == "c-tok" and token not in stored[0][0]  # only the hash is kept
    for wrong in ("c-tok", stored[0][0], token[:-1], token + "x", "", None, "x" * 5000):
        assert store.resume(wrong, timedelta(days=30)) is None  # type: ignore[arg-type]
    expired = store.issue_token("c-tok", timedelta(seconds=-1))
    assert store.resume(expired, timedelta(days=30)) is None
    store.revoke_token(token)
    assert store.resume(token, timedelta(days=30)) is None


def test_housekeeping_deletes_the_tokens_of_purged_conversations(services: Any, data_dir: Path) -> None:
    from bot.housekeeping import purge

    services.store.ensure("c-old")
    services.store.issue_token("c-old", timedelta(days=30))
    services.store.issue_token("c-old", timedelta(seconds=-1))
    report = purge(data_dir / "firstline.db", 1, now=parse_when("2999-01-01"))
    assert report.conversations == 1
    assert rows(data_dir, "SELECT count(*) FROM conversation_tokens") == [(0,)]


# -- 7. the welcome's topics, ratings ---------------------------------------------------------------------------
def test_topics_come_from_the_knowledge_base_in_the_customers_language(services: Any) -> None:
    english = dict(services.knowledge.topics("en"))
    german = dict(services.knowledge.topics("de"))
    assert set(english) == set(german) and len(english) >= 3
    assert all(1 <= len(qs) <= 4 for qs in english.values())
    assert "Wie setze ich mein Passwort zurück?" in german["account"]
    assert all(not q.isascii() or " " in q for qs in german.values() for q in qs)


def test_ratings_land_in_the_report_and_in_eval_feedback(services: Any, data_dir: Path) -> None:
    services.bot.handle_message("c-r", "When is my bill debited?")
    shown = render(services.bot, "c-r")
    request_id = next(r for r in shown.rates if r)
    store = FeedbackStore(data_dir / "firstline.db")
    store.rate("answer", request_id, 0)
    store.rate("answer", request_id, 1)  # changed their mind: the latest counts
    ticket = services.bot.request_human("c-r", "en").ticket_id
    services.tickets.resolve(ticket, "sam", notice="back")
    store.rate("resolution", ticket, 4)
    with pytest.raises(Exception, match="invalid rating"):
        store.rate("resolution", ticket, 9)
    store.close()
    summary = feedback(data_dir / "firstline.db")
    assert summary is not None
    got = summary.as_dict()
    assert got["answers_rated"] == 1 and got["answer_helpful_rate"] == 1.0 and got["by_route"]["faq"]["rated"] == 1
    assert got["resolutions_rated"] == 1 and got["resolution_rating_mean"] == 4.0
    found = outcomes(data_dir / "firstline.db", parse_when("2000-01-01"), parse_when("2999-01-01"))
    assert found is not None
    out = found.as_dict()
    assert out["answers_rated"] == 1 and out["resolution_rating_mean"] == 4.0
