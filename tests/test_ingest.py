"""Knowledge-base ingestion: every file format, chunking, incremental updates, bad files, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.kb.analysis import analyze
from bot.kb.demo import DEMO_KB_DIR, ensure_demo_kb
from bot.kb.readers import CHUNK_CHARS, OVERLAP_CHARS, chunk_sections, html_to_text
from bot.kb.search import KnowledgeBase

FIXTURES = Path(__file__).parent / "data" / "kb"
ROOT = Path(__file__).resolve().parent.parent


def make_pdf(lines: list[str], title: str = "") -> bytes:
    """A minimal one-page PDF with text (Helvetica), built by hand: no PDF writer needed."""
    text = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({ln}) Tj T*" for ln in lines) + " ET"
    info = f"<< /Title ({title}) >>" if title else "<< >>"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        info,
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A copy of the hand-made fixture corpus plus a generated PDF."""
    root = tmp_path / "kb"
    shutil.copytree(FIXTURES, root)
    (root / "manuals").mkdir()
    (root / "manuals" / "router-manual.pdf").write_bytes(
        make_pdf(
            ["Router manual", "Press the reset button for ten seconds to restore factory settings."],
            title="LumeBox manual",
        )  # fmt: skip
    )
    return root


@pytest.fixture
def kb(data_dir: Path) -> Iterator[KnowledgeBase]:
    base = KnowledgeBase(data_dir / "firstline.db")
    yield base
    base.close()


