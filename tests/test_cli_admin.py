"""The operator's command line (#15 item 16): whole help texts, --version, typed options with currency,
a readable report with an errors column, reads that write nothing, `users` and `tickets show`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ui.cli.docs import commands, help_text
from ui.cli.main import main
from usage.ledger import Ledger, Measurement


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, prog_name="firstline", terminal_width=100)


@pytest.mark.parametrize("width", [80, 100, 140])
def test_no_help_text_is_cut_off(width: int) -> None:
    from click.testing import CliRunner

    for path in commands(main):
        res = CliRunner().invoke(main, [*path, "--help"], prog_name="firstline", terminal_width=width)
        assert res.exit_code == 0, res.output
        body = res.output.split("\n", 1)[1]  # the usage line ends in "[ARGS]..." by design
        assert "..." not in body, f"firstline {' '.join(path)} --help at {width} columns:\n{res.output}"


def test_version() -> None:
    from importlib.metadata import version

    res = cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"firstline {version('firstline')}"


def test_cost_estimate_options_are_numbers_and_the_result_names_its_currency(data_dir: Path) -> None:
    text = help_text(main, ("cost", "estimate"))
    assert "TEXT" not in text and "NUMBER" in text
    example = ["--requests-per-hour", "100", "--seconds-per-request", "3", "--price-per-second", "0.0373",
               "--price-per-request", "0.0001", "--hours-per-day", "12", "--days-per-year", "250"]  # fmt: skip
    res = cli("cost", "estimate", *example)
    assert res.exit_code == 0, res.output
    assert re.search(r"cost per year\s+33,600\.00 EUR", res.output), res.output
    as_json = json.loads(cli("cost", "estimate", *example, "--json").output)
    assert as_json["currency"] == "EUR" and as_json["cost_per_year"] == "33600.000000"
    usd = cli("cost", "estimate", *example, "--currency", "USD")
    assert "33,600.00 USD" in usd.output
    assert list(data_dir.iterdir()) == []  # the calculator reads nothing and writes nothing


@pytest.mark.parametrize("command", [("report",), ("report", "--json"), ("cost", "project"), ("cost", "profiles"),
                                     ("cost", "budget"), ("tickets", "list"), ("users", "list")])  # fmt: skip
def test_reads_on_an_empty_data_directory_write_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli(*command, "--data-dir", str(empty))
    assert res.exit_code == 0, res.output
    assert list(empty.iterdir()) == [], f"firstline {' '.join(command)} wrote {list(empty.iterdir())}"
    missing = tmp_path / "missing"
    assert cli(*command, "--data-dir", str(missing)).exit_code == 0
    assert not missing.exists()


def seed_ledger(data_dir: Path) -> None:
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    for i in range(4):
        rid = ledger.start(conversation_id=f"c{i}", route="model", model_id="m")
        ledger.finish(rid, measurement=Measurement(prefill_s=0.5, decode_s=1.5))
    with pytest.raises(TimeoutError), ledger.track(conversation_id="c9", route="model") as req:
        req.measurement = Measurement(prefill_s=0.25, decode_s=0.75)
        raise TimeoutError("model timeout after 30s")
    ledger.close()


def test_report_table_has_an_errors_column_and_no_key_value_dump(data_dir: Path) -> None:
    seed_ledger(data_dir)
    res = cli("report", "--by", "route")
    assert res.exit_code == 0, res.output
    head, rule, model_row = res.output.splitlines()[:3]
    assert "errors" in head.split() and "failed_cost" in head.split()
    cells = dict(zip(head.split(), model_row.split(), strict=True))
    assert cells["route"] == "model" and cells["requests"] == "5" and cells["errors"] == "1"
    assert re.search(r"\b\w+=\S", res.output) is None, res.output  # no key=value dump
    assert "source conversations" not in res.output and "staff_minutes_source" not in res.output
    assert "Conversations:" in res.output or "conversations" in res.output.lower()
    as_json = json.loads(cli("report", "--by", "outcome", "--json").output)
    causes = {r["outcome"]: r["requests"] for r in as_json["rows"]}
    assert causes == {"completed": 4, "timeout": 1}
    assert as_json["totals"]["errors"] == 1 and float(as_json["totals"]["failed_cost"]) > 0


def _users(data_dir: Path) -> dict[str, Any]:
    res = cli("users", "list", "--json")
    assert res.exit_code == 0, res.output
    return {u["name"]: u for u in json.loads(res.output)["users"]}


def test_users_list_disable_enable_and_reset_password(data_dir: Path) -> None:
    from ui.auth import UserStore

    assert cli("users", "add", "sam", "--role", "staff", "--password-stdin", input="first password\n").exit_code == 0
    assert cli("users", "add", "ada", "--role", "admin", "--password-stdin", input="admin password\n").exit_code == 0
    listed = _users(data_dir)
    assert listed["sam"]["role"] == "staff" and listed["sam"]["disabled"] is False
    assert "password" not in json.dumps(listed)  # never a hash
    table = cli("users", "list").output
    assert "sam" in table and "admin" in table
    store = UserStore(data_dir / "firstline.db")
    token = store.login("sam", "first password", "t")
    assert store.session_user(token) is not None

    assert cli("users", "disable", "sam").exit_code == 0
    assert _users(data_dir)["sam"]["disabled"] is True
    assert store.session_user(token) is None  # a disabled login's sessions end at once
    with pytest.raises(Exception, match="wrong user name or password"):
        store.login("sam", "first password", "t2")
    assert cli("users", "enable", "sam").exit_code == 0

    res = cli("users", "reset-password", "sam", "--password-stdin", input="second password\n")
    assert res.exit_code == 0, res.output
    assert store.authenticate("sam", "first password") is None
    assert store.authenticate("sam", "second password") is not None
    short = cli("users", "reset-password", "sam", "--password-stdin", input="short\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    unknown = cli("users", "disable", "nobody")
    assert unknown.exit_code == 2 and "no user 'nobody'" in unknown.output
    store.close()


def test_tickets_show_prints_the_ticket_its_transcript_and_events(data_dir: Path, fake_model: Any) -> None:
    from ui.app import build_services

    services: Any = build_services(data_dir, model=fake_model, demo_kb=False)
    try:
        reply = services.bot.handle_message("conv-show-1", "I want to talk to a person please")
        ticket_id = reply.ticket_id
        assert ticket_id
        services.tickets.claim(ticket_id, "sam")
        services.tickets.reply(ticket_id, "sam", "Hello, I am Sam and I can help.")
    finally:
        services.close()
    res = cli("tickets", "show", ticket_id)
    assert res.exit_code == 0, res.output
    for text in (ticket_id, "claimed", "sam", "I want to talk to a person please", "Hello, I am Sam"):
        assert text in res.output
    payload = json.loads(cli("tickets", "show", ticket_id, "--json").output)
    assert payload["ticket"]["id"] == ticket_id and payload["ticket"]["status"] == "claimed"
    assert [e["kind"] for e in payload["events"]][:2] == ["opened", "claimed"]
    assert any("talk to a person" in m["content"] for m in payload["messages"])
    missing = cli("tickets", "show", "T-NOSUCH")
    assert missing.exit_code == 2 and "no ticket" in missing.output
