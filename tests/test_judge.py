"""The optional LLM judge (`firstline eval --judge URL`) against a small local OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.judge import Judge, JudgeError, parse_verdict
from bot.types import Source

ROOT = Path(__file__).resolve().parent.parent


class FakeOpenAI(BaseHTTPRequestHandler):
    """GET /v1/models and POST /v1/chat/completions, judging like a (very literal) grader: a statement is
    supported when all its longer words occur in the passages; relevance is word overlap with the question."""

    requests: list[dict[str, Any]] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "judge-7b", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(request)
        user = request["messages"][-1]["content"]
        question = user.split("Question:\n", 1)[1].split("\n\nPassages:\n", 1)[0]
        passages, answer = user.split("\n\nPassages:\n", 1)[1].split("\n\nAnswer:\n", 1)
        known = set(re.findall(r"\w+", passages.lower()))
        statements = [
            {"text": s, "supported": all(w in known for w in re.findall(r"\w{5,}", s.lower()))}
            for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s
        ]  # fmt: skip
        overlap = set(re.findall(r"\w{4,}", question.lower())) & set(re.findall(r"\w{4,}", answer.lower()))
        verdict = {"statements": statements, "relevance": 1.0 if overlap else 0.0, "reason": "fake"}
        content = "Here is my verdict:\n```json\n" + json.dumps(verdict) + "\n```"
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


@pytest.fixture
def fake_openai() -> Iterator[str]:
    FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


PASSAGE = Source("Payment methods", "payment-methods.md", 0.9, "The amount is debited on the 10th of the month.")


def test_judge_scores_faithfulness_and_relevance(fake_openai: str) -> None:
    judge = Judge(fake_openai)
    assert judge.model == "judge-7b"  # the endpoint's first model
    good = judge.score("When is the amount debited?", "The amount is debited on the 10th of the month.", [PASSAGE])
    assert (good.faithfulness, good.relevance, good.error) == (1.0, 1.0, "")
    bad = judge.score(
        "When is the amount debited?",
        "The amount is debited on the 10th. Nachrichta erfahrbar Auszuglängler.",
        [PASSAGE],
    )
    assert bad.faithfulness == 0.5 and bad.statements == 2
    sent = FakeOpenAI.requests[0]
    assert sent["model"] == "judge-7b" and sent["temperature"] == 0
    assert "Payment methods" in sent["messages"][1]["content"] and sent["messages"][0]["role"] == "system"
    judge.close()


def test_unreachable_judge_is_a_clear_error() -> None:
    with pytest.raises(JudgeError, match="cannot be reached"):
        Judge("http://127.0.0.1:9/v1")


def test_verdict_parsing_is_lenient_but_not_credulous() -> None:
    assert parse_verdict('{"statements": [], "relevance": 0.4}').faithfulness == 1.0  # nothing claimed
    assert parse_verdict("no json here").error
    assert parse_verdict('{"statements": [{"text": "x", "supported": true}], "relevance": "high"}').error
    clipped = parse_verdict('{"statements": [{"text": "x", "supported": "yes"}], "relevance": 7}')
    assert clipped.faithfulness == 0.0 and clipped.relevance == 1.0  # only a JSON true counts as supported


def test_eval_with_judge_end_to_end(tmp_path: Path, data_dir: Path, fake_openai: str) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "When is my bill debited?", "lang": "en", "expected_source": "payment-methods.md",
         "reference_answer": "We debit the invoice amount on the 10th of each month."},
        {"question": "I want to talk to a real person please", "lang": "en", "should_escalate": True},
    ]  # fmt: skip
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {"FIRSTLINE_EMBEDDINGS": "off", "FIRSTLINE_MODEL_BACKEND": "scripted", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "ui.cli", "eval", str(questions), "--json", "--judge", fake_openai,
         "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["judge_errors"] == 0 and payload["judge_faithfulness"] is not None
    judged = [r for r in payload["rows"] if "judge_faithfulness" in r and r["judge_faithfulness"] is not None]
    assert len(judged) == payload["answers_shown"] == len(FakeOpenAI.requests) == 1  # the escalation is not judged
    bad = subprocess.run(
        [sys.executable, "-m", "ui.cli", "eval", str(questions), "--judge", "http://127.0.0.1:9/v1",
         "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot be reached" in bad.stderr and bad.stdout == ""
