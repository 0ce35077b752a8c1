"""Failed spend (#15 item 13): a generation that timed out or failed is model compute, booked under route
`model` with its cause, and reports show errors and failed spend by cause (`--by outcome`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot import escalation
from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.settings import BotSettings
from models.errors import ModelUnavailableError
from models.fake import ScriptedChatModel
from usage.ledger import Ledger
from usage.pricing import DEFAULT_PROFILE
from usage.reports import OUTCOMES, build_report


def make_bot(data_dir: Path, model: ScriptedChatModel, timeout_s: float = 30.0) -> Bot:
    db = data_dir / "firstline.db"
    settings = BotSettings(data_dir=data_dir, model_timeout_s=timeout_s, ask_model_when_unsure=False)
    return Bot(model=model, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), settings=settings)


def test_a_timed_out_generation_is_model_spend_with_its_cause(data_dir: Path) -> None:
    model = ScriptedChatModel(seconds_per_token=0.02)
    model.enqueue(
        "Restart the router and wait two minutes.",
        " ".join(["word"] * 200),
        ModelUnavailableError("the model could not be loaded: file gone"),
    )
    bot = make_bot(data_dir, model, timeout_s=0.3)
    ok = bot.handle_message("c1", "How do I restart my router?")
    late = bot.handle_message("c2", "How do I reset my password?")
    down = bot.handle_message("c3", "How do I change my plan?")
    assert ok.route == "model" and late.route == "human" and late.reason == escalation.MODEL_FAILURE
    assert down.reason == escalation.MODEL_FAILURE
    conn = sqlite3.connect(data_dir / "firstline.db")
    route, status, compute = conn.execute(
        "SELECT route, status, compute_s FROM requests WHERE request_id = ?", [late.request_id]
    ).fetchone()
    conn.close()
    assert (route, status) == ("model", "error") and compute > 0.2  # the model ran for the timeout

    by_route = {r.key: r for r in build_report(data_dir / "firstline.db", DEFAULT_PROFILE, by="route").rows}
    assert "human" not in by_route  # the hand-over itself computed nothing
    model_row = by_route["model"]
    assert model_row.requests == 3 and model_row.errors == 2
    assert 0 < model_row.failed_cost_micros < model_row.cost_micros

    by_outcome = build_report(data_dir / "firstline.db", DEFAULT_PROFILE, by="outcome")
    causes = {r.key: r for r in by_outcome.rows}
    assert set(causes) == {"completed", "timeout", "model_unavailable"} and set(causes) <= set(OUTCOMES)
    assert causes["timeout"].requests == 1 and causes["timeout"].compute_s > 0
    assert (
        by_outcome.totals.failed_cost_micros == causes["timeout"].cost_micros + causes["model_unavailable"].cost_micros
    )
    assert by_outcome.to_json()["totals"]["failed"] == 2
