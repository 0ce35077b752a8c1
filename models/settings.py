"""Model settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """How the local GGUF model is loaded and sampled."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore", protected_namespaces=())

    model_path: Path | None = Field(
        None, description="Path to a GGUF model file. Default: the bundled SmolLM2-135M-Instruct (Q4_1)."
    )
    model_sha256: str | None = Field(
        None,
        description=(
            "Expected SHA-256 of the model file, checked before load. The bundled model's hash is built in; "
            "set 'skip' to disable the check for a custom model."
        ),
    )
    n_ctx: int = Field(
        2048,
        ge=256,
        description=(
            "Context window in tokens (prompt + answer) of one request; llama-server gets engine_slots x n_ctx "
            "(-c), one n_ctx per slot."
        ),
    )
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for llama.cpp (at most; see adaptive_threads). Default: all cores."
    )
    adaptive_threads: bool = Field(
        True,
        description=(
            "Use fewer llama.cpp threads while other processes keep cores busy (checked between tokens, every "
            "0.25 s): llama.cpp's threads wait for each other after every step, so one core taken by another "
            "process slowed a 2-thread decode 3.5x (and up to 20x in the field); with this it stays within "
            "1.4x. Idle, all n_threads are used (docs/performance.md)."
        ),
    )
    n_batch: int = Field(512, ge=8, description="Prompt-processing batch size in tokens.")
    n_gpu_layers: int = Field(
        0,
        description=(
            "Layers offloaded to the GPU (-1 = all). Needs llama-cpp-python built with CUDA "
            "(CMAKE_ARGS=-DGGML_CUDA=on); ignored on a CPU-only build."
        ),
    )
    flash_attn: bool = Field(
        True,
        description=(
            "Flash attention in llama.cpp (llama.cpp's own default is 'auto', llama-cpp-python's is off): "
            "measured about 10% faster prompt processing on a 2-core CPU (see docs/performance.md); false to compare."
        ),
    )
    cpu_extra_buffers: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "llama.cpp's extra CPU buffer types for the weights (repacking for faster Q4_0/Q4_K/IQ4_NL/Q8_0 "
            "kernels, AMX). auto: off only where the CPU and the llama.cpp build both have AMX, whose buffers "
            "crash llama.cpp (upstream #20824); on elsewhere. on/off force it."
        ),
    )
    prompt_cache_mb: int = Field(
        128,
        ge=0,
        description=(
            "Memory for saved KV-cache states of recent conversations (0 = off): a conversation whose "
            "turn follows another conversation's resumes from its saved state instead of re-reading its "
            "whole history."
        ),
    )
    idle_unload_s: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Unload the model after this many idle seconds and load it again on the next request "
            "(on-demand operation; load/unload periods are recorded for cost reports). 0 keeps it loaded."
        ),
    )
    model_worker: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Run the model in a supervised model worker process, so a native crash (a CPU-kernel segfault, a "
            "bad GGUF, an out-of-memory abort) fails one request and the worker is restarted, instead of "
            "ending the web process. auto: on for the llama.cpp model, off for the scripted test model; "
            "off loads the model inside the process (benchmarks, debugging)."
        ),
    )
    worker_start_timeout_s: float = Field(
        25.0,
        gt=0,
        description=(
            "Longest a model worker may take to load the model and finish its self-check generation before it "
            "counts as hung; `firstline serve` then exits within 30 s naming the cause (raise it for large models "
            "on slow disks)."
        ),
    )
    worker_stall_s: float = Field(
        120.0,
        gt=0,
        description="A model worker that makes no progress on a request for this long is killed and restarted.",
    )
    worker_restart_backoff_s: float = Field(
        0.5,
        ge=0,
        description="First delay before restarting a dead model worker; doubles while it keeps dying (up to 30 s).",
    )
    engine: Literal["inprocess", "llama-server", "openai"] = Field(
        "inprocess",
        description=(
            "Which engine generates: inprocess (llama-cpp-python in a supervised worker process, one request at "
            "a time), llama-server (firstline starts and supervises a local llama.cpp llama-server with "
            "engine_slots parallel slots and continuous batching; build it with scripts/build-llama-server.sh) "
            "or openai (the OpenAI-compatible servers in engine_urls: llama-server or vLLM replicas)."
        ),
    )
    engine_urls: str = Field(
        "",
        description=(
            "engine=openai: comma-separated base URLs of OpenAI-compatible servers, e.g. "
            "'http://10.0.0.5:8080/v1,http://10.0.0.6:8000/v1' (llama-server or vLLM; the /v1 suffix is optional)."
        ),
    )
    engine_slots: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests one replica computes at once (its in-flight cap). llama-server: its parallel slots "
            "(-np; default 4); engine=openai: default the slots a llama-server reports in /props, else 16."
        ),
    )
    engine_queue: int = Field(
        64,
        ge=0,
        description="Requests allowed to wait for a free replica slot; beyond that one fails at once (escalated).",
    )
    engine_queue_timeout_s: float = Field(
        120.0, gt=0, description="Longest a request waits for a free replica slot before it fails (escalated)."
    )
    engine_unavailable_s: float = Field(
        15.0,
        ge=0,
        description=(
            "While no replica is healthy, how long a request waits for one to come back (a local llama-server "
            "restarting after a crash) before it fails (escalated)."
        ),
    )
    engine_timeout_s: float = Field(
        120.0, gt=0, description="A replica that sends nothing for this long while answering counts as failed."
    )
    engine_connect_timeout_s: float = Field(5.0, gt=0, description="Timeout for connecting to a replica.")
    engine_health_interval_s: float = Field(
        2.0, gt=0, description="How often replicas' /health is probed (readiness; a failed replica is probed back)."
    )
    engine_attempts: int = Field(
        3,
        ge=1,
        description=(
            "Tries per request over different replicas; a request is retried only before any of its answer "
            "was received (so nothing reached the customer twice). Each try is its own ledger row."
        ),
    )
    engine_api_key: str | None = Field(
        None, description="engine=openai: bearer token sent to the servers (vLLM --api-key, llama-server --api-key)."
    )
    engine_model: str | None = Field(
        None,
        description=(
            "engine=openai: the model name sent in requests (a vLLM served model or LoRA module name). Default: "
            "the first model the server lists."
        ),
    )
    engine_device: str = Field(
        "",
        description="engine=openai: the device name recorded in the ledger (e.g. 'NVIDIA H100'); default 'remote'.",
    )
    engine_grammar: Literal["auto", "gbnf", "vllm", "off"] = Field(
        "auto",
        description=(
            "Grammar-constrained decisions on served engines: auto (llama-server: GBNF; vLLM: structured outputs; "
            "other servers: none, the rules decide), or forced gbnf / vllm / off."
        ),
    )
    llama_server_bin: Path | None = Field(
        None,
        description=(
            "engine=llama-server: the llama-server binary. Default: the one scripts/build-llama-server.sh built "
            "for the installed llama-cpp-python (~/.cache/firstline), else llama-server on PATH."
        ),
    )
    llama_server_args: str = Field(
        "", description="engine=llama-server: extra command-line arguments for llama-server (space-separated)."
    )
    seed: int = Field(42, description="Sampling seed; with temperature 0 answers are reproducible.")
    max_tokens: int = Field(256, ge=1, description="Upper bound on tokens generated per answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    top_k: int = Field(40, ge=0, description="Top-k sampling (0 = off).")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="Min-p sampling threshold.")
    repeat_penalty: float = Field(1.1, ge=1.0, description="Penalty for repeated tokens (1.0 = off).")

    def uses_worker(self, backend: str) -> bool:
        """Does this backend run in a model worker process under these settings?"""
        return self.model_worker == "on" or (self.model_worker == "auto" and backend != "scripted")

    def worker_environment(self) -> dict[str, str]:
        """Environment variables the model worker starts with (read by OpenMP when llama.cpp loads)."""
        return {}

    def url_list(self) -> list[str]:
        """engine_urls as a list (empty entries dropped)."""
        return [u.strip() for u in self.engine_urls.split(",") if u.strip()]
