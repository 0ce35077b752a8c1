"""The third-party question files: well formed, labelled as documented, pointing at real articles."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from bot.evaluation import load_questions, source_matches
from bot.kb.demo import DEMO_KB_DIR
from bot.types import Source

QUESTIONS = DEMO_KB_DIR / "questions"
ESCALATE = {"contact_human_agent", "complaint", "get_refund", "track_refund", "payment_issue"}
UNSCORED = {"contact_customer_service", "check_refund_policy"}


def _rows(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (QUESTIONS / name).read_text(encoding="utf-8").splitlines() if line]


def _known_sources() -> set[str]:
    names = {p.name.casefold() for p in (DEMO_KB_DIR / "articles").rglob("*.md")}
    for line in (DEMO_KB_DIR / "faq" / "faq.jsonl").read_text(encoding="utf-8").splitlines():
        names.add(json.loads(line)["question"].casefold())
    with (DEMO_KB_DIR / "faq" / "faq_extra.csv").open(encoding="utf-8", newline="") as fh:
        names |= {row["question"].casefold() for row in csv.DictReader(fh)}
    return names


@pytest.mark.parametrize("name", ["thirdparty-dev.jsonl", "thirdparty-test.jsonl"])
def test_split_files_are_labelled_as_documented(name: str) -> None:
    rows = _rows(name)
    assert len(rows) == 640 and len(load_questions(QUESTIONS / name)) == 640
    intents = Counter(str(r["intent"]) for r in rows)
    assert intents.pop("out_of_scope") == 100 and len(intents) == 27 and set(intents.values()) == {20}
    known = _known_sources()
    for r in rows:
        intent = r["intent"]
        assert r["lang"] == "en" and r["origin"] in ("bitext", "clinc150-oos")
        assert r.get("should_escalate") == (None if intent in UNSCORED else intent in ESCALATE), r
        for want in str(r.get("expected_source", "")).split("|"):
            assert not want or want.casefold() in known, want
        if r.get("expected_source"):
            assert r.get("should_escalate") is not True and r.get("answerable") is not False
    retrieval = sum(1 for r in rows if r.get("expected_source"))
    assert retrieval == 160


def test_the_splits_share_no_request() -> None:
    dev = {str(r["question"]).casefold() for r in _rows("thirdparty-dev.jsonl")}
    test = {str(r["question"]).casefold() for r in _rows("thirdparty-test.jsonl")}
    assert not dev & test


def test_licences_travel_with_the_derived_files() -> None:
    for licence in ("LICENSE-bitext-CDLA-Sharing-1.0.txt", "LICENSE-clinc150-CC-BY-3.0.txt"):
        assert (QUESTIONS / licence).stat().st_size > 10_000
    readme = (QUESTIONS / "README.md").read_text(encoding="utf-8")
    assert "Community Data" in readme and "Creative Commons Attribution 3.0" in readme


def test_an_expected_source_may_name_alternatives() -> None:
    source = Source("Cancelling your contract", "articles/en/contract/cancel-contract.md", 0.9)
    assert source_matches("contract-term-notice-period.md|cancel-contract.md", source)
    assert source_matches("Cancelling your contract", source)
    assert not source_matches("contract-term-notice-period.md|moving-house.md", source)
