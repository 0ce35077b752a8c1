"""Data protection: card numbers and IBANs are masked before they are stored or sent to the model, and
old conversations and tickets are deleted by `firstline housekeeping` while the ledger keeps its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import db_execute, db_rows, store_target

from bot.housekeeping import PSEUDONYM_PREFIX, HousekeepingSettings, purge
from bot.privacy import mask_payment_data
from models.fake import ScriptedChatModel
from usage.ledger import iso, utcnow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "masked", "gone"),
    [
        ("my card 4111 1111 1111 1111", "[card ****1111]", "4111 1111"),
        ("4111-1111-1111-1111", "[card ****1111]", "4111-1111"),
        ("4111111111111111", "[card ****1111]", "41111111"),
        ("Amex 3782 822463 10005.", "[card ****0005]", "822463"),
        ("card 4111 1111 1111 1111 123 (cvv)", "[card ****1111]", "1111 1111 1111"),  # card followed by CVV
        ("4111111111111111 12/27", "[card ****1111]", "41111111"),  # followed by the expiry
        ("4111.1111.1111.1111", "[card ****1111]", "4111.1111"),  # dots as separators
        ("Kartennummer:5500 0000 0000 0004, Ablauf 03/28", "[card ****0004]", "5500 0000"),
        ("IBAN DE89 3704 0044 0532 0130 00", "[IBAN DE**…3000]", "3704 0044"),
        ("use DE89 3704 0044 0532 0130 00 for the refund please", "[IBAN DE**…3000]", "0532 0130"),
        ("iban de89370400440532013000.", "[IBAN DE**…3000]", "370400440532"),
        ("IBAN: DE89370400440532013000, danke", "[IBAN DE**…3000]", "370400440532"),
        ("GB82 WEST 1234 5698 7654 32 is mine", "[IBAN GB**…5432]", "WEST 1234"),
        ("AT61 1904 3002 3457 3201 und CH9300762011623852957", "[IBAN CH**…2957]", "1904 3002"),
    ],
)
def test_payment_data_is_masked(text: str, masked: str, gone: str) -> None:
    out = mask_payment_data(text)
    assert masked in out and gone not in out, out


@pytest.mark.parametrize(
    "text",
    [
        "order 1234 5678 9012 3456",  # 16 digits, no Luhn: an order number, not a card
        "call +49 30 1234567 or 0800 123 456",
        "invoice 2026-11-28 amount 1.234,56 EUR",
        "customer number 12345678",
        "DE12 3456 7890 1234 5678 90",  # IBAN-shaped, wrong checksum
    ],
)
def test_other_numbers_stay_readable(text: str) -> None:
    assert mask_payment_data(text) == text


CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


def _all_text(db: Path | str) -> str:
    parts: list[str] = []
    for table in ("messages", "tickets", "ticket_events", "requests", "conversations"):
        for row in db_rows(db, f"SELECT * FROM {table} ORDER BY 1"):
            parts.extend(str(v) for v in row if v is not None)
    return "\n".join(parts)


def test_payment_data_is_masked_end_to_end_through_the_bot(data_dir: Path) -> None:
    from ui.app import build_services

    model = ScriptedChatModel()
    services = build_services(data_dir, model=model)
    try:
        bot = services.bot
        bot.handle_message("p1", f"How do I pay my bill with card {CARD} and account {IBAN}?")
        # a refund request goes to a human: transcript, summary and events
        reply = bot.handle_message("p2", f"I want a refund to {IBAN}, charged on {CARD}")
        assert reply.ticket_id
        bot.handle_message("p2", f"again: card {CARD.replace(' ', '-')} iban {IBAN.replace(' ', '')}")
        bot.request_human("p1")
        ticket = services.tickets.get(reply.ticket_id)
        staff_view = ticket.summary + json.dumps(ticket.transcript) + json.dumps(services.tickets.events(ticket.id))
    finally:
        services.close()
    stored = _all_text(data_dir / "firstline.db")
    for secret in (CARD, CARD.replace(" ", ""), CARD.replace(" ", "-"), IBAN, IBAN.replace(" ", "")):
        assert secret not in stored and secret not in staff_view
    assert "[card ****1111]" in stored and "[IBAN DE**…3000]" in stored
    prompts = "\n".join(m.content for call in model.history for m in call.messages)
    assert model.history and CARD not in prompts and IBAN not in prompts


def test_payment_data_is_masked_over_http(live_server_factory: Any, data_dir: Path) -> None:
    from gradio_client import Client

    server = live_server_factory("scripted")
    client = Client(server.url + "/chat/", verbose=False)
    _, history = client.predict(f"Wie zahle ich mit meiner Karte {CARD}?", [], "auto", api_name="/chat")
    shown = json.dumps(history, ensure_ascii=False)
    assert CARD not in shown and "[card ****1111]" in shown  # the customer sees what was stored
    assert CARD not in _all_text(data_dir / "firstline.db")


# -- retention -----------------------------------------------------------------------------------------------
def _age(db: Path | str, conversation_id: str, days: float) -> None:
    """Pretend a conversation (and its ticket and ledger rows) last changed `days` ago."""
    then = iso(utcnow() - timedelta(days=days))
    db_execute(
        db, "UPDATE conversations SET created_at = ?, updated_at = ? WHERE id = ?", [then, then, conversation_id]
    )
    db_execute(db, "UPDATE messages SET created_at = ? WHERE conversation_id = ?", [then, conversation_id])
    db_execute(db, "UPDATE tickets SET created_at = ?, updated_at = ? WHERE conversation_id = ?",
               [then, then, conversation_id])  # fmt: skip
    db_execute(db, "UPDATE requests SET started_at = ?, finished_at = ? WHERE conversation_id = ?",
               [then, then, conversation_id])  # fmt: skip


@pytest.fixture
def aged_data(data_dir: Path) -> dict[str, Any]:
    """Old and new conversations: plain, with a resolved ticket (and a FAQ suggestion), with an open one."""
    from bot.suggestions import SuggestionStore
    from ui.app import build_services

    services = build_services(data_dir, model=ScriptedChatModel())
    bot = services.bot
    try:
        bot.handle_message("old-plain", "How do I pay my bill? OLD-SECRET-1")
        bot.handle_message("old-resolved", "I want a refund please OLD-SECRET-2")
        resolved = services.tickets.active_for("old-resolved")
        assert resolved is not None
        services.tickets.note(resolved.id, "sam", "internal note OLD-SECRET-3")
        services.tickets.resolve(resolved.id, "sam")
        suggestions = SuggestionStore(store_target(data_dir), services.knowledge)
        suggestion = suggestions.propose("How do refunds work?", "Staff answer text.", "en", "sam", resolved.id)
        suggestions.close()
        bot.handle_message("old-open", "I want a refund, nobody answered OLD-BUT-ACTIVE")
        bot.handle_message("new-plain", "How do I reset my password? NEW-KEEP")
    finally:
        services.close()
    db = store_target(data_dir)
    for conv in ("old-plain", "old-resolved", "old-open"):
        _age(db, conv, 120)
    ledger = db_rows(
        db, "SELECT request_id, route, status, compute_s, cost_micros, prompt_tokens FROM requests ORDER BY request_id"
    )
    return {"db": db, "ticket": resolved.id, "suggestion": suggestion, "ledger": ledger}


def _ids(db: Path | str, sql: str) -> set[Any]:
    return {r[0] for r in db_rows(db, sql)}


@pytest.mark.stores
def test_housekeeping_dry_run_changes_nothing(aged_data: dict[str, Any]) -> None:
    db = aged_data["db"]
    before = _all_text(db)
    report = purge(db, 90, dry_run=True)
    assert report.dry_run and report.conversations == 2 and report.tickets == 1 and report.kept_active == 1
    assert report.messages >= 4 and report.ticket_events >= 3 and report.suggestions_unlinked == 1
    assert report.ledger_rows_pseudonymised >= 2
    assert _all_text(db) == before


@pytest.mark.stores
def test_housekeeping_deletes_old_conversations_and_keeps_the_ledger_figures(aged_data: dict[str, Any]) -> None:
    db = aged_data["db"]
    report = purge(db, 90)
    assert (report.conversations, report.tickets, report.kept_active) == (2, 1, 1)
    assert _ids(db, "SELECT id FROM conversations") == {"old-open", "new-plain"}
    assert _ids(db, "SELECT DISTINCT conversation_id FROM messages") == {"old-open", "new-plain"}
    assert _ids(db, "SELECT id FROM tickets") == _ids(db, "SELECT id FROM tickets WHERE conversation_id = 'old-open'")
    assert _ids(db, "SELECT ticket_id FROM ticket_events") <= _ids(db, "SELECT id FROM tickets")
    assert _ids(db, f"SELECT ticket_id FROM faq_suggestions WHERE id = {aged_data['suggestion']}") == {None}
    # the ledger: every row is still there with the same figures; purged conversations are pseudonyms
    ledger = db_rows(
        db, "SELECT request_id, route, status, compute_s, cost_micros, prompt_tokens FROM requests ORDER BY request_id"
    )
    convs = _ids(db, "SELECT conversation_id FROM requests")
    assert ledger == aged_data["ledger"]
    aliases = {c for c in convs if c.startswith(PSEUDONYM_PREFIX)}
    assert len(aliases) == 2 and convs - aliases == {"old-open", "new-plain"}
    if isinstance(db, Path):  # SQLite: nothing of the deleted text is left in the file or its write-ahead log
        assert _ids(db, "PRAGMA integrity_check") == {"ok"}
        raw = b"".join(p.read_bytes() for p in db.parent.glob("firstline.db*"))
        for secret in (b"OLD-SECRET-1", b"OLD-SECRET-2", b"OLD-SECRET-3"):
            assert secret not in raw
        assert b"NEW-KEEP" in raw and b"OLD-BUT-ACTIVE" in raw
    # a second run finds nothing more to do
    again = purge(db, 90)
    assert (again.conversations, again.tickets, again.ledger_rows_pseudonymised) == (0, 0, 0)


@pytest.mark.stores
def test_housekeeping_command(aged_data: dict[str, Any], data_dir: Path) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ui.cli", "housekeeping", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    dry = run("--dry-run", "--json", "--older-than-days", "30")
    assert dry.returncode == 0, dry.stderr
    payload = json.loads(dry.stdout)
    assert payload["dry_run"] is True and payload["conversations"] == 2 and payload["older_than_days"] == 30
    for key in ("cutoff", "messages", "tickets", "ticket_events", "ledger_rows_pseudonymised", "kept_active"):
        assert key in payload
    # the default comes from FIRSTLINE_RETENTION_DAYS
    keep = run("--json", env={"FIRSTLINE_RETENTION_DAYS": "365"})
    assert keep.returncode == 0 and json.loads(keep.stdout)["conversations"] == 0
    done = run()
    assert done.returncode == 0 and "deleted 2 conversation(s)" in done.stdout, done.stdout + done.stderr
    bad = run("--older-than-days", "0")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "positive" in bad.stderr
    assert HousekeepingSettings().retention_days == 90
