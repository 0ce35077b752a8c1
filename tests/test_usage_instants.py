"""Every model call reports where and when it computed (issue #16: the interface processor-sharing billing
builds on): the replica (timeline), firstline's wall-clock instants and, for served engines, the engine's
raw timings; the bot hands them to the ledger's Measurement; every model answers `readiness()`."""

from __future__ import annotations

import os
import socket
import time

from bot.conversation import measurement_of
from models.fake import ScriptedChatModel
from models.remote import WorkerChatModel
from models.settings import ModelSettings
from models.types import ChatMessage, EngineTimings, Usage, inprocess_replica, readiness

PROMPT = [ChatMessage("user", "How do I reset my router?")]


def test_the_in_process_model_reports_its_replica_and_instants() -> None:
    before = time.time()
    model = ScriptedChatModel(default_answer="Hold the reset button for ten seconds.", seconds_per_token=0.01)
    gen = model.stream(PROMPT)
    assert "".join(gen)
    u = gen.usage
    assert u is not None and u.engine == "scripted"
    assert u.replica == f"inprocess:{socket.gethostname()}:{os.getpid()}" == inprocess_replica()
    assert u.sent_at is not None and u.first_token_at is not None and u.ended_at is not None
    assert before <= u.sent_at <= u.first_token_at <= u.ended_at <= time.time()
    assert abs((u.ended_at - u.sent_at) - u.compute_s) < 0.05  # the same interval on the wall clock
    assert u.timings is None and not u.estimated and u.attempt == 1


def test_a_worker_reports_the_web_process_as_its_replica() -> None:
    model = WorkerChatModel(ModelSettings(), backend="scripted", scripted_seconds_per_token=0.001)
    try:
        gen = model.stream(PROMPT)
        "".join(gen)
        assert readiness(model).ready and str(model.supervisor.current.pid) in readiness(model).detail  # type: ignore[union-attr]
    finally:
        model.close()
    u = gen.usage
    assert u is not None
    assert u.replica == inprocess_replica()  # the web process, not the worker's pid (it changes on restart)
    assert u.sent_at is not None and u.ended_at is not None and u.sent_at <= u.ended_at
    assert not readiness(model).ready  # stopped: not ready, with the cause


def test_the_measurement_carries_the_engine_figures_to_the_ledger() -> None:
    u = Usage(
        prompt_tokens=120, completion_tokens=40, queue_wait_s=0.5, prefill_s=0.2, decode_s=1.0, model_id="m",
        device="CPU", cached_tokens=64, engine="llama-server", replica="http://10.0.0.5:8080", sent_at=100.0,
        first_token_at=100.2, ended_at=101.2, timings=EngineTimings(56, 180.5, 40, 950.25, 64, "llama-server"),
    )  # fmt: skip
    m = measurement_of(u, retrieval_s=0.03)
    assert (m.engine, m.replica, m.sent_at, m.first_token_at, m.ended_at) == (
        "llama-server", "http://10.0.0.5:8080", 100.0, 100.2, 101.2,
    )  # fmt: skip
    assert (m.engine_prompt_n, m.engine_prompt_ms, m.engine_predicted_n, m.engine_predicted_ms, m.engine_cache_n) == (
        56, 180.5, 40, 950.25, 64,
    )  # fmt: skip
    assert m.compute_s == 0.03 + 0.2 + 1.0 and not m.estimated
