"""The bundled demo knowledge base (a fictional internet provider's help centre, bot/demo_kb/)."""

from __future__ import annotations

from pathlib import Path

from bot.kb.ingestion import IngestReport
from bot.kb.search import KnowledgeBase

DEMO_KB_DIR = Path(__file__).resolve().parent.parent / "demo_kb"
DEMO_EXCLUDE = ("questions/*", "README*")  # the evaluation questions and the folder's README are no articles


def ensure_demo_kb(kb: KnowledgeBase) -> IngestReport | None:
    """Ingest the bundled demo knowledge base (articles and FAQ) when the KB is empty; None otherwise."""
    if kb.count()["documents"]:
        return None
    return kb.ingest([DEMO_KB_DIR], exclude=DEMO_EXCLUDE)
