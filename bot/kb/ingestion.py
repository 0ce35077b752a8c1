"""Ingestion: files and staff FAQ entries into the index tables, with their vectors.

One file is one transaction: a crash or a bad file never loses another. Unchanged files (same sha256 and
parser version) are skipped, changed ones replaced, files gone from an ingested folder removed. With an
embedder, every passage (and every FAQ question, as a query) gets a vector, and every article its
*outline* (title and headings, one passage: the title and heading field of dense search, stored with the
article's first chunk); chunks ingested before the embedder was enabled (or before outlines existed) are
embedded on first use (`_backfill_vectors`).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.embeddings import Embedder, to_blob
from bot.kb.analysis import analyze
from bot.kb.readers import PARSER_VERSION, SUFFIXES, Article, FaqEntry, UnreadableFile, read_file
from bot.kb.schema import migrations
from bot.types import Lang, Source
from usage.db import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    """Outcome of one ingest call. File counts: added..removed; documents/chunks: in the given paths now."""

    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        return data


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(rel, p) for p in patterns)


class Ingestion(Store):
    """The writing half of the knowledge base (bot.kb.search.KnowledgeBase adds the queries)."""

    def __init__(self, path: Path | str, *, embedder: Embedder | None = None) -> None:
        super().__init__(path, migrations)
        self.embedder = embedder
        self._backfilled = False

    def ingest(self, paths: Sequence[Path], *, progress: bool = False, exclude: Sequence[str] = ()) -> IngestReport:
        """Add, update or remove the files under `paths`; one transaction per file; bad files reported."""
        from tqdm import tqdm

        errors: list[tuple[str, str]] = []
        tasks: list[tuple[Path, str]] = []  # (absolute file, path relative to its root)
        roots: list[tuple[Path, set[str]]] = []
        skipped = 0
        for given in paths:
            root = Path(given).expanduser().resolve()
            if root.is_dir():
                seen: set[str] = set()
                roots.append((root, seen))
                for file in sorted(root.rglob("*")):
                    rel = file.relative_to(root).as_posix()
                    if not file.is_file() or any(part.startswith(".") for part in rel.split("/")):
                        continue
                    if _excluded(rel, exclude):
                        continue
                    if file.suffix.lower() not in SUFFIXES:  # images and the like in a folder: not an error
                        log.info("skipping %s: unsupported file type", file)
                        skipped += 1
                        continue
                    seen.add(str(file))
                    tasks.append((file, rel))
            elif root.is_file():
                tasks.append((root, root.name))
            else:
                errors.append((str(given), "no such file or directory"))
        counts = {"added": 0, "updated": 0, "unchanged": 0, "documents": 0, "chunks": 0}
        bar = tqdm(tasks, desc="ingest", unit="file", file=sys.stderr, disable=not progress, leave=False)
        for file, rel in bar:
            try:
                outcome, docs, chunks = self._ingest_file(file, rel)
            except UnreadableFile as exc:
                errors.append((rel if file.parent != file else str(file), str(exc)))
                skipped += 1
                continue
            counts[outcome] += 1
            counts["documents"] += docs
            counts["chunks"] += chunks
        removed = self._remove_missing(roots)
        report = IngestReport(skipped=skipped, removed=removed, errors=errors, **counts)
        log.info("ingest: %s", {k: v for k, v in report.as_dict().items() if k != "errors"})
        return report

    def _ingest_file(self, file: Path, rel: str) -> tuple[str, int, int]:
        """Returns (added|updated|unchanged, documents, chunks)."""
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise UnreadableFile(f"cannot read file: {exc.strerror or exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        with self.read() as db:
            row = db.execute(
                "SELECT id, sha256, parser_version, path FROM kb_files WHERE source = ?", [str(file)]
            ).fetchone()
        if row and row[1] == digest and row[2] == PARSER_VERSION and row[3] == rel:
            with self.read() as db:
                docs, chunks = db.execute(
                    "SELECT count(DISTINCT d.id), count(c.id) FROM kb_documents d "
                    "JOIN kb_chunks c ON c.document_id = d.id WHERE d.file_id = ?",
                    [row[0]],
                ).fetchone()
            self._backfill_vectors()
            return "unchanged", docs, chunks
        parsed = read_file(file)
        records = [_article_record(a, rel) for a in parsed.articles]
        records += [_faq_record(f, rel) for f in parsed.faqs]
        vectors = self._embed_records(records)
        with self.write() as db:
            if row:
                self._delete_documents(db, "file_id = ?", [row[0]])
                db.execute("DELETE FROM kb_files WHERE id = ?", [row[0]])
            cur = db.execute(
                "INSERT INTO kb_files (source, path, sha256, parser_version, size, ingested_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [str(file), rel, digest, PARSER_VERSION, len(data), _now()],
            )
            self._insert(db, cur.lastrowid, records, vectors)
        return ("updated" if row else "added"), len(records), sum(len(r["chunks"]) for r in records)

    def _remove_missing(self, roots: list[tuple[Path, set[str]]]) -> int:
        removed = 0
        for root, seen in roots:
            prefix = str(root).rstrip("/") + "/"
            with self.read() as db:
                rows = db.execute(
                    "SELECT id, source FROM kb_files WHERE substr(source, 1, ?) = ?", [len(prefix), prefix]
                ).fetchall()
            gone = [fid for fid, source in rows if source not in seen]
            for fid in gone:
                with self.write() as db:
                    self._delete_documents(db, "file_id = ?", [fid])
                    db.execute("DELETE FROM kb_files WHERE id = ?", [fid])
            removed += len(gone)
        return removed

    @staticmethod
    def _delete_documents(db: Database, where: str, params: list[Any]) -> None:
        ids = f"SELECT id FROM kb_documents WHERE {where}"
        db.execute(f"DELETE FROM kb_fts WHERE rowid IN (SELECT id FROM kb_chunks WHERE document_id IN ({ids}))", params)
        db.execute(f"DELETE FROM kb_documents WHERE {where}", params)  # chunks and vectors cascade

    def _embed_records(self, records: list[dict[str, Any]]) -> list[list[bytes]] | None:
        """Vectors for every record's (chunk, role, text) triples: passages, outlines, FAQ questions."""
        if self.embedder is None:
            return None
        pairs = [(role, text) for r in records for _, role, text in r["embed"]]
        blobs = self._embed_pairs(pairs)
        out, i = [], 0
        for r in records:
            out.append(blobs[i : i + len(r["embed"])])
            i += len(r["embed"])
        return out

    def _embed_pairs(self, pairs: list[tuple[str, str]]) -> list[bytes]:
        assert self.embedder is not None
        blobs: list[bytes] = [b""] * len(pairs)
        for query, embed in ((False, self.embedder.embed_passages), (True, self.embedder.embed_queries)):
            idx = [i for i, (r, _) in enumerate(pairs) if (r in QUERY_ROLES) == query]
            if idx:
                for i, vec in zip(idx, embed([pairs[i][1] for i in idx]), strict=True):
                    blobs[i] = to_blob(vec)
        return blobs

    def _insert(
        self, db: Database, file_id: int | None, records: list[dict[str, Any]], vectors: list[list[bytes]] | None
    ) -> list[int]:
        doc_ids = []
        fts: list[tuple[Any, ...]] = []
        vecs: list[tuple[Any, ...]] = []
        now = _now()
        for n, rec in enumerate(records):
            cur = db.execute(
                "INSERT INTO kb_documents (file_id, kind, path, title, url, lang, category, origin, answer, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [file_id, rec["kind"], rec["path"], rec["title"], rec["url"], rec["lang"], rec["category"],
                 rec.get("origin", "file"), rec.get("answer", ""), now],
            )  # fmt: skip
            doc_id = int(cur.lastrowid or 0)
            doc_ids.append(doc_id)
            lang, title_terms = rec["lang"], " ".join(analyze(rec["title"], rec["lang"]))
            for ord_, (section, text) in enumerate(rec["chunks"]):
                cur = db.execute(
                    "INSERT INTO kb_chunks (document_id, ord, section, text) VALUES (?, ?, ?, ?)",
                    [doc_id, ord_, section, text],
                )
                chunk_id = int(cur.lastrowid or 0)
                fts.append((chunk_id, title_terms, " ".join(analyze(section, lang)), " ".join(analyze(text, lang)),
                            lang, rec["kind"]))  # fmt: skip
                if vectors is not None and self.embedder is not None:
                    for j, (of_chunk, role, _) in enumerate(rec["embed"]):
                        if of_chunk == ord_:
                            vecs.append((chunk_id, role, self.embedder.model_id, vectors[n][j]))
        db.conn.executemany(
            "INSERT INTO kb_fts (rowid, title, section, body, lang, kind) VALUES (?, ?, ?, ?, ?, ?)", fts
        )
        db.conn.executemany("INSERT INTO kb_vectors (chunk_id, role, model, vector) VALUES (?, ?, ?, ?)", vecs)
        return doc_ids

    def _backfill_vectors(self) -> None:
        """Embed chunks that have no vector for the current model (the model was enabled later)."""
        if self.embedder is None or self._backfilled:
            return
        self._backfilled = True
        with self.read() as db:
            rows = db.execute(
                "SELECT c.id, d.kind, d.title, c.section, c.text FROM kb_chunks c "
                "JOIN kb_documents d ON d.id = c.document_id WHERE NOT EXISTS (SELECT 1 FROM kb_vectors v "
                "WHERE v.chunk_id = c.id AND v.role = 'passage' AND v.model = ?)",
                [self.embedder.model_id],
            ).fetchall()
        for start in range(0, len(rows), 256):
            items: list[tuple[int, str, str]] = []
            for cid, kind, title, section, text in rows[start : start + 256]:
                items += [(cid, role, t) for role, t in embed_texts(kind, title, section, text)]
            blobs = self._embed_pairs([(role, t) for _, role, t in items])
            with self.write() as db:
                db.conn.executemany("DELETE FROM kb_vectors WHERE chunk_id = ?", [(cid,) for cid, _, _ in items])
                db.conn.executemany(
                    "INSERT INTO kb_vectors (chunk_id, role, model, vector) VALUES (?, ?, ?, ?)",
                    [(cid, role, self.embedder.model_id, b) for (cid, role, _), b in zip(items, blobs, strict=True)],
                )
        if rows:
            log.info("embedded %d chunks missing a vector for %s", len(rows), self.embedder.model_id)
        self._backfill_outlines()

    def _backfill_outlines(self) -> None:
        """Embed the outline of articles that have none for the current model (ingested before outlines)."""
        assert self.embedder is not None
        with self.read() as db:
            rows = db.execute(
                "SELECT d.id, d.title, c.id, c.ord, c.section FROM kb_documents d "
                "JOIN kb_chunks c ON c.document_id = d.id WHERE d.kind = 'article' AND NOT EXISTS ("
                "SELECT 1 FROM kb_vectors v JOIN kb_chunks f ON f.id = v.chunk_id WHERE f.document_id = d.id "
                "AND v.role = 'outline' AND v.model = ?) ORDER BY d.id, c.ord",
                [self.embedder.model_id],
            ).fetchall()
        articles: dict[int, tuple[str, int, list[str]]] = {}
        for doc, title, chunk, _, section in rows:
            articles.setdefault(doc, (title, chunk, []))[2].append(section)
        items = [(first, outline_text(title, sections)) for title, first, sections in articles.values()]
        for start in range(0, len(items), 256):
            part = items[start : start + 256]
            blobs = self._embed_pairs([("outline", text) for _, text in part])
            with self.write() as db:
                db.conn.executemany(
                    "INSERT OR REPLACE INTO kb_vectors (chunk_id, role, model, vector) VALUES (?, 'outline', ?, ?)",
                    [(chunk, self.embedder.model_id, b) for (chunk, _), b in zip(part, blobs, strict=True)],
                )
        if items:
            log.info("embedded the outline of %d articles for %s", len(items), self.embedder.model_id)

    # -- FAQ entries from staff -----------------------------------------------------------------------
    def add_faq(self, question: str, answer: str, lang: Lang, *, category: str = "", origin: str = "staff") -> Source:
        """Store a question/answer pair (e.g. saved by staff); searchable at once."""
        entry = FaqEntry(question=" ".join(question.split()), answer=answer.strip(), lang=lang, number=0,
                         category=category)  # fmt: skip
        if not entry.question or not entry.answer:
            raise ValueError("an FAQ entry needs a question and an answer")
        record = _faq_record(entry, f"faq/{origin}")
        vectors = self._embed_records([record])
        with self.write() as db:
            (doc_id,) = self._insert(db, None, [record], vectors)
            path = f"faq/{origin}#{doc_id}"
            db.execute("UPDATE kb_documents SET path = ?, origin = ? WHERE id = ?", [path, origin, doc_id])
        return Source(title=entry.question, path=path, score=1.0, snippet=entry.answer, section=category)


