"""LlamaServerEngine: a local llama.cpp `llama-server` that firstline starts, supervises and serves through.

The binary is built by scripts/build-llama-server.sh from the very llama.cpp source the installed
llama-cpp-python vendors (same build flags, cached in ~/.cache/firstline/llama.cpp-<version>/), so the
in-process and the served engine run the same llama.cpp. Its flags are chosen here, explicitly:

* `-np SLOTS` parallel slots (continuous batching on), `-c SLOTS x n_ctx` with `--no-kv-unified`, so each
  slot has exactly FIRSTLINE_N_CTX tokens of context, as one in-process request does;
* `--metrics` (Prometheus text at /metrics), `--alias MODEL_ID` (the ledger's model id is the same as
  in-process: the file name), `--no-webui`, host 127.0.0.1 and a free port;
* the model settings: threads (`-t`), batch (`-b`), GPU layers (`-ngl`: FIRSTLINE_N_GPU_LAYERS=-1 is `all`;
  0 keeps llama-server's own default, `auto`, from offloading), flash attention, seed; the AMX guard
  (`--no-repack` where the CPU has AMX, as `use_extra_bufts=false` in-process); a fine-tuned adapter
  (`lora_path` load option) as `--lora`.

models.supervisor keeps it running: a crash (or kill) fails the requests in flight (a request that had not
received any text yet is retried once the server is back, within FIRSTLINE_ENGINE_UNAVAILABLE_S), the
replica is taken out of the pool, and a new server is started after the backoff. The server dies with the
web process (PR_SET_PDEATHSIG), so a killed firstline leaves no llama-server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from models import cpu, loader
from models.errors import ModelFileError, ModelUnavailableError
from models.served import ServedChatModel
from models.settings import ModelSettings
from models.supervisor import Supervisor, exit_cause
from models.types import Readiness

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 4
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "firstline"
BUILD_HINT = "build it with `make llama-server` (cached in ~/.cache/firstline) or set FIRSTLINE_LLAMA_SERVER_BIN"


def llama_tool_path(tool: str) -> Path:
    """Where scripts/build-llama-tool.sh puts `tool` (llama-bench, llama-server) for the installed llama-cpp-python."""
    try:
        pinned = version("llama-cpp-python")
    except PackageNotFoundError:
        pinned = "unknown"
    return CACHE_DIR / f"llama.cpp-{pinned}" / "build" / "bin" / tool


def find_llama_server(explicit: Path | None = None) -> Path:
    """The llama-server binary: FIRSTLINE_LLAMA_SERVER_BIN, else the build script's cache, else PATH."""
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise ModelFileError(f"FIRSTLINE_LLAMA_SERVER_BIN={explicit} is not an executable file")
    built = llama_tool_path("llama-server")
    if built.is_file() and os.access(built, os.X_OK):
        return built
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise ModelFileError(f"llama-server is not built (looked for {built} and on PATH); {BUILD_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_argv(
    binary: Path, model: Path, settings: ModelSettings, *, port: int, slots: int, alias: str,
    load_options: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """llama-server's command line for these settings (every flag firstline relies on is explicit)."""
    s = settings
    threads = s.n_threads or os.cpu_count() or 1
    layers = "all" if s.n_gpu_layers < 0 else str(s.n_gpu_layers)
    argv = [
        str(binary), "-m", str(model), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "-np", str(slots), "-c", str(slots * s.n_ctx), "--no-kv-unified", "-cb", "--metrics", "--no-webui",
        "-t", str(threads), "-tb", str(threads), "-b", str(s.n_batch), "-ngl", layers,
        "-fa", "on" if s.flash_attn else "off", "--seed", str(s.seed),
    ]  # fmt: skip
    if not cpu.extra_buffers(s.cpu_extra_buffers, cpu.read_cpuinfo(), _native_features()).use_extra_bufts:
        argv.append("--no-repack")  # the AMX guard (README, Requirements), as use_extra_bufts=false in-process
    options = dict(load_options or {})
    lora = options.pop("lora_path", None)
    scale = options.pop("lora_scale", None)
    if lora:
        argv += ["--lora-scaled", f"{lora}:{scale}"] if scale not in (None, 1, 1.0) else ["--lora", str(lora)]
    if options:
        raise ModelUnavailableError(
            f"the llama-server engine cannot apply the load options {sorted(options)} (only lora_path, lora_scale)"
        )
    return argv + shlex.split(s.llama_server_args)


def _native_features() -> frozenset[str]:
    """What a llama-server built with GGML_NATIVE on this CPU has: the CPU's own AMX flags."""
    return frozenset({"AMX_INT8"}) if cpu.read_cpuinfo().has_amx else frozenset()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Spawner:
    """Starts child processes from one long-lived thread. PR_SET_PDEATHSIG fires when the *thread* that
    forked the child ends, not the process: a llama-server started from a short-lived restart thread
    would be terminated as soon as that thread returned."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="llama-server-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn, reply = self._jobs.get()
            try:
                reply.put((True, fn()))
            except BaseException as exc:
                reply.put((False, exc))

    def run(self, fn: Callable[[], Any]) -> Any:
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((fn, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen(argv) from the spawner thread, the child dying with this process."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.run(lambda: subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs))  # type: ignore[no-any-return]


class LlamaServerProcess:
    """One started llama-server (models.supervisor.Child): ready once /health answers 200 and it generated."""

    def __init__(
        self, argv: list[str], url: str, log_path: Path, *, start_timeout_s: float,
        on_exit: Callable[[LlamaServerProcess], None] | None = None,
    ) -> None:  # fmt: skip
        self.url = url
        self.log_path = log_path
        self._cause: str | None = None
        self._lock = threading.Lock()
        self._on_exit = on_exit
        with log_path.open("ab") as fh:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
        try:
            self._await_ready(start_timeout_s)
        except BaseException:
            self.stop(timeout=5)
            raise
        self._watcher = threading.Thread(target=self._watch, name=f"llama-server-{self.pid}", daemon=True)
        self._watcher.start()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exit_cause(self) -> str | None:
        with self._lock:
            return self._cause or (exit_cause(self.proc.returncode) if self.proc.returncode is not None else None)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate it (SIGTERM, then SIGKILL)."""
        with self._lock:
            self._cause = self._cause or "stopped by firstline"
            self._on_exit = None  # a deliberate stop is no death to report
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 6) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(line.strip() for line in text[-lines:])
        return ""

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    cause = exit_cause(self.proc.returncode)
                    raise ModelUnavailableError(
                        f"llama-server exited while starting: {cause}; fix: {cpu.crash_fix(cause)}; "
                        f"log: {self.log_tail()}"
                    )
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ModelUnavailableError(
                        f"llama-server did not answer /health within {timeout:.0f}s "
                        f"(FIRSTLINE_WORKER_START_TIMEOUT_S); log: {self.log_tail()}"
                    )
                time.sleep(0.1)
            # a model that crashes on its first answer (a CPU kernel, AMX) crashes here, not on a customer
            body = {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 2, "temperature": 0}
            try:
                resp = client.post(self.url + "/v1/chat/completions", json=body, timeout=max(5.0, timeout))
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                time.sleep(0.2)  # let a crash be reaped, so its signal is the cause
                cause = exit_cause(self.proc.poll()) if self.proc.poll() is not None else str(exc)
                raise ModelUnavailableError(
                    f"llama-server failed its first generation: {cause}; fix: {cpu.crash_fix(cause)}; "
                    f"log: {self.log_tail()}"
                ) from exc

    def _watch(self) -> None:
        self.proc.wait()
        with self._lock:
            on_exit = self._on_exit
        if on_exit is not None:
            log.error("llama-server %s ended: %s; log: %s", self.pid, self.exit_cause, self.log_tail(3))
            on_exit(self)


