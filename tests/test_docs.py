"""Generated documentation stays in step with the code."""

from __future__ import annotations

import pytest

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


def test_the_sampling_top_k_does_not_change_retrieval(monkeypatch: pytest.MonkeyPatch) -> None:
    """FIRSTLINE_TOP_K set both the model's sampling top-k (default 40) and the passages retrieved per question
    (default 5, at most 50): a sampling top-k of 60 made every command fail to load its settings."""
    from bot.kb.search import KnowledgeSettings
    from models.settings import ModelSettings

    monkeypatch.setenv("FIRSTLINE_TOP_K", "60")
    monkeypatch.setenv("FIRSTLINE_PASSAGES", "3")
    assert ModelSettings().top_k == 60
    assert KnowledgeSettings().passages == 3