QUERY_ROLES = frozenset({"question"})  # embedded as search queries; "passage" and "outline" as passages


def outline_text(title: str, sections: Sequence[str]) -> str:
    """An article's outline: its title and its headings in order ("Title: heading; heading; ...")."""
    headings = list(dict.fromkeys(s for s in sections if s))
    return f"{title}: " + "; ".join(headings) if headings else title


def embed_texts(kind: str, title: str, section: str, text: str) -> list[tuple[str, str]]:
    """What is embedded for a chunk: the passage with its title; for an FAQ entry also its question."""
    if kind == "faq":
        return [("passage", f"{title}\n{text}"), ("question", title)]
    return [("passage", f"{title}. {section}\n{text}" if section else f"{title}\n{text}")]


def _article_record(article: Article, rel: str) -> dict[str, Any]:
    chunks = [(c.section, c.text) for c in article.chunks]
    return {
        "kind": "article", "path": rel, "title": article.title, "url": article.url, "lang": article.lang,
        "category": article.category, "chunks": chunks,
        "embed": [(i, role, text) for i, (s, t) in enumerate(chunks) for role, text in
                  embed_texts("article", article.title, s, t)]
        + [(0, "outline", outline_text(article.title, [s for s, _ in chunks]))],
    }  # fmt: skip


def _faq_record(entry: FaqEntry, rel: str) -> dict[str, Any]:
    return {
        "kind": "faq", "path": f"{rel}#{entry.number}", "title": entry.question, "url": entry.url,
        "lang": entry.lang, "category": entry.category, "answer": entry.answer,
        "chunks": [("", entry.answer)],
        "embed": [(0, role, text) for role, text in embed_texts("faq", entry.question, "", entry.answer)],
    }  # fmt: skip
