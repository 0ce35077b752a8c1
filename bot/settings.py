"""Bot settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The per-user data directory ($XDG_DATA_HOME/firstline, else ~/.local/share/firstline)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "firstline"


class BotSettings(BaseSettings):
    """Conversation behaviour and where the data lives."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory holding the SQLite database (firstline.db), the knowledge-base index and other state.",
    )
    database_url: str | None = Field(
        None,
        description=(
            "The shared store of conversations, tickets, ledger, logins, budgets and pricing history: "
            "sqlite:///relative/path or sqlite:////absolute/path (default: DATA_DIR/firstline.db) or "
            "postgresql://user:password@host:port/database for several web processes or hosts. The knowledge-base "
            "index stays in DATA_DIR/firstline.db on every host."
        ),
    )
    company_name: str = Field("Lumenet", description="Company name used in the bot's system prompt.")
    default_language: str = Field("en", pattern="^(en|de)$", description="Language when it cannot be detected.")
    max_input_chars: int = Field(2000, ge=10, description="Longest customer message accepted, in characters.")
    history_messages: int = Field(
        20, ge=0, description="Most recent messages loaded as history (then trimmed to fit the context)."
    )

    sensitive_topics: list[str] = Field(
        default_factory=lambda: [
            "refund_or_payment_dispute",
            "payment_problem",
            "legal_threat",
            "special_cancellation",
            "account_specific_data",
            "security_incident",
        ],
        description="Sensitive topics that always go to a human (JSON list; see bot/escalation.py).",
    )
    model_timeout_s: float = Field(
        60.0, gt=0, description="An answer taking longer than this is stopped and the conversation escalated."
    )
    unclaimed_notice_s: float = Field(
        300.0,
        ge=0,
        description="After this many seconds unclaimed, the customer is told how the team will reply.",
    )
    conversation_token_days: float = Field(
        30.0,
        ge=0,
        description="A customer's browser can resume its conversation (after a reload, or from the link in a "
        "reply e-mail) until its token has gone unused this many days; 0: no resuming.",
    )
    ask_model_when_unsure: bool = Field(
        True, description="Ask the model (grammar-constrained) when the cheap escalation signals are unsure."
    )

    answer_mode: Literal["generate", "extractive", "auto"] = Field(
        "auto",
        description=(
            "generate: the model answers from the passages; extractive: quote the passage sentences or steps "
            "that answer best (no generation); auto: generate, and quote instead when the grounding guard "
            "rejects the model's answer (docs/quality.md)."
        ),
    )
    grounding_guard: bool = Field(
        True,
        description=(
            "Check every generated sentence (grounded in the cited passages, customer's language, real words) "
            "before it is shown. Off only to measure the unchecked model."
        ),
    )
    grounding_min_overlap: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Share of a generated sentence's content words that one passage unit must hold (docs/quality.md).",
    )
    grounding_min_similarity: float = Field(
        0.84,
        ge=0.0,
        le=1.0,
        description="Embedding cosine a generated sentence must reach with that passage unit (multilingual-e5-small).",
    )

    @property
    def database_path(self) -> Path:
        """The data directory's SQLite file: the knowledge-base index, and the store unless database_url says else."""
        return self.data_dir / "firstline.db"

    @property
    def database(self) -> Path | str:
        """Where the stores live: FIRSTLINE_DATABASE_URL, else the data directory's SQLite file."""
        return self.database_url or self.database_path
