"""The knowledge base: ingested articles and FAQ entries in SQLite, searched with FTS5 and optional vectors.

Tables live in the shared `firstline.db` (migrations "firstline.knowledge"): `kb_files` (one row per
ingested file, with its sha256), `kb_documents` (an article or one FAQ entry), `kb_chunks` (passages) and
`kb_fts`, an FTS5 table over the *analysed* text (see `bot.kb.readers.analyze`: stemmed, stop words dropped,
ASCII-folded), so German and English inflections meet. `kb_vectors` holds float32 embeddings when a
dense model is configured. One file is one transaction: a crash or a bad file never loses another.

Search is lexical first: query terms are expanded against the index vocabulary (typo correction by edit
distance, German compound parts, prefixes; see `bot.kb.readers.expand_query`), FTS5 finds candidate chunks
and a BM25 over those term groups ranks them. With an embedder, a cosine ranking over all chunk vectors of
the language is fused in by weighted reciprocal rank fusion at document level (dense counts 1.5x: on the
demo questions it lifted hit@1 from 0.51 to 0.70). Results are one passage per document, best first.

`Source.score` is a relevance in [0, 1]: the IDF-weighted share of the query's informative words found
in the passage (typo and compound matches count partly), averaged with the embedding similarity
(rescaled) when a dense model is active. Results are ranked by the fusion, and a score is capped by the
one above it, so scores never rise down the list. Below `MIN_RELEVANCE` the knowledge base has nothing
relevant. On the demo questions, with embeddings every answerable question's best score was >= 0.32 while
7 of 26 questions the KB cannot answer scored below 0.3; lexical scores run lower (26 of 90 answerable
below 0.3, 7 below 0.2), so without embeddings FIRSTLINE_MIN_RELEVANCE=0.2 is the better setting.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.embeddings import Embedder, from_blob, to_blob
from bot.kb.readers import (
    PARSER_VERSION,
    SUFFIXES,
    Article,
    FaqEntry,
    Lexicon,
    QueryTerm,
    UnreadableFile,
    analyze,
    expand_query,
    idf,
    read_file,
)
from bot.language import detect_language
from bot.types import Lang, Source
from usage.db import Store

log = logging.getLogger(__name__)

DEMO_KB_DIR = Path(__file__).resolve().parent.parent / "demo_kb"
DEMO_EXCLUDE = ("questions/*", "README*")
MIN_RELEVANCE = 0.3  # below this best score, the knowledge base has nothing relevant for the question
FAQ_THRESHOLD = 0.8  # faq_match score from which an FAQ answer is given with no model call
RRF_K = 60  # reciprocal rank fusion constant (the usual value)
FUSION_WEIGHTS = (1.0, 2.0)  # lexical, dense: dense counts more (it copes with paraphrase and typos)
FAQ_IN_SEARCH = 1  # FAQ entries among search results while articles fill the rest (see _mix)
CANDIDATES = 200  # FTS5 candidates re-ranked per query
DENSE_CANDIDATES = 100  # nearest chunks by embedding taken into the fusion
COSINE = (0.75, 0.90)  # passage cosines: unrelated .. clearly relevant (multilingual-e5-small)
QQ_COSINE = (0.80, 0.95)  # question-to-question cosines: unrelated .. same question

migrations = Migrations("firstline.knowledge")


@migrations()
def m001_knowledge(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE kb_files (
            id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, path TEXT NOT NULL, sha256 TEXT NOT NULL,
            parser_version INTEGER NOT NULL, size INTEGER NOT NULL, ingested_at TEXT NOT NULL);
        CREATE TABLE kb_documents (
            id INTEGER PRIMARY KEY, file_id INTEGER REFERENCES kb_files(id) ON DELETE CASCADE,
            kind TEXT NOT NULL, path TEXT NOT NULL, title TEXT NOT NULL, url TEXT NOT NULL DEFAULT '',
            lang TEXT NOT NULL, category TEXT NOT NULL DEFAULT '', origin TEXT NOT NULL DEFAULT 'file',
            answer TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL);
        CREATE INDEX kb_documents_file ON kb_documents(file_id);
        CREATE TABLE kb_chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: (max id, count) identifies the index state
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL, section TEXT NOT NULL DEFAULT '', text TEXT NOT NULL);
        CREATE INDEX kb_chunks_document ON kb_chunks(document_id);
        CREATE VIRTUAL TABLE kb_fts USING fts5(
            title, section, body, lang UNINDEXED, kind UNINDEXED,
            tokenize = "unicode61 remove_diacritics 2");
        CREATE VIRTUAL TABLE kb_fts_vocab USING fts5vocab(kb_fts, 'row');
        CREATE TABLE kb_vectors (
            chunk_id INTEGER NOT NULL REFERENCES kb_chunks(id) ON DELETE CASCADE, role TEXT NOT NULL,
            model TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (chunk_id, role));
        """
    )


