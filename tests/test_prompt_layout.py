"""The prompt layout that lets llama.cpp reuse its KV cache for follow-up turns.

A follow-up's prompt must extend the previous turn's prompt (system message, earlier questions with the
passages they were sent with, earlier answers): only then is everything before the new question already
in the cache. Before this layout the passages for the *current* question sat in the system message, in
front of the history, so a follow-up shared only the first ~100 tokens with the previous turn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import prompts
from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.kb.demo import ensure_demo_kb
from bot.kb.search import KnowledgeBase
from bot.settings import BotSettings
from models.fake import ScriptedChatModel
from models.types import ChatMessage
from usage.ledger import Ledger

TURNS = (
    "My new router shows a blinking orange light after I plugged it in. What does that mean?",
    "I restarted it twice and the light is still orange. Which cable should I check first?",
    "Should the grey cable go into the DSL port or the LAN port of the router?",
)


@pytest.fixture
def kb_bot(data_dir: Path) -> tuple[Bot, ScriptedChatModel]:
    db = data_dir / "firstline.db"
    kb = KnowledgeBase(db)
    ensure_demo_kb(kb)
    model = ScriptedChatModel(context_size=8192)
    # the scripted answers are not grounded in the passages: without the guard they are stored as the
    # model's answers, which is what the prompt layout builds on (the guard has its own tests)
    settings = BotSettings(grounding_guard=False)
    bot = Bot(model=model, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), knowledge=kb,
              settings=settings)  # fmt: skip
    return bot, model


def _prompts(bot: Bot, model: ScriptedChatModel, conv: str = "c") -> list[list[ChatMessage]]:
    for text in TURNS:
        reply = bot.handle_message(conv, text)
        assert reply.route == "model", (text, reply.route, reply.reason)
    return [call.messages for call in model.history]


def test_each_follow_up_prompt_extends_the_previous_one(kb_bot: tuple[Bot, ScriptedChatModel]) -> None:
    bot, model = kb_bot
    sent = _prompts(bot, model)
    for before, after in zip(sent, sent[1:], strict=False):
        assert after[: len(before)] == before  # the whole previous prompt is a prefix ...
        assert after[len(before)].role == "assistant"  # ... followed by the answer and the new question
        assert after[-1].content.endswith(TURNS[sent.index(after)])
    # the passages travel with each question; the system message is the same for every turn
    assert all(p[0] == ChatMessage("system", prompts.system_prompt("en", bot.settings.company_name)) for p in sent)
    assert prompts.CONTEXT_HEADER["en"] in sent[0][-1].content


def test_a_passage_already_in_the_prompt_is_named_not_repeated(kb_bot: tuple[Bot, ScriptedChatModel]) -> None:
    bot, model = kb_bot
    sent = _prompts(bot, model)
    text = "\n".join(m.content for m in sent[-1])
    first_passages = [s for s in bot.store.messages("c") if s.role == "assistant"][0].sources
    assert first_passages
    for source in first_passages:
        assert text.count(source.snippet[:200]) == 1, source.title
    assert prompts.SEEN_ABOVE["en"] in text  # the same-topic follow-ups retrieve some passages again


def test_when_the_prompt_does_not_fit_older_questions_lose_their_passages_first(
    kb_bot: tuple[Bot, ScriptedChatModel],
) -> None:
    bot, model = kb_bot
    full = _prompts(bot, model, "measure")
    words = model.count_tokens(full[-1])
    model.history.clear()
    model.context_size = words - 40 + bot.max_tokens + 8  # the full layout is 40 "tokens" too long
    sent = _prompts(bot, model, "tight")
    last = sent[-1]
    assert model.count_tokens(last) <= model.context_size - bot.max_tokens
    assert prompts.CONTEXT_HEADER["en"] in last[-1].content  # the current question keeps its passages
    assert last[1].content == TURNS[0]  # the oldest question lost its passages ...
    assert [m.content for m in last if m.role == "user"][0] == TURNS[0]
    assert len(last) == len(full[-1])  # ... and no turn was dropped
