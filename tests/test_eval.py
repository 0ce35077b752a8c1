"""Evaluation: the scoring arithmetic on a hand-made set, question files, and `firstline eval` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.evaluation import (
    QuestionResult,
    escalation_scores,
    faq_tradeoff,
    faq_verdict,
    hit_at,
    is_answer,
    load_questions,
    report,
    source_matches,
    summarize,
)
from bot.types import Source
from usage.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


def src(path: str, title: str = "T") -> Source:
    return Source(title=title, path=path, score=0.5)


def result(**kw: object) -> QuestionResult:
    base: dict[str, object] = dict(
        question="q", lang="en", route="model", reason="", hit_at_1=None, hit_at_3=None, escalated=False,
        should_escalate=None, answered=True, latency_s=1.0, compute_s=0.5, cost_micros=0,
    )  # fmt: skip
    base.update(kw)
    return QuestionResult(**base)  # type: ignore[arg-type]


def test_source_matching_by_path_file_name_or_title() -> None:
    s = src("articles/en/billing/Refunds.md", "Getting a refund")
    assert source_matches("articles/en/billing/refunds.md", s)
    assert source_matches("REFUNDS.md", s)
    assert source_matches("getting a refund", s)
    assert not source_matches("billing/refunds.md", s)  # neither the full path nor its final component
    assert not source_matches("payments.md", s)
    faq = src("faq/faq.jsonl#12", "When is my bill debited?")
    assert source_matches("faq.jsonl", faq) and source_matches("When is my bill debited?", faq)


def test_hit_at_k() -> None:
    sources = [src("a/x.md"), src("a/y.md"), src("a/z.md"), src("a/w.md")]
    assert hit_at("x.md", sources, 1) is True
    assert hit_at("z.md", sources, 1) is False and hit_at("z.md", sources, 3) is True
    assert hit_at("w.md", sources, 3) is False
    assert hit_at(None, sources, 3) is None and hit_at("x.md", [], 3) is False


def test_escalation_precision_recall_and_empty_conventions() -> None:
    pairs = [(True, True), (True, False), (False, True), (False, False), (True, True), (True, None)]
    precision, recall = escalation_scores(pairs)  # tp=2, fp=1, fn=1; the unlabelled one is ignored
    assert precision == pytest.approx(2 / 3) and recall == pytest.approx(2 / 3)
    assert escalation_scores([(False, False), (False, True)]) == (1.0, 0.0)  # nothing escalated
    assert escalation_scores([(True, False)]) == (0.0, 1.0)  # nothing should have been
    assert escalation_scores([]) == (1.0, 1.0)


def test_percentile_interpolates() -> None:
    assert percentile([], 95) is None  # summarize reports 0.0 for no questions
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 21)], 95) == pytest.approx(19.05)


def test_answers_exclude_clarifications_escalations_and_dont_knows() -> None:
    assert is_answer("model", "Your bill is debited on the 10th.")
    assert is_answer("faq", "Sie können per Lastschrift zahlen.")
    assert not is_answer("human", "A colleague will take over.")
    assert not is_answer("faq", "Could you tell me more?", "clarify")
    assert not is_answer("model", "I'm sorry, I don't know that. Shall I ask a colleague?")
    assert not is_answer("model", "Dazu habe ich leider keine Informationen.")
    assert not is_answer("model", "   ")


def test_faq_tradeoff_table() -> None:
    items = [(0.95, True), (0.9, True), (0.85, False), (0.7, True), (None, None), (0.4, False)]
    rows = {r["threshold"]: r for r in faq_tradeoff(items, (0.5, 0.8, 0.9, 0.99))}
    assert rows[0.5]["faq_answers"] == 4 and rows[0.5]["faq_precision"] == pytest.approx(3 / 4)
    assert rows[0.8]["faq_answers"] == 3 and rows[0.8]["faq_precision"] == pytest.approx(2 / 3)
    assert rows[0.9] == {"threshold": 0.9, "faq_answers": 2, "faq_share": pytest.approx(2 / 6), "faq_precision": 1.0}
    assert rows[0.99]["faq_answers"] == 0 and rows[0.99]["faq_precision"] == 1.0


def test_faq_verdict_by_source_or_category() -> None:
    from bot.evaluation import Question

    cats = {"refunds.md": "billing"}
    q = Question("money back?", "en", "refunds.md", False)
    assert faq_verdict(q, src("faq/faq.jsonl#3", "How do refunds work?"), "billing", cats)
    assert not faq_verdict(q, src("faq/faq.jsonl#4"), "account", cats)
    assert faq_verdict(Question("x", "en", "How do refunds work?"), src("faq/f.csv#1", "How do refunds work?"), "", {})
    assert not faq_verdict(Question("weather?", "en"), src("faq/faq.jsonl#4"), "billing", cats)  # nothing answers it
    assert not faq_verdict(Question("human!", "en", "refunds.md", True), src("x#1"), "billing", cats)
    assert not faq_verdict(q, None, "", cats)


def test_summary_on_a_hand_made_set() -> None:
    results = [
        result(hit_at_1=True, hit_at_3=True, latency_s=1.0, compute_s=1.0, cost_micros=40_000),
        result(hit_at_1=False, hit_at_3=True, latency_s=2.0, compute_s=0.0, route="faq", cost_micros=100),
        result(route="human", escalated=True, should_escalate=True, answered=False, latency_s=3.0, compute_s=0.0),
        result(
            route="faq",
            reason="clarify",
            answered=False,
            should_escalate=False,
            latency_s=4.0,
            compute_s=0.5,
            lang="de",
        ),  # fmt: skip
    ]
    s = summarize(results)
    assert s["questions"] == 4
    assert s["retrieval_hit_at_1"] == 0.5 and s["retrieval_hit_at_3"] == 1.0 and s["retrieval_questions"] == 2
    assert (s["escalation_precision"], s["escalation_recall"]) == (1.0, 1.0)
    assert s["answered_rate"] == 0.5
    assert s["faq_rate"] == 0.25 and s["clarify_rate"] == 0.25
    assert s["mean_compute_s"] == pytest.approx(0.375)
    assert s["p95_latency_s"] == pytest.approx(3.85)
    assert s["cost_per_question"] == pytest.approx(0.010025)  # (40000 + 100) micro-EUR over 4 questions
    full = report(results)
    assert full["by_language"]["de"]["retrieval_hit_at_1"] is None
    assert len(full["rows"]) == 4 and {"question", "route", "hit_at_1", "latency_s", "compute_s"} <= set(
        full["rows"][0]
    )


def test_load_questions(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "a?", "lang": "de", "expected_source": "x.md", "should_escalate": false}\n\n'
        '{"question": "b?"}\n{"question": "c?", "lang": "fr"}\n'
    )
    qs = load_questions(path)
    assert [(q.question, q.lang, q.expected_source, q.should_escalate) for q in qs] == [
        ("a?", "de", "x.md", False), ("b?", None, None, None), ("c?", None, None, None)]  # fmt: skip
    assert len(load_questions(path, limit=1)) == 1
    path.write_text('{"question": "a?"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=":2:"):
        load_questions(path)


def test_eval_command_runs_the_chat_path(tmp_path: Path, data_dir: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    lines = [
        {"question": "When is my bill debited?", "lang": "en", "expected_source": "payment-methods.md",
         "should_escalate": False},
        {"question": "Wie kündige ich meinen Vertrag?", "lang": "de", "expected_source": "vertrag-kuendigen.md"},
        {"question": "I want to talk to a real person please", "lang": "en", "should_escalate": True},
        {"question": "write me a poem about the sea", "lang": "en"},
    ]  # fmt: skip
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "rows.csv"
    env = {"FIRSTLINE_EMBEDDINGS": "off", "FIRSTLINE_MODEL_BACKEND": "scripted", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "ui.cli", "eval", str(questions), "--json", "--faq-threshold", "0.8",
         "--out", str(out), "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)  # exactly one JSON document on stdout
    for key in ("questions", "retrieval_hit_at_1", "retrieval_hit_at_3", "escalation_precision",
                "escalation_recall", "answered_rate", "mean_compute_s", "p95_latency_s", "cost_per_question",
                "faq_rate", "rows", "faq_threshold_tradeoff"):  # fmt: skip
        assert key in payload, key
    assert payload["questions"] == 4 and payload["retrieval_questions"] == 2
    assert payload["retrieval_hit_at_3"] == 1.0  # both labelled questions find their article (demo KB)
    assert [r["route"] for r in payload["rows"]][2] == "human"
    assert payload["p95_latency_s"] > 0
    assert out.read_text().splitlines()[0].startswith("question,lang,route")
    import csv

    with out.open(newline="", encoding="utf-8") as fh:  # answers may span lines (quoted fields)
        assert len(list(csv.DictReader(fh))) == 4
    # every question ran in its own conversation and went through the ledger
    import sqlite3

    with sqlite3.connect(data_dir / "firstline.db") as conn:
        conversations = conn.execute("SELECT count(DISTINCT conversation_id) FROM requests").fetchone()[0]
    assert conversations == 4

    table = subprocess.run(
        [sys.executable, "-m", "ui.cli", "eval", str(questions), "--limit", "1", "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "retrieval_hit_at_1" in table.stdout and "faq threshold" in table.stdout