class KnowledgeSettings(BaseSettings):
    """Retrieval and FAQ thresholds, and whether the embedding model is used."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    faq_threshold: float = Field(
        FAQ_THRESHOLD, ge=0.0, le=1.0, description="faq_match score from which the FAQ answer is sent as is."
    )
    min_relevance: float = Field(
        MIN_RELEVANCE, ge=0.0, le=1.0, description="Best search score below which the KB has nothing relevant."
    )
    top_k: int = Field(5, ge=1, le=50, description="Passages retrieved for one question.")
    embeddings: Literal["auto", "off"] = Field(
        "auto", description="auto: use the bundled multilingual embedding model when installed; off: BM25 only."
    )


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


@dataclass(frozen=True)
class FaqMatch:
    """The FAQ entry closest to a question; `score` in [0, 1]; `source.section` is the entry's category.

    The score averages question-to-question word overlap (IDF-weighted, both directions) with the
    embedding similarity of the two questions when a dense model is active: 1.0 for the same question,
    about 0.9 for a rewording, under 0.5 for a different question on the same topic.
    """

    question: str
    answer: str
    score: float
    source: Source
    lang: Lang


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(rel, p) for p in patterns)


class KnowledgeBase(Store):
    """Ingested documents and FAQ entries with lexical (and optional dense) search."""

    def __init__(self, path: Path | str, *, embedder: Embedder | None = None) -> None:
        super().__init__(path, migrations)
        self.embedder = embedder
        self._vocab_key: tuple[Any, ...] = ()
        self._lexicon_cache = Lexicon.build({}, 0)
        self._dense: dict[tuple[str | None, str], tuple[tuple[Any, ...], list[int], Any]] = {}
        self._backfilled = False
        self._qvecs: dict[str, Any] = {}

    # -- ingestion ----------------------------------------------------------------------------------
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
        """Vectors for every record's (role, text) pairs: passages, and FAQ questions as queries."""
        if self.embedder is None:
            return None
        pairs = [p for r in records for p in r["embed"]]
        blobs = self._embed_pairs(pairs)
        out, i = [], 0
        for r in records:
            out.append(blobs[i : i + len(r["embed"])])
            i += len(r["embed"])
        return out

    def _embed_pairs(self, pairs: list[tuple[str, str]]) -> list[bytes]:
        assert self.embedder is not None
        blobs: list[bytes] = [b""] * len(pairs)
        for role, embed in (("passage", self.embedder.embed_passages), ("question", self.embedder.embed_queries)):
            idx = [i for i, (r, _) in enumerate(pairs) if r == role]
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
                    roles = [r for r, _ in rec["embed"]]
                    per_chunk = len(roles) // max(len(rec["chunks"]), 1)
                    for j in range(per_chunk * ord_, per_chunk * (ord_ + 1)):
                        vecs.append((chunk_id, roles[j], self.embedder.model_id, vectors[n][j]))
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
                items += [(cid, role, t) for role, t in _embed_texts(kind, title, section, text)]
            blobs = self._embed_pairs([(role, t) for _, role, t in items])
            with self.write() as db:
                db.conn.executemany("DELETE FROM kb_vectors WHERE chunk_id = ?", [(cid,) for cid, _, _ in items])
                db.conn.executemany(
                    "INSERT INTO kb_vectors (chunk_id, role, model, vector) VALUES (?, ?, ?, ?)",
                    [(cid, role, self.embedder.model_id, b) for (cid, role, _), b in zip(items, blobs, strict=True)],
                )
        if rows:
            log.info("embedded %d chunks missing a vector for %s", len(rows), self.embedder.model_id)

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

    # -- queries --------------------------------------------------------------------------------------
    def search(self, query: str, lang: Lang | None = None, top: int = 5) -> list[Source]:
        """The best passages for a question, one per document, best first (score in [0, 1])."""
        return [h.source() for h in self._search(query, lang, ("article", "faq"), max(top, 1))]

    def faq_match(self, query: str, lang: Lang | None = None) -> FaqMatch | None:
        """The FAQ entry whose question is closest to `query`, with a similarity score in [0, 1]."""
        qlang = lang or detect_language(query)
        qterms = self._query_terms(query, qlang)
        rows = self._candidates(qterms, lang, ("faq",), 30)
        qvec = self._query_vector(query)
        if qvec is not None:  # questions asked in other words: the nearest FAQ questions by meaning too
            nearest = list(self._dense_scores(qvec, lang, "question", None))[:10]
            known = {r[0] for r in rows}
            rows += self._fts_rows([cid for cid in nearest if cid not in known])
        if not rows:
            return None
        qq = self._dense_scores(qvec, lang, "question", [r[0] for r in rows])
        matched = {a for q in qterms for a, _ in q.alternatives} | {q.term for q in qterms}
        lexicon = self._lexicon()
        best: tuple[float, tuple[Any, ...]] | None = None
        for row in rows:
            title_terms = row[1].split()
            forward = _coverage(qterms, set(title_terms))  # how much of the question the FAQ asks
            own = [t for t in dict.fromkeys(title_terms)]
            weights = [idf(lexicon.df.get(t, 1), lexicon.n) for t in own]
            backward = sum(w for t, w in zip(own, weights, strict=True) if t in matched) / (sum(weights) or 1.0)
            lexical = (forward * backward) ** 0.5
            score = lexical if qvec is None else 0.5 * lexical + 0.5 * _rescale(qq.get(row[0], 0.0), *QQ_COSINE)
            if best is None or score > best[0]:
                best = (score, row)
        assert best is not None
        hit = self._hits([best[1][0]], {best[1][0]: best[0]})[0]
        return FaqMatch(hit.title, hit.text, round(best[0], 4), hit.source(), hit.lang)

    def _search(self, query: str, lang: Lang | None, kinds: tuple[str, ...], top: int) -> list[_Hit]:
        qlang = lang or detect_language(query)
        qterms = self._query_terms(query, qlang)
        rows = self._candidates(qterms, lang, kinds, CANDIDATES)
        lexical = _rank_lexical(qterms, rows)  # chunk id -> (bm25-like score, coverage)
        qvec = self._query_vector(query)
        dense = self._dense_scores(qvec, lang, "passage", None, kinds) if qvec is not None else {}
        relevance: dict[int, float] = {}
        for cid in set(lexical) | set(dense):
            cover = lexical.get(cid, (0.0, 0.0))[1]
            relevance[cid] = cover if qvec is None else 0.5 * cover + 0.5 * _rescale(dense.get(cid, 0.0), *COSINE)
        rankings = [sorted(lexical, key=lambda c: -lexical[c][0]), sorted(dense, key=lambda c: -dense[c])]
        doc_of = self._documents_of(set(lexical) | set(dense))
        by_chunk = _rrf(rankings)  # picks each document's passage: the one both rankings like best
        best: dict[int, int] = {}
        for cid, doc in doc_of.items():
            if doc not in best or by_chunk[cid] > by_chunk[best[doc]]:
                best[doc] = cid
        fused = _rrf([_first_per_document(r, doc_of) for r in rankings])  # documents, not passages, compete
        order = sorted(fused, key=lambda d: -fused[d])
        return _mix(self._hits([best[d] for d in order[: top * 3]], relevance), top)

    def _documents_of(self, chunk_ids: set[int]) -> dict[int, int]:
        if not chunk_ids:
            return {}
        with self.read() as db:
            rows = db.execute(
                f"SELECT id, document_id FROM kb_chunks WHERE id IN ({','.join('?' * len(chunk_ids))})",
                list(chunk_ids),
            ).fetchall()
        return {int(c): int(d) for c, d in rows}

    def _lexicon(self) -> Lexicon:
        """The index vocabulary, reloaded when the index changed (in this process or another)."""
        with self.read() as db:
            key = tuple(db.execute("SELECT max(id), count(*) FROM kb_chunks").fetchone())
            if key != self._vocab_key:
                df = {t: int(d) for t, d in db.execute("SELECT term, doc FROM kb_fts_vocab")}
                self._lexicon_cache = Lexicon.build(df, int(key[1] or 0))
                self._vocab_key = key
                self._dense.clear()
        return self._lexicon_cache

    def _query_terms(self, query: str, lang: str) -> list[QueryTerm]:
        return expand_query(analyze(query, lang), self._lexicon())

    def _candidates(
        self, qterms: list[QueryTerm], lang: Lang | None, kinds: tuple[str, ...], limit: int
    ) -> list[tuple[Any, ...]]:
        """FTS5 rows (chunk id, title, section, body terms, bm25) matching any expanded query term."""
        alts = {a for q in qterms for a, _ in q.alternatives}
        if not alts:
            return []
        sql = (
            "SELECT rowid, title, section, body, bm25(kb_fts, 3.0, 1.5, 1.0) AS rank FROM kb_fts "
            f"WHERE kb_fts MATCH ? AND kind IN ({','.join('?' * len(kinds))})"
        )
        params: list[Any] = [" OR ".join(f'"{a}"' for a in sorted(alts)), *kinds]
        if lang:
            sql += " AND lang = ?"
            params.append(lang)
        with self.read() as db:
            return db.execute(sql + " ORDER BY rank LIMIT ?", [*params, limit]).fetchall()

    def _fts_rows(self, chunk_ids: list[int]) -> list[tuple[Any, ...]]:
        """FTS5 rows (chunk id, title, section, body terms, 0.0) of the given chunks."""
        if not chunk_ids:
            return []
        with self.read() as db:
            marks = ",".join("?" * len(chunk_ids))
            sql = f"SELECT rowid, title, section, body, 0.0 FROM kb_fts WHERE rowid IN ({marks})"
            return db.execute(sql, chunk_ids).fetchall()

    def _query_vector(self, query: str) -> Any:
        if self.embedder is None:
            return None
        self._backfill_vectors()
        vec = self._qvecs.pop(query, None)  # the chat asks faq_match and search for the same message
        if vec is None:
            vec = self.embedder.embed_queries([query])[0]
        self._qvecs[query] = vec
        while len(self._qvecs) > 64:
            self._qvecs.pop(next(iter(self._qvecs)))
        return vec

    def _dense_scores(
        self, qvec: Any, lang: Lang | None, role: str, only: list[int] | None, kinds: tuple[str, ...] = ("faq",)
    ) -> dict[int, float]:
        """Cosine similarity of the query vector to chunk vectors (the top DENSE_CANDIDATES, or `only`)."""
        if qvec is None or self.embedder is None:
            return {}
        self._lexicon()  # clears the vector cache when the index changed
        cache_key = (lang, role + ":" + ",".join(kinds))
        if cache_key not in self._dense:
            self._dense[cache_key] = ((), *self._load_vectors(lang, role, kinds))
        _, ids, matrix = self._dense[cache_key]
        if not ids:
            return {}
        sims = matrix @ qvec
        if only is not None:
            pos = {cid: i for i, cid in enumerate(ids)}
            return {cid: float(sims[pos[cid]]) for cid in only if cid in pos}
        order = sims.argsort()[::-1][:DENSE_CANDIDATES]
        return {ids[i]: float(sims[i]) for i in order}

    def _load_vectors(self, lang: Lang | None, role: str, kinds: tuple[str, ...]) -> tuple[list[int], Any]:
        assert self.embedder is not None
        sql = (
            "SELECT v.chunk_id, v.vector FROM kb_vectors v JOIN kb_chunks c ON c.id = v.chunk_id "
            "JOIN kb_documents d ON d.id = c.document_id WHERE v.role = ? AND v.model = ? "
            f"AND d.kind IN ({','.join('?' * len(kinds))})"
        )
        params: list[Any] = [role, self.embedder.model_id, *kinds]
        if lang:
            sql += " AND d.lang = ?"
            params.append(lang)
        with self.read() as db:
            rows = db.execute(sql, params).fetchall()
        return [r[0] for r in rows], from_blob([r[1] for r in rows], self.embedder.dim)

    def _hits(self, chunk_ids: list[int], relevance: dict[int, float]) -> list[_Hit]:
        if not chunk_ids:
            return []
        with self.read() as db:
            rows = db.execute(
                "SELECT c.id, d.id, d.kind, d.path, d.title, d.url, d.lang, d.category, c.section, c.text "
                f"FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id WHERE c.id IN "
                f"({','.join('?' * len(chunk_ids))})",
                chunk_ids,
            ).fetchall()
        by_id = {}
        for cid, doc, kind, path, title, url, lang, category, section, text in rows:
            score = round(min(max(relevance.get(cid, 0.0), 0.0), 1.0), 4)
            by_id[cid] = _Hit(cid, doc, kind, path, title, url, lang, category, section, text, score)
        return [by_id[c] for c in chunk_ids if c in by_id]

    def categories(self) -> dict[str, str]:
        """Category of each article by its path and by its file name (case-folded), for evaluation."""
        with self.read() as db:
            rows = db.execute("SELECT path, category FROM kb_documents WHERE kind = 'article'").fetchall()
        out = {path.casefold().rsplit("/", 1)[-1]: cat for path, cat in rows}
        return out | {path.casefold(): cat for path, cat in rows}

    def count(self) -> dict[str, int]:
        """Documents (articles and FAQ entries), chunks and FAQ entries in the knowledge base."""
        with self.read() as db:
            docs, faqs = db.execute("SELECT count(*), coalesce(sum(kind = 'faq'), 0) FROM kb_documents").fetchone()
            chunks = db.execute("SELECT count(*) FROM kb_chunks").fetchone()[0]
        return {"documents": int(docs), "chunks": int(chunks), "faqs": int(faqs)}


