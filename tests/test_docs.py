"""Generated documentation stays in step with the code."""

from __future__ import annotations

from ui import cli_doc
from ui.cli.docs import DOC, render


def test_settings_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "docs/settings.md is stale: run `make docs`"


def test_cli_doc_is_current() -> None:
    """docs/cli.md is every `--help` text, byte for byte: a moved or renamed command shows up here."""
    assert cli_doc.DOC.read_text(encoding="utf-8") == cli_doc.render(), "docs/cli.md is stale: run `make docs`"
