"""An optional LLM judge for `firstline eval --judge URL`: a larger model behind an OpenAI-compatible API.

RAG-evaluation style (as in RAGAS): the judge lists the factual statements of an answer and marks each
as supported or not by the passages the answer cites; *faithfulness* is the share supported. It also
rates *relevance*, how directly the answer addresses the question, from 0 to 1. One chat-completions
call per answer, temperature 0, the verdict as JSON in the reply. Nothing here is needed offline: the
default evaluation never calls it. A judge is only as good as its model; docs/quality.md says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bot.types import Source

SYSTEM = (
    "You grade the answers of a customer-support bot. You are given the customer's question, the "
    "knowledge-base passages the bot was allowed to use, and the bot's answer. 1) Split the answer into "
    "its factual statements (leave out greetings and offers to hand over to a person). For each, decide "
    "whether the passages support it. 2) Rate from 0 to 1 how directly and completely the answer "
    "addresses the question (0: not at all or not in the question's language, 1: fully). Reply with JSON "
    'only: {"statements": [{"text": "...", "supported": true}], "relevance": 0.0, "reason": "..."}'
)


class JudgeError(Exception):
    """The judge endpoint cannot be used (shown to the operator running `firstline eval`)."""


@dataclass(frozen=True)
class JudgeScore:
    """The judge's verdict on one answer; `error` instead of figures when the call or its reply failed."""

    faithfulness: float | None
    relevance: float | None
    statements: int = 0
    error: str = ""


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/chat/completions")] if url.endswith("/chat/completions") else url


def parse_verdict(content: str) -> JudgeScore:
    """A JudgeScore from the judge's reply text (the first JSON object in it)."""
    match = re.search(r"\{.*\}", content, re.S)
    if not match:
        return JudgeScore(None, None, error="no JSON in the judge's reply")
    try:
        data = json.loads(match.group(0))
        statements = [s for s in data.get("statements") or [] if isinstance(s, dict)]
        relevance = min(max(float(data.get("relevance")), 0.0), 1.0)
    except (ValueError, TypeError, AttributeError) as exc:
        return JudgeScore(None, None, error=f"unreadable verdict: {exc}")
    supported = sum(1 for s in statements if s.get("supported") is True)
    faithfulness = supported / len(statements) if statements else 1.0  # nothing claimed, nothing invented
    return JudgeScore(round(faithfulness, 4), round(relevance, 4), len(statements))


class Judge:
    """Scores answers through an OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = _endpoint(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)
        self.model = model or self._first_model(_base(url))

    def _first_model(self, base: str) -> str:
        """The endpoint's first model (GET /models); JudgeError when the endpoint cannot be reached."""
        try:
            response = self.client.get(base + "/models")
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge endpoint {base} cannot be reached: {exc}") from exc
        if response.status_code != 200:
            raise JudgeError(f"judge endpoint {base}/models answered HTTP {response.status_code}")
        try:
            models = response.json().get("data") or []
            return str(models[0]["id"])
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise JudgeError(f"judge endpoint {base}/models lists no model; pass --judge-model") from exc

    def messages(self, question: str, answer: str, passages: Sequence[Source]) -> list[dict[str, str]]:
        """The chat messages of one judgement."""
        context = "\n\n".join(f"[{n}] {p.title}\n{p.snippet}" for n, p in enumerate(passages, 1)) or "(none)"
        user = f"Question:\n{question}\n\nPassages:\n{context}\n\nAnswer:\n{answer}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def score(self, question: str, answer: str, passages: Sequence[Source]) -> JudgeScore:
        """The judge's verdict on one answer (errors are returned, not raised)."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(question, answer, passages),
            "temperature": 0,
            "max_tokens": 800,
        }
        try:
            response = self.client.post(self.url, json=payload)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, LookupError, TypeError) as exc:
            return JudgeScore(None, None, error=f"{type(exc).__name__}: {exc}"[:300])
        return parse_verdict(str(content))

    def close(self) -> None:
        self.client.close()
