"""Generated documentation stays in step with the code."""

from __future__ import annotations

from ui.settings_doc import DOC, render


def test_settings_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "docs/settings.md is stale: run `make docs`"
