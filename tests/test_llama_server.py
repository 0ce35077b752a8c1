"""FIRSTLINE_ENGINE=llama-server: firstline starts, supervises and serves through a real llama-server.

The flag tests are fast; the rest (`real_model`) run the llama-server that scripts/build-llama-server.sh
builds from the llama.cpp source llama-cpp-python vendors (`make test` builds it, cached in
~/.cache/firstline) on the bundled model: parallel slots with overlapping requests and the engine's own
timings, grammar-constrained decisions, token counts equal to the in-process model's, a llama-server killed
mid-answer (row `error`, conversation escalated, the server restarted) and `firstline serve` on it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import escalation
from models.errors import ModelFileError
from models.llama_server import LlamaServerEngine, find_llama_server, llama_tool_path, server_argv
from models.settings import ModelSettings
from models.types import ChatMessage, Generation
from tests.test_model_failures import make_bot, rows

QUESTION = [
    ChatMessage("system", "You are a helpful support assistant."),
    ChatMessage("user", "How do I reset my router?"),
]


# -- the command line (fast) ----------------------------------------------------------------------------
def test_the_flags_are_explicit(tmp_path: Path) -> None:
    settings = ModelSettings(n_ctx=1024, n_threads=2, n_batch=256, n_gpu_layers=0, seed=7)
    argv = server_argv(Path("/bin/llama-server"), tmp_path / "m.gguf", settings, port=8123, slots=8, alias="m")
    joined = " ".join(argv)
    assert "-np 8" in joined and "-c 8192" in joined and "--no-kv-unified" in joined  # slots x per-slot context
    assert "--metrics" in argv and "--alias m" in joined and "--host 127.0.0.1 --port 8123" in joined
    assert "-t 2" in joined and "-b 256" in joined and "-ngl 0" in joined and "--seed 7" in joined
    assert "--lora" not in joined


def test_a_tuned_adapter_is_loaded_with_lora(tmp_path: Path) -> None:
    settings = ModelSettings()
    argv = server_argv(Path("/bin/x"), tmp_path / "m.gguf", settings, port=1, slots=1, alias="m",
                       load_options={"lora_path": "/models/adapter.gguf"})  # fmt: skip
    assert argv[argv.index("--lora") + 1] == "/models/adapter.gguf"
    with pytest.raises(Exception, match="cannot apply the load options"):
        server_argv(Path("/bin/x"), tmp_path / "m.gguf", settings, port=1, slots=1, alias="m",
                    load_options={"use_mmap": False})  # fmt: skip


def test_the_amx_guard_turns_repacking_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import cpu

    amx = cpu.read_cpuinfo("model name : Intel Xeon\nflags : avx512f amx_tile amx_int8 amx_bf16\n")
    monkeypatch.setattr(cpu, "read_cpuinfo", lambda text=None: amx)
    argv = server_argv(Path("/bin/x"), tmp_path / "m.gguf", ModelSettings(), port=1, slots=1, alias="m")
    assert "--no-repack" in argv
    forced = server_argv(Path("/bin/x"), tmp_path / "m.gguf", ModelSettings(cpu_extra_buffers="on"), port=1,
                         slots=1, alias="m")  # fmt: skip
    assert "--no-repack" not in forced


def test_a_missing_binary_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not an executable"):
        find_llama_server(tmp_path / "nope")


def test_a_server_started_by_a_restart_thread_lives_on_and_dies_with_firstline() -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: restarts run in short-lived threads, so the
    server must be forked from a long-lived one, and still end when the web process is killed."""
    import subprocess
    import sys

    code = (
        "import threading, time\n"
        "from models.llama_server import spawn\n"
        "got = []\n"
        "t = threading.Thread(target=lambda: got.append(spawn(['sleep', '60'])))\n"
        "t.start(); t.join()\n"
        "print(got[0].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    assert _state(child) not in ("", "Z")  # alive although the thread that started it has ended
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _state(child) not in ("", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(child) in ("", "Z")  # ended with the killed parent


# -- the real llama-server -----------------------------------------------------------------------------
def _binary() -> Path:
    try:
        return find_llama_server()
    except ModelFileError:
        pytest.skip(f"llama-server is not built ({llama_tool_path('llama-server')}): run `make llama-server`")


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaServerEngine]:
    _binary()
    settings = ModelSettings(engine="llama-server", engine_slots=2, n_ctx=1024, n_threads=2, temperature=0.0,
                             max_tokens=24, engine_health_interval_s=0.2, worker_restart_backoff_s=0.2)  # fmt: skip
    model = LlamaServerEngine(settings)
    yield model
    model.close()


@pytest.mark.real_model
def test_two_slots_compute_at_once_and_report_their_own_timings(engine: LlamaServerEngine) -> None:
    results: list[Any] = []

    def ask(text: str) -> None:
        gen = engine.stream([QUESTION[0], ChatMessage("user", text)], max_tokens=24)
        results.append(("".join(gen), gen.usage))

    threads = [threading.Thread(target=ask, args=(q,)) for q in ("How do I reset my router?", "Where is my bill?")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2
    (a_text, a), (b_text, b) = results
    assert a_text and b_text and a is not None and b is not None
    for u in (a, b):
        assert u.engine == "llama-server" and u.replica == engine.replica.url and not u.estimated
        assert u.timings is not None and u.timings.source == "llama-server"
        assert u.timings.predicted_n == u.completion_tokens > 0
        assert (u.timings.prompt_n or 0) + (u.timings.cache_n or 0) == u.prompt_tokens > 0
        assert (u.timings.prompt_ms or 0) > 0 and (u.timings.predicted_ms or 0) > 0
        assert u.model_id == engine.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert a.sent_at < b.ended_at and b.sent_at < a.ended_at  # both were active at once: they shared steps


@pytest.mark.real_model
def test_counts_tokens_like_the_in_process_model(engine: LlamaServerEngine, real_model: Any) -> None:
    assert engine.count_tokens(QUESTION) == real_model.count_tokens(QUESTION)
    assert engine.n_ctx == 1024  # one slot's context


@pytest.mark.real_model
def test_a_grammar_constrains_the_decision(engine: LlamaServerEngine) -> None:
    assert engine.supports_grammar
    gen = engine.stream([ChatMessage("user", escalation.DECISION_PROMPT.format(text="I want a human now!"))],
                        max_tokens=escalation.DECISION_MAX_TOKENS, temperature=0.0,
                        grammar=escalation.DECISION_GRAMMAR)  # fmt: skip
    assert "".join(gen).strip() in ("answer", "escalate")


@pytest.mark.real_model
def test_metrics_and_readiness(engine: LlamaServerEngine) -> None:
    ready = engine.readiness()
    assert ready.ready and ready.replicas[0].slots == 2
    text = httpx.get(engine.replica.url + "/metrics", timeout=10).text
    assert "llamacpp:prompt_tokens_total" in text  # --metrics


class _FirstPiece:
    """The engine, with an event set when any answer's first piece arrives."""

    def __init__(self, inner: LlamaServerEngine) -> None:
        self.inner, self.started = inner, threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self, messages: list[ChatMessage], **kwargs: Any) -> Generation:
        return _Signalling(self.inner.stream(messages, **kwargs), self.started)


class _Signalling(Generation):
    def __init__(self, inner: Generation, started: threading.Event) -> None:
        self.inner, self.started = inner, started

    @property
    def usage(self) -> Any:  # type: ignore[override]
        return self.inner.usage

    def __next__(self) -> str:
        piece = next(self.inner)
        self.started.set()
        return piece

    def close(self) -> None:
        self.inner.close()


@pytest.mark.real_model
def test_a_killed_llama_server_fails_the_answer_escalates_and_comes_back(
    engine: LlamaServerEngine, data_dir: Path
) -> None:
    watched = _FirstPiece(engine)
    bot = make_bot(data_dir, watched)
    server = engine.server
    assert server is not None
    first_pid = server.pid

    def kill_mid_answer() -> None:
        if watched.started.wait(timeout=60):
            os.kill(first_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_answer)
    killer.start()
    reply = bot.handle_message("c-kill", "Explain in detail how to set up my new router, step by step.")
    killer.join()
    assert watched.started.is_set()
    assert reply.route == "human" and reply.reason == escalation.MODEL_FAILURE and reply.ticket_id
    status, error = rows(data_dir, "SELECT status, error FROM requests ORDER BY started_at DESC LIMIT 1")[0]
    assert status == "error" and engine.replica.url in error
    deadline = time.monotonic() + 60  # the supervisor starts a new llama-server, the prober puts it back
    while not (engine.readiness().ready and engine.server and engine.server.pid != first_pid):
        assert time.monotonic() < deadline, engine.readiness().detail
        time.sleep(0.1)
    again = make_bot(data_dir, engine).handle_message("c-after", "How do I reset my router?")
    assert again.route == "model" and again.text


@pytest.mark.real_model
def test_firstline_serve_chats_on_llama_server(live_server_factory: Any, data_dir: Path) -> None:
    _binary()
    from gradio_client import Client

    server = live_server_factory("llama", {"FIRSTLINE_ENGINE": "llama-server", "FIRSTLINE_ENGINE_SLOTS": "2",
                                           "FIRSTLINE_N_THREADS": "2", "FIRSTLINE_MAX_TOKENS": "24"})  # fmt: skip
    llama_pids = [p for p in _children(server.proc.pid) if "llama-server" in _cmdline(p)]
    assert len(llama_pids) == 1
    client = Client(server.url + "/chat/", verbose=False)
    result = client.predict("Explain how I can make my home Wi-Fi faster.", [], "en", api_name="/chat")
    history = result[1]
    assert history and history[-1]["role"] == "assistant" and str(history[-1]["content"]).strip()
    conn = sqlite3.connect(data_dir / "firstline.db")
    try:
        route, status, tokens = conn.execute(
            "SELECT route, status, completion_tokens FROM requests ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    assert status == "completed" and (route != "model" or tokens > 0)
    server.stop()
    deadline = time.monotonic() + 15  # llama-server ends with the web process
    while Path(f"/proc/{llama_pids[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{llama_pids[0]}").exists() or "Z" in _state(llama_pids[0])


def _children(pid: int) -> list[int]:
    from tests.conftest import child_pids

    return child_pids(pid)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