def rows(kb: KnowledgeBase, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    with kb.read() as db:
        return [tuple(r) for r in db.execute(sql, params or []).fetchall()]


def test_every_format_is_ingested_with_title_path_section_and_language(kb: KnowledgeBase, corpus: Path) -> None:
    report = kb.ingest([corpus])
    assert report.errors == []
    assert (report.added, report.updated, report.unchanged, report.removed) == (9, 0, 0, 0)
    docs = {r[0]: r[1:] for r in rows(kb, "SELECT path, kind, title, lang, category, url FROM kb_documents")}
    url = "https://help.example.test/en/billing/payment-methods"
    assert docs["articles/en/billing/payment-methods.md"] == ("article", "Payment methods", "en", "billing", url)
    assert docs["articles/de/contract/vertrag-kuendigen.md"][1:3] == ("Vertrag kündigen", "de")
    assert docs["articles/en/router-lights.md"][1:3] == ("Router lights explained", "en")  # H1 as title, lang detected
    assert docs["help/wifi.html"][1:3] == ("Improving your Wi-Fi signal", "en")
    assert docs["help/opening-hours.txt"][1] == "Opening hours of the hotline"
    assert docs["manuals/router-manual.pdf"][1] == "LumeBox manual"
    # FAQ entries: one document each, path = file#number, title = the question; language detected when missing
    assert docs["faq/faq.json#1"] == ("faq", "How do I reset my password?", "en", "account", "")
    assert docs["faq/faq.jsonl#3"][1:3] == ("Can I keep my phone number when I leave?", "en")
    assert docs["faq/faq.csv#2"][1:3] == ("Wie erreiche ich den Kundenservice?", "de")
    assert report.documents == len(docs) == 13
    assert report.chunks == rows(kb, "SELECT count(*) FROM kb_chunks")[0][0]
    assert rows(kb, "SELECT count(*) FROM kb_fts")[0][0] == report.chunks
    assert kb.count() == {"documents": 13, "chunks": report.chunks, "faqs": 7}

    sections = rows(kb, "SELECT d.path, c.section, c.text FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id")
    md = [(s, t) for p, s, t in sections if p == "articles/en/billing/payment-methods.md"]
    assert [s for s, _ in md] == ["", "Which payment methods are accepted?", "When is the money collected?",
                                  "Weekends and holidays"]  # fmt: skip
    html = {s: t for p, s, t in sections if p == "help/wifi.html"}
    assert set(html) == {"", "Place the router well", "Use a repeater"}
    all_html = " ".join(html.values())
    assert "tracking" not in all_html and "Help centre menu" not in all_html and "footer" not in all_html
    assert "cookies" not in all_html
    assert "Not in a cupboard" in html["Place the router well"]
    pdf = [(s, t) for p, s, t in sections if p.endswith(".pdf")]
    assert pdf[0][0] == "page 1" and "reset button" in pdf[0][1]
    faq_csv = [t for p, _, t in sections if p == "faq/faq.csv#1"][0]
    assert "<b>" not in faq_csv and "040 123 456 0" in faq_csv and "help@example.test" in faq_csv
    answers = dict(rows(kb, "SELECT path, answer FROM kb_documents WHERE kind = 'faq'"))
    assert answers["faq/faq.json#1"].startswith("Click Forgot password")


def test_single_file_path_is_its_name(kb: KnowledgeBase, corpus: Path) -> None:
    report = kb.ingest([corpus / "help" / "wifi.html", corpus / "faq" / "faq.jsonl"])
    assert report.added == 2 and report.errors == []
    paths = {r[0] for r in rows(kb, "SELECT path FROM kb_documents")}
    assert paths == {"wifi.html", "faq.jsonl#1", "faq.jsonl#2", "faq.jsonl#3"}


def test_incremental_updates(kb: KnowledgeBase, corpus: Path, tmp_path: Path) -> None:
    first = kb.ingest([corpus])
    ids_before = dict(rows(kb, "SELECT path, id FROM kb_documents"))
    again = kb.ingest([corpus])
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 9, 0)
    assert (again.documents, again.chunks) == (first.documents, first.chunks)
    assert dict(rows(kb, "SELECT path, id FROM kb_documents")) == ids_before  # untouched rows

    txt = corpus / "help" / "opening-hours.txt"
    txt.write_text("Opening hours of the hotline\n\nThe hotline now opens on Sundays too, from 10:00 to 14:00.\n")
    (corpus / "articles" / "en" / "router-lights.md").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "extra.md").write_text("# Extra\n\nSomething else entirely.\n")
    kb.ingest([other])
    third = kb.ingest([corpus])
    assert (third.added, third.updated, third.unchanged, third.removed) == (0, 1, 7, 1)
    texts = [r[0] for r in rows(kb, "SELECT c.text FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id "
                                    "WHERE d.path = 'help/opening-hours.txt'")]  # fmt: skip
    assert texts == ["The hotline now opens on Sundays too, from 10:00 to 14:00."]
    paths = {r[0] for r in rows(kb, "SELECT path FROM kb_documents")}
    assert "articles/en/router-lights.md" not in paths
    assert "extra.md" in paths  # another folder's files are not removed by ingesting this one
    assert rows(kb, "SELECT count(*) FROM kb_fts")[0][0] == rows(kb, "SELECT count(*) FROM kb_chunks")[0][0]
    assert kb.search("sundays hotline")[0].path == "help/opening-hours.txt"
    assert "articles/en/router-lights.md" not in [s.path for s in kb.search("red internet light", top=20)]


