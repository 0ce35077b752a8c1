"""Bot settings, read from the environment with the `FIRSTLINE_` prefix."""

from __future__ import annotations

import os
from pathlib import Path

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
        description="Directory holding the SQLite database (firstline.db) and other state.",
    )
    company_name: str = Field("Lumenet", description="Company name used in the bot's system prompt.")
    default_language: str = Field(
        "en", pattern="^(en|de)$", description="Language when it cannot be detected."
    )
    max_input_chars: int = Field(2000, ge=10, description="Longest customer message accepted, in characters.")
    history_messages: int = Field(
        20, ge=0, description="Most recent messages loaded as history (then trimmed to fit the context)."
    )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "firstline.db"
