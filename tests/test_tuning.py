"""Fine-tuning without training: the examples and their split, the model registry, the held-out gate,
serving the active version, and the ledger's `training` route. (The tune itself: test_tune_real.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import prompts
from bot.embeddings import load_embedder
from bot.kb.demo import ensure_demo_kb
from bot.kb.search import KnowledgeBase, KnowledgeSettings
from bot.tuning import gate
from bot.tuning.dataset import DataSet, build_dataset, opening
from bot.tuning.pipeline import retriever
from bot.tuning.promotion import activate, version_rows
from bot.tuning.registry import (
    BASE,
    GateRefusedError,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    serving_choice,
)
from usage.ledger import Ledger, Measurement, utcnow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KnowledgeBase, DataSet]]:
    """The demo help centre and the examples built from it (once per module)."""
    path = tmp_path_factory.mktemp("tune-kb") / "firstline.db"
    kb = KnowledgeBase(path, embedder=load_embedder("auto"))
    ensure_demo_kb(kb)
    ks = KnowledgeSettings()
    data = build_dataset(kb, retriever(kb, ks.passages, ks.min_relevance), heldout_share=0.2, seed=13)
    yield kb, data
    kb.close()


# -- the examples -------------------------------------------------------------------------------------------
def test_heldout_never_overlaps_training(demo: tuple[KnowledgeBase, DataSet]) -> None:
    _, data = demo
    train, held = data.train, data.heldout
    assert train and held
    assert 0.1 <= len(held) / len(data.examples) <= 0.35
    assert not {e.group for e in train} & {e.group for e in held}
    assert not {e.fact for e in train} & {e.fact for e in held}
    assert not {(e.question, e.answer) for e in train} & {(e.question, e.answer) for e in held}
    # the answer of a held-out example is never the target of a training example (no fact learnt verbatim)
    train_targets = {e.answer for e in train if e.answerable}
    assert not [e for e in held if e.answerable and e.answer in train_targets]


def test_a_fact_and_its_translation_stay_on_one_side(demo: tuple[KnowledgeBase, DataSet]) -> None:
    _, data = demo
    split_of: dict[str, set[str]] = {}
    for e in data.examples:
        doc = e.fact.split(":", 1)[1].split("#", 1)[0]
        split_of.setdefault(doc, set()).add(e.split)
    pairs = [
        ("articles/en/account/reset-password.md", "articles/de/account/passwort-zuruecksetzen.md"),
        ("articles/en/billing/payment-methods.md", "articles/de/billing/zahlungsarten.md"),
        ("articles/en/contract/cancel-contract.md", "articles/de/contract/vertrag-kuendigen.md"),
        ("articles/en/technical/wifi-problems.md", "articles/de/technical/wlan-probleme.md"),
    ]
    for en, de in pairs:
        assert split_of[en] == split_of[de], (en, de)
        assert len(split_of[en]) == 1
    # FAQ entries restating an article go with it: every FAQ entry about payment methods shares its group
    groups = {e.group for e in data.examples if "payment-methods" in e.fact or "zahlungsarten" in e.fact}
    faq = [e for e in data.examples if e.kind == "faq" and "PayPal" in e.answer]
    assert faq and {e.group for e in faq} <= groups


def test_answerable_examples_hold_their_answer_and_abstaining_ones_do_not(
    demo: tuple[KnowledgeBase, DataSet],
) -> None:
    _, data = demo
    answerable = [e for e in data.examples if e.answerable]
    abstaining = [e for e in data.examples if not e.answerable]
    assert len(answerable) > 100 and 0.1 < len(abstaining) / len(data.examples) < 0.3
    for e in answerable:
        if e.kind == "section":
            assert any(" ".join(e.answer.split())[:60] in " ".join(s.snippet.split()) for s in e.sources), e.fact
        else:
            assert any(s.path == e.fact.split(":", 1)[1] for s in e.sources), e.fact
    docs_of_group: dict[int, set[str]] = {}
    for e in answerable:
        docs_of_group.setdefault(e.group, set()).add(e.fact.split(":", 1)[1].split("#", 1)[0])
    for e in abstaining:
        assert e.answer == prompts.ABSTAIN[e.lang]
        assert e.sources, "an abstaining example still has passages (the router only calls the model then)"
        assert not {s.path for s in e.sources} & docs_of_group.get(e.group, set())
    assert {e.lang for e in abstaining} == {"de", "en"}


def test_staff_replies_become_examples_only_when_the_help_pages_support_them(
    demo: tuple[KnowledgeBase, DataSet], data_dir: Path
) -> None:
    from bot.conversation_store import ConversationStore
    from bot.quality import AnswerChecker, kb_vocabulary
    from bot.tickets import TicketStore
    from ui.cli.tune import ticket_grounding

    kb, _ = demo
    store = ConversationStore(data_dir / "firstline.db")
    tickets = TicketStore(data_dir / "firstline.db", conversations=store)
    pairs = [
        ("when exactly do you take the money for my bill?",
         "Your invoice is created on the 1st of each month and the amount is collected by SEPA direct debit "
         "on the 10th. If the 10th falls on a weekend, the debit takes place on the next bank working day."),
        ("I was charged twice for March, please fix it",
         "I have refunded 23.50 EUR to your card ending 4242 today; it shows in three to five days."),
        ("still open, not answered yet", ""),
    ]  # fmt: skip
    for n, (question, reply) in enumerate(pairs):
        store.ensure(f"c{n}")
        ticket = tickets.open(f"c{n}", reason="customer_request", lang="en", history=[], text=question)
        if reply:
            tickets.reply(ticket.id, "anna", reply)
            tickets.resolve(ticket.id, "anna")
    checker = AnswerChecker(kb.embedder, kb_vocabulary(kb))
    ks = KnowledgeSettings()
    data = build_dataset(kb, retriever(kb, ks.passages, ks.min_relevance), tickets=tickets,
                         grounding=ticket_grounding(checker), heldout_share=0.2, seed=13)  # fmt: skip
    from_tickets = [e for e in data.examples if e.kind == "ticket"]
    assert {e.question for e in from_tickets} == {pairs[0][0]}
    assert all(e.answer == pairs[0][1] for e in from_tickets if e.answerable)
    assert data.skipped["ticket_reply_not_supported"] == 1
    without = build_dataset(kb, retriever(kb, ks.passages, ks.min_relevance), tickets=tickets, heldout_share=0.2)
    assert not [e for e in without.examples if e.kind == "ticket"] and without.skipped["ticket_without_checker"] == 2
    tickets.close()
    store.close()


def test_the_snapshot_hash_names_the_data(demo: tuple[KnowledgeBase, DataSet]) -> None:
    kb, data = demo
    ks = KnowledgeSettings()
    again = build_dataset(kb, retriever(kb, ks.passages, ks.min_relevance), heldout_share=0.2, seed=13)
    assert again.snapshot_hash() == data.snapshot_hash()
    other = build_dataset(kb, retriever(kb, ks.passages, ks.min_relevance), heldout_share=0.2, seed=14)
    assert other.snapshot_hash() != data.snapshot_hash()


def test_heldout_questions_are_an_eval_question_file(demo: tuple[KnowledgeBase, DataSet], tmp_path: Path) -> None:
    from bot.evaluation import load_questions

    _, data = demo
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(e.question_row(), ensure_ascii=False) + "\n" for e in data.heldout))
    questions = load_questions(path)
    assert len(questions) == len(data.heldout)
    assert all(q.should_escalate is False for q in questions)
    assert sum(1 for q in questions if q.expected_source) == sum(1 for e in data.heldout if e.answerable)


def test_opening_keeps_sentences_and_list_items_whole() -> None:
    text = "1. Open the portal.\n2. Click the link at the bottom.\n3. Enter 4.99 € as the amount. Then wait."
    assert opening(text, limit=60) == "1. Open the portal.\n2. Click the link at the bottom."
    assert (
        opening(text, limit=90)
        == "1. Open the portal.\n2. Click the link at the bottom.\n3. Enter 4.99 € as the amount."
    )
    assert opening("A short one. Another one here.", limit=20) == "A short one."


# -- the gate -----------------------------------------------------------------------------------------------
BASE_FIGURES = {"reference_f1": 0.30, "grounded": 0.60, "garbled_rate": 0.08, "garbled_rate_de": 0.12,
                "abstention": 0.5, "false_abstention": 0.1, "invented_facts": 3}  # fmt: skip


def test_compare_wants_better_reference_agreement_and_no_regression() -> None:
    better = {**BASE_FIGURES, "reference_f1": 0.41, "garbled_rate_de": 0.04, "invented_facts": 1}
    assert gate.compare(better, BASE_FIGURES).better
    assert not gate.compare(BASE_FIGURES, BASE_FIGURES).better  # equal is not better
    assert not gate.compare(BASE_FIGURES, better).better
    worse_abstention = {**better, "abstention": 0.25}
    verdict = gate.compare(worse_abstention, BASE_FIGURES)
    assert not verdict.better and any("abstention" in r for r in verdict.reasons)
    more_invented = {**better, "invented_facts": 4}
    assert not gate.compare(more_invented, BASE_FIGURES).better
    assert not gate.compare({"reference_f1": None}, BASE_FIGURES).better


# -- the registry -------------------------------------------------------------------------------------------
def _record(registry: ModelRegistry, name: str, tuned: dict[str, Any], *, data_hash: str = "d1") -> ModelVersion:
    folder = registry.data_dir / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    adapter = folder / "adapter.gguf"
    adapter.write_bytes(b"GGUF" + name.encode() * 100)
    from models.loader import sha256_of

    return registry.record(ModelVersion(
        version=name, base_model="SmolLM2-135M-Instruct.Q4_1", model_id=f"SmolLM2-135M-Instruct.Q4_1+lora-{name}",
        base_path="/models/base.gguf", base_sha256="b" * 64, adapter_path=f"models/{name}/adapter.gguf",
        adapter_sha256=sha256_of(adapter), adapter_bytes=adapter.stat().st_size, data_hash=data_hash,
        metrics={"base": BASE_FIGURES, "tuned": tuned},
    ))  # fmt: skip


def _no_eval(*_: Any) -> dict[str, Any]:
    raise AssertionError("recorded figures suffice here")


@pytest.mark.stores
def test_activation_refuses_a_worse_version_unless_forced(data_dir: Path, database: Path | str) -> None:
    registry = ModelRegistry(database, data_dir)
    worse = {**BASE_FIGURES, "reference_f1": 0.25}
    _record(registry, "v1", worse)
    with pytest.raises(GateRefusedError, match="not better than base"):
        activate(registry, "v1", actor="ops", force=False, reason="", evaluate=_no_eval)
    assert registry.active_name() == BASE and registry.events() == []
    verdict = activate(registry, "v1", actor="ops", force=True, reason="trying it on staff", evaluate=_no_eval)
    assert not verdict.better and registry.active_name() == "v1"
    (event,) = registry.events()
    assert event["forced"] == 1 and event["actor"] == "ops" and "FORCED" in event["detail"]
    assert "trying it on staff" in event["detail"] and event["previous"] == BASE
    registry.close()


@pytest.mark.stores
def test_activate_rollback_and_versions_survive_a_restart(data_dir: Path, database: Path | str) -> None:
    db = database
    registry = ModelRegistry(db, data_dir)
    good = {**BASE_FIGURES, "reference_f1": 0.45, "garbled_rate_de": 0.05}
    better = {**BASE_FIGURES, "reference_f1": 0.50, "garbled_rate_de": 0.04}
    _record(registry, "v1", good)
    _record(registry, "v2", better)
    activate(registry, "v1", actor="ops", force=False, reason="", evaluate=_no_eval)
    # v2 saw the same data (same split): compared on recorded figures, no generation needed
    activate(registry, "v2", actor="ops", force=False, reason="", evaluate=_no_eval)
    with pytest.raises(RegistryError, match="already the active"):
        activate(registry, "v2", actor="ops", force=False, reason="", evaluate=_no_eval)
    registry.close()

    registry = ModelRegistry(db, data_dir)  # a restart
    assert registry.names() == ["v1", "v2"] and registry.active_name() == "v2"
    assert registry.get("v2").metrics["tuned"]["reference_f1"] == 0.50
    assert registry.rollback(actor="ops") == "v1"
    registry.close()
    registry = ModelRegistry(db, data_dir)
    assert registry.active_name() == "v1"
    assert registry.rollback(actor="ops") == BASE
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(actor="ops")
    rows = version_rows(registry)
    assert [r["version"] for r in rows] == [BASE, "v1", "v2"] and rows[0]["active"]
    registry.close()


def test_a_version_on_another_split_is_answered_there_once(data_dir: Path) -> None:
    registry = ModelRegistry(data_dir / "firstline.db")
    _record(registry, "v1", {**BASE_FIGURES, "reference_f1": 0.45}, data_hash="old")
    activate(registry, "v1", actor="ops", force=False, reason="", evaluate=_no_eval)
    _record(registry, "v2", {**BASE_FIGURES, "reference_f1": 0.50}, data_hash="new")
    (registry.data_dir / "models" / "v2" / "data.jsonl").write_text("")
    calls: list[str] = []

    def evaluate(adapter: Path | None, model_id: str, examples: Any) -> dict[str, Any]:
        calls.append(model_id)
        return {**BASE_FIGURES, "reference_f1": 0.47}

    verdict = activate(registry, "v2", actor="ops", force=False, reason="", evaluate=evaluate)
    assert verdict.better and calls == ["SmolLM2-135M-Instruct.Q4_1+lora-v1"]
    assert registry.get("v2").metrics["cross"]["v1"]["reference_f1"] == 0.47
    registry.close()


def test_the_serving_choice_refuses_a_changed_or_foreign_adapter(data_dir: Path) -> None:
    registry = ModelRegistry(data_dir / "firstline.db")
    version = _record(registry, "v1", {**BASE_FIGURES, "reference_f1": 0.45})
    base = Path("/models/base.gguf")
    assert serving_choice(registry, base, "b" * 64).adapter is None  # nothing activated: the base serves
    registry.activate("v1", actor="ops")
    chosen = serving_choice(registry, base, "b" * 64)
    assert chosen.adapter == registry.adapter_file(version) and chosen.model_id == version.model_id
    assert chosen.load_options() == {"lora_path": str(registry.adapter_file(version))}
    foreign = serving_choice(registry, base, "c" * 64)
    assert foreign.adapter is None and "another base model" in foreign.problem
    assert serving_choice(registry, Path("/elsewhere.gguf"), "skip").adapter is None
    registry.adapter_file(version).write_bytes(b"GGUF tampered")
    changed = serving_choice(registry, base, "b" * 64)
    assert changed.adapter is None and "changed after it was recorded" in changed.problem
    registry.close()


# -- the ledger's training route -----------------------------------------------------------------------------
@pytest.mark.stores
def test_training_is_its_own_route_in_reports_but_not_in_budgets_or_projections(
    data_dir: Path, database: Path | str
) -> None:
    from usage.budgets import BudgetGuard
    from usage.planning import project
    from usage.profiles import load_profiles
    from usage.reports import build_report, outcomes

    db = database
    ledger = Ledger(db, heartbeat=False)
    rid = ledger.start(conversation_id="training:v1", route="training", model_id="base+lora-v1")
    row = ledger.finish(rid, measurement=Measurement(training_s=600.0, model_id="base+lora-v1", device="CPU"))
    assert row["route"] == "training" and row["compute_s"] == pytest.approx(600.0)
    assert row["training_s"] == pytest.approx(600.0) and row["cost_micros"] > 0
    chat = ledger.start(conversation_id="c1", route="model")
    ledger.finish(chat, measurement=Measurement(prefill_s=1.0, decode_s=2.0, model_id="base+lora-v1"))
    ledger.close()
    now = utcnow()
    book = load_profiles(data_dir, database=db)
    report = build_report(db, book.active_profile, by="route", since=now - timedelta(hours=1),
                          until=now + timedelta(minutes=1))  # fmt: skip
    by_route = {r.key: r for r in report.rows}
    assert set(by_route) == {"training", "model"}
    assert float(by_route["training"].compute_s) == pytest.approx(600.0)
    per_model = build_report(db, book.active_profile, by="model", since=now - timedelta(hours=1),
                             until=now + timedelta(minutes=1))  # fmt: skip
    assert [r.key for r in per_model.rows] == ["base+lora-v1"]
    guard = BudgetGuard(db, book, profile=book.active_profile.name)
    assert float(guard.status().binding.spent) < 1.0  # 3 s of chat, not 600 s of training
    guard.close()
    projection = project(db, book, days=1)
    assert projection.requests == 1 and float(projection.compute_s) == pytest.approx(3.0)
    found = outcomes(db, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert found is not None and found.source == "ledger"
    assert found.conversations == 1  # the chat; the tune is no conversation


@pytest.mark.stores
def test_retention_keeps_the_name_of_a_training_row(database: Path | str) -> None:
    from bot.conversation_store import ConversationStore
    from bot.housekeeping import purge

    db = database
    ConversationStore(db).close()
    ledger = Ledger(db, heartbeat=False)
    for conversation, route in (("training:v1", "training"), ("c-old", "model")):
        ledger.finish(ledger.start(conversation_id=conversation, route=route), measurement=Measurement(decode_s=1.0))
    ledger.close()
    purge(db, 1, now=utcnow() + timedelta(days=30))
    ledger = Ledger(db, heartbeat=False)
    try:
        names = {r["route"]: r["conversation_id"] for r in ledger.rows()}
    finally:
        ledger.close()
    assert names["training"] == "training:v1" and names["model"] != "c-old"


# -- the command line -------------------------------------------------------------------------------------------
def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ui.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip


def test_models_commands_on_a_fresh_data_directory(data_dir: Path) -> None:
    listed = _cli(data_dir, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (base,) = json.loads(listed.stdout)["models"]
    assert base["version"] == "base" and base["active"] is True
    missing = _cli(data_dir, "models", "activate", "v9")
    assert missing.returncode == 2 and "unknown model version 'v9'" in missing.stderr
    assert "Traceback" not in missing.stderr
    nothing = _cli(data_dir, "models", "rollback")
    assert nothing.returncode == 2 and "nothing to roll back" in nothing.stderr