class LlamaServerEngine(ServedChatModel):
    """The ChatModel served by a local, supervised llama-server with `engine_slots` parallel slots."""

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        load_options: dict[str, Any] | None = None,
        model_id: str | None = None,
    ) -> None:
        """Start llama-server and wait until it answered a first generation; raises ModelFileError for a bad
        model file or a missing binary, ModelUnavailableError when the server does not come up."""
        settings = settings or ModelSettings()
        path, sha = loader.resolve_model(settings.model_path, settings.model_sha256)
        loader.check_model_file(path, sha)
        self.binary = find_llama_server(settings.llama_server_bin)
        self.slots = settings.engine_slots or DEFAULT_SLOTS
        self.port = free_port()
        url = f"http://127.0.0.1:{self.port}"
        alias = model_id or path.name.removesuffix(".gguf")
        self.argv = server_argv(self.binary, path, settings, port=self.port, slots=self.slots, alias=alias,
                                load_options=load_options)  # fmt: skip
        self.log_path = Path(tempfile.gettempdir()) / f"firstline-llama-server-{os.getpid()}-{self.port}.log"
        self._start_timeout = settings.worker_start_timeout_s
        self.supervisor: Supervisor[LlamaServerProcess] = Supervisor(
            self._start_server, name="llama-server", backoff_s=settings.worker_restart_backoff_s
        )
        self.supervisor.get(timeout=self._start_timeout + 30)  # raises with the cause when it cannot start
        device = "CPU" if settings.n_gpu_layers == 0 else _device_from_log(self.log_path)
        super().__init__([url], settings, engine="llama-server", slots=self.slots, model_id=alias, device=device)
        self.replica = self.pool.replicas[0]

    def readiness(self) -> Readiness:
        """The pool's readiness, with the supervisor's cause while the server is down or restarting."""
        ready = self.pool.readiness()
        child = self.supervisor.current
        if ready.ready or (child is not None and child.alive):
            return ready
        cause = self.supervisor.last_error or "llama-server is not running"
        return Readiness(False, f"llama-server down: {cause}", ready.replicas, ready.queued)

    @property
    def server(self) -> LlamaServerProcess | None:
        """The running llama-server process (tests kill it to check the restart)."""
        return self.supervisor.current

    def close(self) -> None:
        super().close()
        self.supervisor.close()

    def _start_server(self) -> LlamaServerProcess:
        server = LlamaServerProcess(
            self.argv, f"http://127.0.0.1:{self.port}", self.log_path, start_timeout_s=self._start_timeout,
            on_exit=self._died,
        )  # fmt: skip
        log.info("llama-server %s ready at %s (%d slots): %s", server.pid, server.url, self.slots,
                 shlex.join(self.argv[1:]))  # fmt: skip
        return server

    def _died(self, server: LlamaServerProcess) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.mark_failed(pool.replicas[0], f"llama-server died: {server.exit_cause}")
        self.supervisor.died(server)


def _device_from_log(path: Path) -> str:
    """The GPU llama-server offloads to, from its log ('... using device CUDA0 (NVIDIA H200) ...')."""
    with contextlib.suppress(OSError):
        found = re.search(r"using device \w+ \(([^)]+)\)", path.read_text(errors="replace"))
        if found:
            return found.group(1)
    return "GPU"
