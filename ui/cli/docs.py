"""Generates docs/settings.md from the settings classes, so the documented variables never drift."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

SETTINGS = [
    ("models.settings", "ModelSettings"),
    ("bot.settings", "BotSettings"),
    ("bot.kb.search", "KnowledgeSettings"),
    ("bot.housekeeping", "HousekeepingSettings"),
    ("ui.settings", "ServerSettings"),
    ("usage.profiles", "PricingSettings"),
]
DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, Path):
            return "(per-user data directory)"
    else:
        value = field.default
    return "(none)" if value is None else f"`{value}`"


def render() -> str:
    """The Markdown text of docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "Generated from the code by `make docs` (`python -m ui.cli.docs`); do not edit by hand.",
        "Every setting is an environment variable with the prefix `FIRSTLINE_`.",
        "",
    ]
    for module, name in SETTINGS:
        cls = getattr(importlib.import_module(module), name)
        lines += [f"## {name} (`{module}`)", "", (cls.__doc__ or "").strip(), ""]
        lines += ["| variable | default | meaning |", "|---|---|---|"]
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{field_name.upper()}` | {_default(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
