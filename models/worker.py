"""The model worker process: `python -m models.worker --fd-in R --fd-out W` (started by models.supervisor).

llama.cpp runs here, not in the web process, so a native crash (a segfault in a CPU kernel, a bad GGUF, an
out-of-memory abort) ends this process only; the web process sees end of stream, fails the request in flight
with the cause and starts a new worker. The worker:

1. reads its config (the model settings, extra load options such as `lora_path`, the backend),
2. loads the model (the llama.cpp model, or the scripted fake for tests) and runs a tiny greedy generation
   as a self-check, so a model that would crash on its first answer crashes here, not on a customer,
3. reports `ready` with what it loaded, then serves requests until its input closes.

Generation streams: pieces are pushed as they are sampled (no round trip per token), a `cancel` message
stops a generation at its next token, and the usage it reports is measured here: prefill and decode
exclude the time spent handing a piece over. Token counting is answered by the reader thread at once, even
while a generation runs (tokenizing does not touch the KV cache), as it was when the model ran in-process.

`python -m models.worker --probe` prints llama.cpp's build report and this CPU's facts as JSON and exits:
`firstline doctor` and `make install` run it in a child, since a build for another CPU dies on loading.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from models import cpu
from models.errors import GenerationError, ModelError
from models.settings import ModelSettings
from models.types import ChatMessage, ChatModel
from models.wire import Channel

log = logging.getLogger("models.worker")

SELF_CHECK_PROMPT = [ChatMessage("user", "Say OK.")]
SELF_CHECK_TOKENS = 4


@dataclass(frozen=True)
class WorkerConfig:
    """What the web process tells a new worker (sent as its first message)."""

    settings: dict[str, Any]
    backend: str = "llama"  # llama | scripted
    load_options: dict[str, Any] | None = None  # passed to llama_cpp.Llama as they are (e.g. lora_path)
    model_id: str | None = None  # what is served, e.g. a tuned version's name (default: the file name)
    self_check: bool = True
    scripted_seconds_per_token: float = 0.0  # the scripted fake's pace (tests that kill a worker mid-answer)
    replica: str | None = None  # Usage.replica: the web process's timeline (the worker's pid changes on restart)


def build_model(config: WorkerConfig) -> ChatModel:
    """The model this worker serves."""
    settings = ModelSettings(**config.settings)
    if config.backend == "scripted":
        from models.fake import ScriptedChatModel

        return ScriptedChatModel(
            context_size=settings.n_ctx,
            seconds_per_token=config.scripted_seconds_per_token,
            model_name=config.model_id or "scripted-fake",
            replica=config.replica or "",
        )
    from models.llama import LlamaChatModel

    return LlamaChatModel(
        settings,
        load_options=config.load_options,
        model_id=config.model_id,
        compute_thread=False,
        replica=config.replica,
    )


def describe(model: ChatModel, load_s: float, check_s: float) -> dict[str, Any]:
    """The `ready` payload: what the web process needs to know about the loaded model."""
    decision = getattr(model, "buffer_decision", None)
    return {
        "pid": os.getpid(),
        "model_id": model.model_id,
        "device": model.device,
        "n_ctx": model.n_ctx,
        "load_s": load_s,
        "self_check_s": check_s,
        "buffers": dict(getattr(model, "buffers", {}) or {}),
        "use_extra_bufts": getattr(decision, "use_extra_bufts", None),
        "extra_buffers_reason": getattr(decision, "reason", ""),
        "system_info": getattr(model, "system_info", ""),
        "load_kwargs": {k: v for k, v in (getattr(model, "load_kwargs", {}) or {}).items() if _plain(v)},
        "omp": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))},
    }


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class Worker:
    """Serves one loaded model over a Channel until the web process goes away or says shutdown."""

    def __init__(self, channel: Channel, model: ChatModel) -> None:
        self.channel = channel
        self.model = model
        self.jobs: queue.SimpleQueue[tuple[str, int, Any] | None] = queue.SimpleQueue()
        self.cancelled: set[int] = set()
        self._cancel_lock = threading.Lock()

    def read_loop(self) -> None:
        """Reader thread: answers quick requests itself, queues generations for the main thread."""
        while True:
            try:
                message = self.channel.recv()
            except (OSError, ValueError):
                message = None
            if message is None:
                # the web process is gone (closed its end, or was killed): nothing left to serve
                os._exit(0)
            kind, rid, payload = message
            if kind == "cancel":
                with self._cancel_lock:
                    self.cancelled.add(rid)
            elif kind == "count":
                self._reply(rid, self.model.count_tokens, payload)
            else:
                self.jobs.put(message)
                if kind == "shutdown":
                    return

    def serve(self) -> None:
        """Main thread: run generations (and cache resets) in order."""
        while (job := self.jobs.get()) is not None:
            kind, rid, payload = job
            if kind == "stream":
                self._stream(rid, payload)
            elif kind == "reset_cache":
                self._reply(rid, self._reset_cache)
            elif kind == "shutdown":
                break
        close = getattr(self.model, "close", None)
        if callable(close):
            close()

    def _is_cancelled(self, rid: int) -> bool:
        with self._cancel_lock:
            if rid in self.cancelled:
                self.cancelled.discard(rid)
                return True
            return False

    def _stream(self, rid: int, payload: dict[str, Any]) -> None:
        gen = self.model.stream(
            payload["messages"],
            max_tokens=payload.get("max_tokens"),
            temperature=payload.get("temperature"),
            grammar=payload.get("grammar"),
        )
        try:
            for piece in gen:
                self.channel.send("piece", rid, piece)
                if self._is_cancelled(rid):
                    break
        except ModelError as exc:
            gen.close()
            self.channel.send("error", rid, {"type": type(exc).__name__, "message": str(exc), "usage": gen.usage})
            return
        except Exception as exc:  # not one of ours: still a failed generation, and the worker goes on
            log.exception("generation failed")
            gen.close()
            message = f"generation failed: {type(exc).__name__}: {exc}"
            self.channel.send("error", rid, {"type": "GenerationError", "message": message, "usage": gen.usage})
            return
        gen.close()
        with self._cancel_lock:
            self.cancelled.discard(rid)
        self.channel.send("done", rid, gen.usage)

    def _reset_cache(self) -> None:
        reset = getattr(self.model, "reset_cache", None)
        if callable(reset):
            reset()

    def _reply(self, rid: int, call: Any, *args: Any) -> None:
        try:
            result = call(*args)
        except Exception as exc:
            self.channel.send("error", rid, {"type": type(exc).__name__, "message": str(exc), "usage": None})
            return
        self.channel.send("result", rid, result)


def self_check(model: ChatModel) -> float:
    """A tiny greedy generation: a model that crashes on its first answer crashes here. Returns its seconds."""
    t0 = time.perf_counter()
    gen = model.stream(SELF_CHECK_PROMPT, max_tokens=SELF_CHECK_TOKENS, temperature=0.0)
    try:
        for _ in gen:
            pass
    finally:
        gen.close()
    if gen.usage is None or gen.usage.finish_reason == "error":
        raise GenerationError("the self-check generation produced no usage")
    reset = getattr(model, "reset_cache", None)
    if callable(reset):
        reset()  # the first customer starts from a clean cache
    return time.perf_counter() - t0


def probe() -> dict[str, Any]:
    """llama.cpp's build report and this CPU's facts (loads the native library: run it in a child)."""
    from models import loader

    info = loader.system_info()
    features = cpu.build_features(info)
    facts = cpu.read_cpuinfo()
    decision = cpu.extra_buffers(ModelSettings().cpu_extra_buffers, facts, features)
    return {
        "system_info": info,
        "cpu_model": facts.model,
        "cpu_amx": facts.has_amx,
        "build_features": sorted(features),
        "missing_instructions": cpu.missing_instructions(features, facts),
        "use_extra_bufts": decision.use_extra_bufts,
        "extra_buffers_reason": decision.reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--fd-in", type=int, help="pipe to read requests from")
    parser.add_argument("--fd-out", type=int, help="pipe to write replies to")
    parser.add_argument("--probe", action="store_true", help="print the build and CPU report as JSON and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.probe:
        print(json.dumps(probe()))
        return 0
    if args.fd_in is None or args.fd_out is None:
        parser.error("--fd-in and --fd-out are required (the worker is started by the web process)")
    channel = Channel(args.fd_in, args.fd_out)
    first = channel.recv()
    if first is None or first[0] != "config":
        return 2
    config: WorkerConfig = first[2]
    t0 = time.perf_counter()
    try:
        model = build_model(config)
        load_s = time.perf_counter() - t0
        check_s = self_check(model) if config.self_check else 0.0
    except Exception as exc:  # a load that fails cleanly (bad file, checksum): say why, then exit
        channel.send("load_failed", 0, {"type": type(exc).__name__, "message": str(exc)})
        return 3
    worker = Worker(channel, model)
    reader = threading.Thread(target=worker.read_loop, name="worker-reader", daemon=True)
    reader.start()
    channel.send("ready", 0, describe(model, load_s, check_s))
    worker.serve()
    return 0


if __name__ == "__main__":  # pragma: no cover - the process entry point
    sys.exit(main())
