"""Server settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from usage.smtp import SmtpSettings

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


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
    chat_rate_limit: int = Field(
        10, ge=0, description="Messages one chat session may send per rate window (0: no limit)."
    )
    chat_rate_limit_per_client: int = Field(
        60,
        ge=0,
        description="Messages one client address may send per rate window, over all its sessions (0: no limit).",
    )
    chat_rate_window_s: float = Field(60.0, gt=0, description="The rate window, in seconds.")
    max_request_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (Content-Length); larger requests get 413.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Reverse proxies trusted for X-Forwarded-For/-Proto (comma-separated IPs, or '*').",
    )
    scripted_answer: str = Field(
        "", description="Answer of the 'scripted' fake model (browser tests); empty: its built-in answer."
    )
    widget_origins: str = Field(
        "",
        description="Web sites that may embed the chat widget (/widget.js), comma-separated origins such as "
        "https://www.example.com; the chat may be framed only by these (and itself). Empty: only by itself.",
    )

    scripted_seconds_per_token: float = Field(
        0.0, ge=0, description="Delay per token of the 'scripted' fake model (load and crash tests)."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that opens GET /metrics from any address (Authorization: Bearer TOKEN). "
        "Unset: only the addresses in FIRSTLINE_METRICS_ALLOW may scrape.",
    )
    metrics_allow: str = Field(
        "127.0.0.1,::1",
        description="Client addresses or networks (comma-separated, CIDR allowed) that may read GET /metrics "
        "without the token; empty: the token only.",
    )
    ready_check_s: float = Field(
        30.0, gt=0, description="GET /ready asks the idle model for one token at most this often (seconds)."
    )
    ready_timeout_s: float = Field(
        15.0, gt=0, description="How long GET /ready waits for that token before it reports the model not answering."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines on stderr: text, or json (one JSON object per line, for log collectors)."
    )

    @field_validator("widget_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            if not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com (no path, no wildcard)")
        return value

    @property
    def embedding_origins(self) -> list[str]:
        """The origins allowed to frame the chat (widget_origins, parsed)."""
        return [o.strip().rstrip("/") for o in self.widget_origins.split(",") if o.strip()]


class MailSettings(SmtpSettings):
    """Outgoing e-mail to customers: staff replies to those who left their address, through the SMTP server
    above (`SmtpSettings`, the one budget alerts use too)."""

    mail_from: str = Field(
        "", description="Sender of e-mails to customers, e.g. 'Lumenet Support <support@example.com>'."
    )
    public_url: str = Field(
        "",
        description="The address customers reach this server at (e.g. https://support.example.com): reply "
        "e-mails link back to the chat there. Empty: e-mails carry the reply without a link.",
    )