@dataclass(frozen=True)
class _Hit:
    chunk_id: int
    doc_id: int
    kind: str
    path: str
    title: str
    url: str
    lang: Lang
    category: str
    section: str
    text: str
    score: float

    def source(self) -> Source:
        section = self.category if self.kind == "faq" else self.section  # an FAQ entry: its category
        return Source(self.title, self.path, self.score, self.text, self.url, section)


def _coverage(qterms: list[QueryTerm], present: set[str]) -> float:
    """IDF-weighted share of the query terms found among `present` (typo/compound matches count partly)."""
    total = sum(q.weight for q in qterms)
    got = sum(q.weight * max((f for a, f in q.alternatives if a in present), default=0.0) for q in qterms)
    return got / total if total else 0.0


def _rank_lexical(qterms: list[QueryTerm], rows: list[tuple[Any, ...]]) -> dict[int, tuple[float, float]]:
    """BM25 over term groups (a query word scores once, by its best alternative) and coverage, per chunk."""
    if not rows:
        return {}
    k1, b = 1.2, 0.75
    docs = []
    for cid, title, section, body, _ in rows:
        tf: dict[str, float] = {}
        for weight, text in ((3.0, title), (1.5, section), (1.0, body)):
            for t in text.split():
                tf[t] = tf.get(t, 0.0) + weight
        docs.append((cid, tf, len(body.split()) + 1))
    avg = sum(d[2] for d in docs) / len(docs)
    out = {}
    for cid, tf, length in docs:
        norm = k1 * (1 - b + b * length / avg)
        score = 0.0
        for q in qterms:
            best = max((f * tf[a] * (k1 + 1) / (tf[a] + norm) for a, f in q.alternatives if a in tf), default=0.0)
            score += q.weight * best
        out[cid] = (score, _coverage(qterms, set(tf)))
    return out


