"""Generates docs/settings.md (from the settings classes) and docs/cli.md (from every `--help`), so they never drift.

`make docs` runs `python -m ui.cli.docs`; tests/test_docs.py fails when either file is stale.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

SETTINGS = [
    ("models.settings", "ModelSettings"),
    ("bot.settings", "BotSettings"),
    ("bot.kb.search", "KnowledgeSettings"),
    ("bot.housekeeping", "HousekeepingSettings"),
    ("ui.settings", "ServerSettings"),
    ("ui.settings", "MailSettings"),
    ("usage.profiles", "PricingSettings"),
    ("usage.alerts", "AlertSettings"),
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SETTINGS_DOC = DOCS / "settings.md"
CLI_DOC = DOCS / "cli.md"
WIDTH = 100  # help text wrapped as on a 100-column terminal, whatever terminal runs `make docs`


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


def settings_markdown() -> str:
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


def commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, depth first in name order: (), ('ask',), ('kb',), ('kb', 'ingest'), ..."""
    out = [path]
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            out += commands(group.commands[name], (*path, name))
    return out


def help_text(main: click.Command, path: tuple[str, ...]) -> str:
    """What `firstline PATH --help` prints."""
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="firstline", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"firstline {' '.join(path)} --help failed: {result.output}")
    return result.output


def cli_markdown() -> str:
    """The Markdown text of docs/cli.md."""
    from ui.cli.main import main

    lines = [
        "# Command line",
        "",
        "Generated from the code by `make docs`; do not edit by hand. The stable names and JSON keys are",
        "listed in the README (Operations); this page is what `firstline --help` and every",
        "`firstline COMMAND --help` print.",
        "",
    ]
    for path in commands(main):
        title = " ".join(("firstline", *path))
        lines += [f"## `{title}`", "", "```text", help_text(main, path).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def main() -> None:
    for path, text in ((SETTINGS_DOC, settings_markdown()), (CLI_DOC, cli_markdown())):
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
