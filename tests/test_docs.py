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


def test_every_setting_is_listed_once() -> None:
    """The FIRSTLINE_SMTP_* variables were listed twice (customer mail and budget alerts each declared them),
    with two different descriptions of one server."""
    import re
    from collections import Counter

    names = Counter(re.findall(r"^\| `(FIRSTLINE_[A-Z0-9_]+)` \|", docs.settings_markdown(), flags=re.M))
    assert names and not [name for name, n in names.items() if n > 1]
