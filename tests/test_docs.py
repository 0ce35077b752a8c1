"""Generated documentation stays in step with the code."""

from __future__ import annotations

from ui.cli import docs


def test_settings_doc_is_current() -> None:
    assert docs.SETTINGS_DOC.read_text(encoding="utf-8") == docs.settings_markdown(), (
        "docs/settings.md is stale: run `make docs`"
    )


def test_cli_doc_is_current() -> None:
    """docs/cli.md is every `--help` text, byte for byte: a moved or renamed command shows up here."""
    assert docs.CLI_DOC.read_text(encoding="utf-8") == docs.cli_markdown(), "docs/cli.md is stale: run `make docs`"