def _rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of several rankings of the same ids (weighted by FUSION_WEIGHTS)."""
    fused: dict[int, float] = {}
    for weight, ranking in zip(FUSION_WEIGHTS, rankings, strict=False):
        for rank, cid in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + weight / (k + rank)
    return fused


def _mix(hits: list[_Hit], top: int) -> list[_Hit]:
    """Articles lead; at most FAQ_IN_SEARCH FAQ entries, never first, unless articles run out.

    A relevant FAQ entry repeats an article's facts in short (and an FAQ entry close enough to answer
    on its own is served by faq_match before search matters), so the article is the better first
    passage and citation; FAQ entries fill the list when there are not enough articles.
    """
    articles = [h for h in hits if h.kind != "faq"]
    faqs = [h for h in hits if h.kind == "faq"]
    keep = {h.chunk_id for h in faqs[:FAQ_IN_SEARCH]}
    out = [h for h in hits if h.kind != "faq" or h.chunk_id in keep]
    if out and out[0].kind == "faq" and articles:
        out.remove(articles[0])
        out.insert(0, articles[0])
    out += [h for h in faqs if h.chunk_id not in keep][: max(top - len(out), 0)]
    ceiling, ranked = 1.0, []
    for h in out[:top]:  # scores read best first: each is capped by the one ranked above it
        ceiling = min(ceiling, h.score)
        ranked.append(h if h.score == ceiling else replace(h, score=ceiling))
    return ranked


def _first_per_document(ranking: list[int], doc_of: dict[int, int]) -> list[int]:
    """Documents in the order of their best-ranked chunk."""
    return list(dict.fromkeys(doc_of[c] for c in ranking if c in doc_of))


def _rescale(cosine: float, low: float, high: float) -> float:
    """Map an embedding cosine onto [0, 1]: `low` (unrelated texts) -> 0, `high` (same meaning) -> 1."""
    return min(max((cosine - low) / (high - low), 0.0), 1.0)


def _embed_texts(kind: str, title: str, section: str, text: str) -> list[tuple[str, str]]:
    """What is embedded for a chunk: the passage with its title; for an FAQ entry also its question."""
    if kind == "faq":
        return [("passage", f"{title}\n{text}"), ("question", title)]
    return [("passage", f"{title}. {section}\n{text}" if section else f"{title}\n{text}")]


def _article_record(article: Article, rel: str) -> dict[str, Any]:
    chunks = [(c.section, c.text) for c in article.chunks]
    return {
        "kind": "article", "path": rel, "title": article.title, "url": article.url, "lang": article.lang,
        "category": article.category, "chunks": chunks,
        "embed": [p for s, t in chunks for p in _embed_texts("article", article.title, s, t)],
    }  # fmt: skip


def _faq_record(entry: FaqEntry, rel: str) -> dict[str, Any]:
    return {
        "kind": "faq", "path": f"{rel}#{entry.number}", "title": entry.question, "url": entry.url,
        "lang": entry.lang, "category": entry.category, "answer": entry.answer,
        "chunks": [("", entry.answer)], "embed": _embed_texts("faq", entry.question, "", entry.answer),
    }  # fmt: skip


def ensure_demo_kb(kb: KnowledgeBase) -> IngestReport | None:
    """Ingest the bundled demo knowledge base (articles and FAQ) when the KB is empty; None otherwise."""
    if kb.count()["documents"]:
        return None
    return kb.ingest([DEMO_KB_DIR], exclude=DEMO_EXCLUDE)
