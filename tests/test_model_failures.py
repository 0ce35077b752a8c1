"""Any model failure escalates and finishes its ledger row (issue #11, item 4).

The defect: when the on-demand model was (re)loaded and loading failed, the error was not one the bot
caught; the customer got a generic "Sorry", no ticket was opened and the ledger row stayed `started`
until the next restart priced it by its latency. Every path that reaches the model (the answer, the
prompt's token count, the "ask the model when unsure" decision) now escalates with the cause in the ledger.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bot import escalation, prompts
from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.kb.demo import ensure_demo_kb
from bot.kb.search import KnowledgeBase
from bot.tickets import TicketStore
from models.fake import ScriptedChatModel
from models.ondemand import OnDemandModel
from models.types import ChatMessage
from usage.ledger import Ledger


class LoadsOnce:
    """A model factory whose first load works and every later load fails (as a replaced or damaged file would)."""

    def __init__(self, answer: str = "Restart the router, then wait two minutes.") -> None:
        self.answer = answer
        self.loads = 0

    def __call__(self) -> ScriptedChatModel:
        self.loads += 1
        if self.loads > 1:
            raise OSError("model file not found: /models/gone.gguf")
        return ScriptedChatModel(default_answer=self.answer)


def rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data_dir / "firstline.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def make_bot(data_dir: Path, model: object, *, kb: bool = False) -> Bot:
    db = data_dir / "firstline.db"
    store = ConversationStore(db)
    knowledge = None
    if kb:
        knowledge = KnowledgeBase(db)
        ensure_demo_kb(knowledge)
    return Bot(model=model, store=store, ledger=Ledger(db, heartbeat=False), knowledge=knowledge,  # type: ignore[arg-type]
               tickets=TicketStore(db, conversations=store))  # fmt: skip


def wait_unloaded(model: OnDemandModel, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while model.loaded:
        assert time.monotonic() < deadline, "the on-demand model was not unloaded"
        time.sleep(0.01)


def test_a_model_that_fails_to_load_on_the_second_load_escalates_and_finishes_its_row(data_dir: Path) -> None:
    factory = LoadsOnce()
    model = OnDemandModel(factory, idle_s=0.05, n_ctx=2048)
    bot = make_bot(data_dir, model)
    first = bot.handle_message("c1", "How do I restart my router?")
    assert first.route == "model" and first.text == factory.answer
    wait_unloaded(model)
    second = bot.handle_message("c2", "And how do I reset my password?")
    model.close()
    assert factory.loads == 2
    assert second.route == "human" and second.reason == escalation.MODEL_FAILURE and second.ticket_id
    # the customer is told what happened and who takes over, in their language
    assert second.text == prompts.MODEL_FAILURE_HANDOVER["en"].format(ticket=second.ticket_id)
    [(status, route, error)] = rows(
        data_dir, f"SELECT status, route, error FROM requests WHERE request_id = '{second.request_id}'"
    )
    assert status == "error" and route == "model"  # failed model spend, not the hand-over's (#15 item 13)
    assert "could not be loaded" in str(error) and "model file not found" in str(error)
    assert rows(data_dir, "SELECT count(*) FROM requests WHERE status = 'started'") == [(0,)]
    assert rows(data_dir, "SELECT conversation_id, reason, status FROM tickets") == [("c2", "model_failure", "open")]


def test_the_customer_page_shows_the_hand_over_not_a_generic_sorry(data_dir: Path) -> None:
    from ui.web.customer import SORRY, respond

    factory = LoadsOnce()
    model = OnDemandModel(factory, idle_s=0.05, n_ctx=2048)
    bot = make_bot(data_dir, model)
    list(respond(bot, "How do I restart my router?", [], "c1", "en"))
    wait_unloaded(model)
    frames = list(respond(bot, "Wie setze ich mein Passwort zurück?", [], "c2", "de"))
    model.close()
    shown = frames[-1][1][-1]["content"]
    assert shown != SORRY and "technischen Problems" in shown and "Ticketnummer" in shown


class FailingTokenCount(ScriptedChatModel):
    """Counting the prompt's tokens fails (the prompt is counted before anything is generated)."""

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        raise RuntimeError("tokenizer crashed")


def test_a_failure_while_building_the_prompt_escalates_too(data_dir: Path) -> None:
    bot = make_bot(data_dir, FailingTokenCount())
    reply = bot.handle_message("c1", "How do I restart my router?")
    assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE
    [(status, error)] = rows(data_dir, "SELECT status, error FROM requests")
    assert status == "error" and error == "RuntimeError: tokenizer crashed"


def test_a_load_failure_when_the_model_is_asked_whether_to_escalate_hands_over(data_dir: Path) -> None:
    factory = LoadsOnce()
    model = OnDemandModel(factory, idle_s=0.05, n_ctx=2048)
    bot = make_bot(data_dir, model, kb=True)
    assert "".join(model.stream([ChatMessage("user", "hello")])) == factory.answer  # the first load works
    wait_unloaded(model)
    # a weak signal ("again", "called twice"): the rules are unsure and ask the model, which cannot load
    reply = bot.handle_message("c1", "My internet is down again, I already called twice")
    model.close()
    assert reply.route == "human" and reply.ticket_id
    # the message's own row (routed to a person) and the decision's row (the failed model call, with its cause)
    message_row, decision_row = rows(
        data_dir, "SELECT status, route, error FROM requests WHERE conversation_id = 'c1' ORDER BY started_at"
    )
    assert message_row == ("completed", "human", None)
    assert decision_row[0] == "error" and "could not be loaded" in str(decision_row[2])
    assert rows(data_dir, "SELECT count(*) FROM requests WHERE status = 'started'") == [(0,)]


@pytest.mark.parametrize("boom", [OSError("disk gone"), MemoryError()])
def test_an_unexpected_error_from_the_factory_is_a_model_failure(data_dir: Path, boom: BaseException) -> None:
    def factory() -> ScriptedChatModel:
        raise boom

    model = OnDemandModel(factory, idle_s=60, n_ctx=2048)
    bot = make_bot(data_dir, model)
    reply = bot.handle_message("c1", "How do I restart my router?")
    model.close()
    assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE
    [(status,)] = rows(data_dir, "SELECT status FROM requests")
    assert status == "error"
