"""Model settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

from pathlib import Path

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
    n_ctx: int = Field(2048, ge=256, description="Context window in tokens (prompt + answer).")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp. Default: all cores.")
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
    seed: int = Field(42, description="Sampling seed; with temperature 0 answers are reproducible.")
    max_tokens: int = Field(256, ge=1, description="Upper bound on tokens generated per answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    top_k: int = Field(40, ge=0, description="Top-k sampling (0 = off).")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="Min-p sampling threshold.")
    repeat_penalty: float = Field(1.1, ge=1.0, description="Penalty for repeated tokens (1.0 = off).")