def test_bad_files_are_reported_and_skipped(kb: KnowledgeBase, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("# Good article\n\nThis one is fine and mentions invoices.\n")
    (root / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "latin1.md").write_bytes("Kündigung über Fax".encode("latin-1"))
    (root / "empty.txt").write_text("   \n")
    (root / "broken.json").write_text('[{"question": "a?", "answer": ')
    (root / "broken.jsonl").write_text('{"question": "ok?", "answer": "yes"}\n{oops\n')
    (root / "nocolumns.csv").write_text("foo,bar\n1,2\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (root / "picture.png").write_bytes(b"\x89PNG")  # unsupported type inside a folder: skipped silently
    report = kb.ingest([root, tmp_path / "missing"])
    reasons = dict(report.errors)
    assert set(reasons) == {"binary.txt", "latin1.md", "empty.txt", "broken.json", "broken.jsonl",
                            "nocolumns.csv", "broken.pdf", str(tmp_path / "missing")}  # fmt: skip
    assert "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.md"]
    assert "empty" in reasons["empty.txt"]
    assert "invalid JSON" in reasons["broken.json"] and "line 2" in reasons["broken.jsonl"]
    assert "question" in reasons["nocolumns.csv"]
    assert "PDF" in reasons["broken.pdf"]
    assert report.added == 1 and report.skipped == 8
    assert [r[0] for r in rows(kb, "SELECT path FROM kb_documents")] == ["good.md"]
    assert rows(kb, "SELECT count(*) FROM kb_files")[0][0] == 1


def test_chunking_splits_long_sections_with_overlap() -> None:
    paragraphs = [f"Paragraph {i} " + "lorem ipsum dolor sit amet " * 12 for i in range(12)]
    chunks = chunk_sections([("Long section", "\n\n".join(paragraphs)), ("Short", "tiny")])
    long = [c for c in chunks if c.section == "Long section"]
    assert len(long) > 3
    assert all(len(c.text) <= CHUNK_CHARS + OVERLAP_CHARS + 10 for c in long)
    assert long[1].text.startswith("… ")  # carries the end of the previous chunk
    tail = long[0].text[-40:]
    assert tail in long[1].text
    assert chunks[-1].section == "Short" and chunks[-1].text == "tiny"
    one_block = chunk_sections([("", "word " * 1000)])
    assert all(len(c.text) <= CHUNK_CHARS + OVERLAP_CHARS + 10 for c in one_block)


def test_analysis_meets_inflections_and_spellings() -> None:
    assert analyze("Kündigung", "de") == analyze("kuendigungen", "de") == analyze("KÜNDIGUNG", "de")
    assert analyze("payments", "en") == analyze("payment", "en")
    assert analyze("I don't understand the invoices", "en") == ["understand", "invoic"]
    assert html_to_text("<p>Call <b>us</b></p><p>now&nbsp;please</p>") == "Call us\nnow please"


def test_ensure_demo_kb_ingests_articles_and_faq_but_not_questions(kb: KnowledgeBase) -> None:
    report = ensure_demo_kb(kb)
    assert report is not None and report.errors == [] and report.added > 0
    paths = [r[0] for r in rows(kb, "SELECT path FROM kb_documents")]
    assert any(p.startswith("articles/en/") for p in paths) and any(p.startswith("faq/faq.jsonl#") for p in paths)
    assert not any(p.startswith("questions/") or p.startswith("README") for p in paths)
    assert (DEMO_KB_DIR / "questions").is_dir()
    assert ensure_demo_kb(kb) is None


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"FIRSTLINE_EMBEDDINGS": "off", "PATH": "/usr/bin:/bin", "HOME": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args, "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_ingest_and_search_print_one_json_document(corpus: Path, data_dir: Path) -> None:
    (corpus / "bad.json").write_text("{not json")
    res = _cli("kb", "ingest", str(corpus), "--json", data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert {"documents", "chunks", "added", "updated", "unchanged", "skipped", "removed", "errors"} <= set(payload)
    assert payload["added"] == 9 and payload["errors"] == [
        {"path": "bad.json", "reason": payload["errors"][0]["reason"]}
    ]

    res = _cli("kb", "search", "wann wird abgebucht", "--lang", "de", "--top", "2", "--json", data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)["results"]
    assert 1 <= len(results) <= 2
    assert set(results[0]) >= {"title", "path", "score", "snippet", "url", "section"}
    assert all(0.0 <= r["score"] <= 1.0 for r in results)

    plain = _cli("kb", "ingest", str(corpus), data_dir=data_dir)
    assert plain.returncode == 0
    assert "9 unchanged" in plain.stdout
    assert "bad.json: invalid JSON" in plain.stderr
    base = KnowledgeBase(data_dir / "firstline.db")
    try:
        assert rows(base, "SELECT count(*) FROM kb_files")[0][0] == 9
    finally:
        base.close()
