"""Escalation on text nobody here wrote: typos, chat shorthand, profanity, German; the held-out split.

Three sources of phrasing: our own English and German sentences (`escalation-ours.jsonl`, written for
these tests, positives and look-alike negatives), the held-out split of the third-party customer
requests (`thirdparty-test.jsonl`: the rules were developed on the other split and never tuned on this
one), and the project's own dev set, on which no new false escalation is allowed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bot import escalation
from bot.conversation import Bot
from bot.conversation_store import ConversationStore
from bot.kb.demo import DEMO_KB_DIR, ensure_demo_kb
from bot.kb.search import KnowledgeBase
from bot.spelling import Speller, is_word
from models.fake import ScriptedChatModel
from usage.ledger import Ledger

QUESTIONS = DEMO_KB_DIR / "questions"


def _load(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (QUESTIONS / name).read_text(encoding="utf-8").splitlines() if line]


OURS = _load("escalation-ours.jsonl")


@pytest.mark.parametrize("row", OURS, ids=[str(r["question"])[:40] for r in OURS])
def test_our_phrasings_escalate_exactly_when_they_should(row: dict[str, object]) -> None:
    signal = escalation.check_message(str(row["question"]))
    assert signal.escalate is row["should_escalate"], signal


@pytest.mark.parametrize(
    "text",
    [
        "i need help talking with a human agent",
        "I want assistnace contacting a human agent",
        "can u help me tlak to a persn",
        "wanna chat wth somebody real",
        "connect me w/ a supervisor",
        "Ich will mit nem Mitarbieter reden",
        "Kann ich bitte einen echten Menschen sprechen?",
        "Ich will endlich mit einem verdammten Menschen reden!",
    ],
)
def test_requests_for_a_person_however_spelt(text: str) -> None:
    assert escalation.check_message(text).reason == escalation.CUSTOMER_REQUEST


@pytest.mark.parametrize(
    "text",
    [
        "I don't know how to make a complaint",
        "my experience with your brand was bad, file a damn complaint",
        "where can I lodge a formal complant",
        "i wanna file a claim against your company",
        "worst fucking customer service ever",
        "Ich möchte mich beschwerren",
        "Ich bin total unzufrieden mit eurem Service",
    ],
)
def test_complaints_however_spelt(text: str) -> None:
    assert escalation.check_message(text).reason == escalation.COMPLAINT


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("how do i ask for restitutions of my money", "refund_or_payment_dispute"),
        ("I am still waiting for my reimbursment of 40 euros", "refund_or_payment_dispute"),
        ("can i get a rebate for the outage", "refund_or_payment_dispute"),
        ("Ich will mein Geld zurückhaben", "refund_or_payment_dispute"),
        ("i have a problem withpayment on the portal", "payment_problem"),
        ("my credit card got declined when paying the bill", "payment_problem"),
        ("I cant pay my invoice online", "payment_problem"),
        ("Meine Überweisung ist fehlgeschlagen", "payment_problem"),
    ],
)
def test_refunds_and_payment_problems_however_spelt(text: str, topic: str) -> None:
    assert escalation.check_message(text).reason == f"sensitive:{topic}"


def test_the_payment_problem_topic_can_be_switched_off() -> None:
    text = "there is a problem with my payment"
    assert escalation.check_message(text).escalate
    others = [t for t in escalation.DEFAULT_SENSITIVE if t != "payment_problem"]
    assert not escalation.check_message(text, enabled_topics=others).escalate


def test_spelling_corrects_unknown_words_towards_keywords_only() -> None:
    speller = Speller(["assistance", "agent", "payment", "rebate", "complaint"])
    assert speller.normalize("I want assistnace, an agnet") == "I want assistance, an agent"
    assert speller.normalize("issue withpayment") == "issue with payment"
    assert speller.normalize("u cant do that") == "you cannot do that"
    assert speller.normalize("how does this relate to it") == "how does this relate to it"  # a real word stays
    assert speller.normalize("Bestellnummer 123") == "Bestellnummer 123"
    assert is_word("relate") and is_word("rechnung") and not is_word("assistnace")


def _scores(rows: list[dict[str, object]]) -> tuple[float, float, int]:
    tp = fp = fn = 0
    for row in rows:
        label = row.get("should_escalate")
        if label is None:
            continue
        escalated = escalation.check_message(str(row["question"])).escalate
        tp += escalated and bool(label)
        fp += escalated and not label
        fn += (not escalated) and bool(label)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), fp


def test_rules_hold_on_the_held_out_third_party_split() -> None:
    """The issue's target (recall >= 0.9 at precision >= 0.85) on requests the rules were not tuned on."""
    precision, recall, _ = _scores(_load("thirdparty-test.jsonl"))
    assert recall >= 0.9 and precision >= 0.85, (precision, recall)


def test_no_false_escalation_on_the_projects_own_dev_set() -> None:
    precision, recall, false_escalations = _scores(_load("dev.jsonl"))
    assert false_escalations == 0 and recall == 1.0


def test_a_misspelt_request_reaches_a_person_through_the_chat_path(data_dir: Path) -> None:
    db = data_dir / "firstline.db"
    kb = KnowledgeBase(db)
    ensure_demo_kb(kb)
    model = ScriptedChatModel()
    bot = Bot(model=model, store=ConversationStore(db), ledger=Ledger(db, heartbeat=False), knowledge=kb)
    reply = bot.handle_message("c1", "I want assistnace contacting a human agent")
    assert reply.route == "human" and reply.ticket_id and model.history == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT reason, status FROM tickets").fetchall() == [("customer_request", "open")]
        assert conn.execute("SELECT route FROM requests").fetchall() == [("human",)]
