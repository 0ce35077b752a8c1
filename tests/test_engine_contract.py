"""Contract tests: firstline's served-engine client against recorded llama-server and documented vLLM answers.

tests/engine_replay.py serves the exchanges in tests/data/engines/<flavour>/ over real HTTP: llama-server's
were recorded from the pinned build (scripts/record_engine_responses.py), vLLM's are written from vLLM's
source (tests/data/engines/vllm/README.md). The expected text, usage and timings are read from the same
recordings, so each test checks that the client takes from a response exactly what the server said.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from bot.escalation import DECISION_MAX_TOKENS
from models.errors import ContextOverflowError, GenerationError
from models.served import ServedChatModel, root_url
from models.settings import ModelSettings
from models.types import ChatMessage
from tests.engine_replay import ReplayServer, load_recordings, sse_events

FLAVOURS = ["llama-server", "vllm"]
QUESTION = [
    ChatMessage("system", "You are the support assistant of Lumen Networks. Answer briefly."),
    ChatMessage("user", "How do I reset my router to factory settings?"),
]


def _stream_facts(body: str) -> dict[str, Any]:
    """Text, usage, timings and finish reason as a client should read them from a recorded SSE body."""
    text, usage, timings, finish = [], {}, {}, None
    for event in sse_events(body):
        data = event.strip()[len("data:") :].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
        for choice in chunk.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
    return {"text": "".join(text), "usage": usage, "timings": timings, "finish": finish}


@pytest.fixture(params=FLAVOURS)
def replay(request: pytest.FixtureRequest) -> Iterator[ReplayServer]:
    server = ReplayServer(request.param).start()
    yield server
    server.stop()


def _model(server: ReplayServer, **overrides: Any) -> ServedChatModel:
    settings = ModelSettings(engine="openai", engine_urls=server.url + "/v1", engine_health_interval_s=0.2,
                             **overrides)  # fmt: skip
    return ServedChatModel(settings.url_list(), settings, start_prober=False)


def test_the_flavour_context_and_model_are_learnt_from_the_server(replay: ReplayServer) -> None:
    model = _model(replay)
    try:
        rec = load_recordings(replay.flavour)
        replica = model.pool.replicas[0]
        assert replica.flavour == replay.flavour
        assert model.readiness().ready
        listed = json.loads(rec["models"]["body"])["data"][0]
        assert model.model_id == listed["id"]
        if replay.flavour == "llama-server":
            props = json.loads(rec["props"]["body"])
            assert model.n_ctx == props["default_generation_settings"]["n_ctx"]
            assert replica.slots == props["total_slots"]  # the cap is the server's own slot count
        else:
            assert model.n_ctx == listed["max_model_len"]
            assert replica.slots == 16
        assert model.supports_grammar
    finally:
        model.close()


def test_a_streamed_answer_and_its_usage(replay: ReplayServer) -> None:
    facts = _stream_facts(load_recordings(replay.flavour)["chat_stream"]["body"])
    model = _model(replay)
    try:
        gen = model.stream(QUESTION, max_tokens=24, temperature=0.0)
        pieces = list(gen)
        usage = gen.usage
    finally:
        model.close()
    assert "".join(pieces) == facts["text"] and len(pieces) > 1  # streamed piece by piece
    assert usage is not None and not usage.estimated
    assert usage.prompt_tokens == facts["usage"]["prompt_tokens"]
    assert usage.completion_tokens == facts["usage"]["completion_tokens"]
    assert usage.cached_tokens == (facts["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert usage.finish_reason == facts["finish"]
    assert usage.engine == replay.flavour and usage.replica == root_url(replay.url)
    assert usage.sent_at is not None and usage.first_token_at is not None and usage.ended_at is not None
    assert usage.sent_at <= usage.first_token_at <= usage.ended_at
    assert usage.prefill_s >= 0 and usage.decode_s >= 0
    t = usage.timings
    assert t is not None
    if replay.flavour == "llama-server":  # the engine's own figures, raw
        assert t.source == "llama-server"
        assert (t.prompt_n, t.prompt_ms, t.predicted_n, t.predicted_ms, t.cache_n) == (
            facts["timings"]["prompt_n"], facts["timings"]["prompt_ms"], facts["timings"]["predicted_n"],
            facts["timings"]["predicted_ms"], facts["timings"]["cache_n"],
        )  # fmt: skip
    else:  # vLLM reports token counts only
        assert t.source == "openai-usage" and t.prompt_ms is None and t.predicted_ms is None
        assert t.prompt_n == facts["usage"]["prompt_tokens"]
    sent = replay.chat_requests()[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": m.role, "content": m.content} for m in QUESTION]
    if replay.flavour == "llama-server":
        assert sent["repeat_penalty"] == 1.1 and sent["cache_prompt"] is True and sent["top_k"] == 40
    else:
        assert sent["repetition_penalty"] == 1.1 and "repeat_penalty" not in sent


def test_an_answer_that_is_not_streamed(replay: ReplayServer) -> None:
    whole = json.loads(load_recordings(replay.flavour)["chat"]["body"])
    model = _model(replay)
    try:
        text, usage = model.complete(QUESTION, max_tokens=24, temperature=0.0)
    finally:
        model.close()
    assert text == whole["choices"][0]["message"]["content"]
    assert usage.prompt_tokens == whole["usage"]["prompt_tokens"]
    assert usage.completion_tokens == whole["usage"]["completion_tokens"]
    assert usage.first_token_at is None and usage.ended_at is not None  # one response: no first-token instant
    if replay.flavour == "llama-server":
        assert usage.timings is not None and usage.timings.predicted_ms == whole["timings"]["predicted_ms"]
    assert replay.chat_requests()[-1]["stream"] is False


def test_a_grammar_goes_in_each_flavour_s_field(replay: ReplayServer) -> None:
    grammar = 'root ::= "answer" | "escalate"'
    facts = _stream_facts(load_recordings(replay.flavour)["chat_grammar_stream"]["body"])
    model = _model(replay)
    try:
        text = "".join(model.stream([ChatMessage("user", "decide")], max_tokens=DECISION_MAX_TOKENS, grammar=grammar))
    finally:
        model.close()
    assert text == facts["text"] and text.strip() in ("answer", "escalate")
    sent = replay.chat_requests()[-1]
    if replay.flavour == "llama-server":
        assert sent["grammar"] == grammar
    else:
        assert sent["structured_outputs"] == {"grammar": grammar} and "grammar" not in sent


def test_tokens_are_counted_by_the_server(replay: ReplayServer) -> None:
    model = _model(replay)
    try:
        n = model.count_tokens(QUESTION)
        again = model.count_tokens(QUESTION)
    finally:
        model.close()
    rec = load_recordings(replay.flavour)
    if replay.flavour == "llama-server":
        assert n == len(json.loads(rec["tokenize"]["body"])["tokens"])
        paths = [r["_path"] for r in replay.requests]
        assert paths.count("/apply-template") == 1 and paths.count("/tokenize") == 1  # the second count is cached
        assert replay.requests[paths.index("/tokenize")]["add_special"] is True
    else:
        assert n == json.loads(rec["tokenize"]["body"])["count"]
        sent = next(r for r in replay.requests if r["_path"] == "/tokenize")
        assert sent["messages"][1]["content"] == QUESTION[1].content and sent["add_generation_prompt"] is True
    assert again == n


def test_a_prompt_too_long_is_a_context_overflow(replay: ReplayServer) -> None:
    replay.chat_stream = "chat_context_error"
    model = _model(replay)
    try:
        gen = model.stream(QUESTION)
        with pytest.raises(ContextOverflowError):
            next(gen)
    finally:
        model.close()
    assert gen.usage is not None and gen.usage.finish_reason == "error"
    assert len(replay.chat_requests()) == 1  # a bad request is not retried


def test_an_error_inside_the_stream_fails_the_generation() -> None:
    server = ReplayServer("vllm", chat="chat_stream_error").start()
    model = _model(server)
    try:
        gen = model.stream(QUESTION)
        with pytest.raises(GenerationError, match="EngineCore"):
            list(gen)
        assert gen.usage is not None and gen.usage.finish_reason == "error" and gen.usage.estimated
        assert model.pool.replicas[0].in_flight == 0  # its slot is given back
    finally:
        model.close()
        server.stop()


def test_a_plain_openai_server_gets_standard_fields_and_no_grammar() -> None:
    server = ReplayServer("vllm").start()
    del server.recordings["version"]  # neither /props nor /version: a plain OpenAI-compatible server
    model = _model(server)
    try:
        assert model.pool.replicas[0].flavour == "openai"
        assert not model.supports_grammar  # the bot's rules decide instead
        with pytest.raises(GenerationError, match="grammar"):
            next(model.stream(QUESTION, grammar='root ::= "a"'))
        "".join(model.stream(QUESTION))
        sent = server.chat_requests()[-1]
        assert not {"top_k", "min_p", "repeat_penalty", "repetition_penalty", "grammar"} & set(sent)
        assert model.count_tokens(QUESTION) > 0  # estimated: the server cannot count
    finally:
        model.close()
        server.stop()
