"""Server settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """How the web app is served."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore", protected_namespaces=())

    host: str = Field("127.0.0.1", description="Interface to bind (use a reverse proxy for public access).")
    port: int = Field(7860, ge=1, le=65535, description="TCP port.")
    model_backend: Literal["llama", "scripted"] = Field(
        "llama",
        description="'llama' runs the GGUF model; 'scripted' is a fake model for tests and load tests.",
    )
    demo_kb: Literal["auto", "off"] = Field(
        "auto",
        description="auto: an empty knowledge base gets the bundled demo help centre at start; off: never.",
    )
    chat_concurrency: int = Field(
        16, ge=1, description="Chat requests handled at once (they queue for the one model inside)."
    )
    queue_size: int = Field(
        64, ge=1, description="Chat requests allowed to wait; beyond that callers are told to wait."
    )
