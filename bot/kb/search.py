"""Search: the knowledge base's queries, passages for a question and the closest FAQ entry.

Search is lexical first: query terms are expanded against the index vocabulary (typo correction by edit
distance, German compound parts, prefixes; see `bot.kb.analysis.expand_query`), FTS5 finds candidate
chunks and a BM25 over those term groups ranks them. With an embedder, a cosine ranking over all chunk
vectors of the language is fused in by weighted reciprocal rank fusion at document level (dense counts
twice; the scoring itself is in `bot.kb.ranking`). Results are one passage per document, best first.

`Source.score` is a relevance in [0, 1]: the IDF-weighted share of the query's informative words found
in the passage (typo and compound matches count partly), averaged with the embedding similarity
(rescaled) when a dense model is active. Results are ranked by the fusion, and a score is capped by the
one above it, so scores never rise down the list. Below `MIN_RELEVANCE` the knowledge base has nothing
relevant. On the demo questions, with embeddings every answerable question's best score was >= 0.32 while
7 of 26 questions the KB cannot answer scored below 0.3; lexical scores run lower (26 of 90 answerable
below 0.3, 7 below 0.2), so without embeddings FIRSTLINE_MIN_RELEVANCE=0.2 is the better setting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.embeddings import Embedder, from_blob
from bot.kb.analysis import Lexicon, QueryTerm, analyze, expand_query, idf
from bot.kb.ingestion import Ingestion
from bot.kb.ranking import (
    COSINE,
    QQ_COSINE,
    Hit,
    by_outline,
    coverage,
    first_per_document,
    mix,
    rank_lexical,
    rescale,
    rrf,
)
from bot.language import detect_language
from bot.types import Lang, Source

MIN_RELEVANCE = 0.3  # below this best score, the knowledge base has nothing relevant for the question
FAQ_THRESHOLD = 0.8  # faq_match score from which an FAQ answer is given with no model call
CANDIDATES = 200  # FTS5 candidates re-ranked per query
DENSE_CANDIDATES = 100  # nearest chunks by embedding taken into the fusion


class KnowledgeSettings(BaseSettings):
    """Retrieval and FAQ thresholds, and whether the embedding model is used."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    faq_threshold: float = Field(
        FAQ_THRESHOLD, ge=0.0, le=1.0, description="faq_match score from which the FAQ answer is sent as is."
    )
    min_relevance: float = Field(
        MIN_RELEVANCE, ge=0.0, le=1.0, description="Best search score below which the KB has nothing relevant."
    )
    passages: int = Field(
        5, ge=1, le=50, description="Passages retrieved for one question (FIRSTLINE_TOP_K is the sampling top-k)."
    )
    embeddings: Literal["auto", "off"] = Field(
        "auto", description="auto: use the bundled multilingual embedding model when installed; off: BM25 only."
    )


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


class KnowledgeBase(Ingestion):
    """Ingested documents and FAQ entries with lexical (and optional dense) search."""

    def __init__(self, path: Path | str, *, embedder: Embedder | None = None) -> None:
        super().__init__(path, embedder=embedder)
        self._vocab_key: tuple[Any, ...] = ()
        self._lexicon_cache = Lexicon.build({}, 0)
        self._dense: dict[tuple[str | None, str], tuple[tuple[Any, ...], list[int], Any]] = {}
        self._qvecs: dict[str, Any] = {}

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
            forward = coverage(qterms, set(title_terms))  # how much of the question the FAQ asks
            own = [t for t in dict.fromkeys(title_terms)]
            weights = [idf(lexicon.df.get(t, 1), lexicon.n) for t in own]
            backward = sum(w for t, w in zip(own, weights, strict=True) if t in matched) / (sum(weights) or 1.0)
            lexical = (forward * backward) ** 0.5
            score = lexical if qvec is None else 0.5 * lexical + 0.5 * rescale(qq.get(row[0], 0.0), *QQ_COSINE)
            if best is None or score > best[0]:
                best = (score, row)
        assert best is not None
        hit = self._hits([best[1][0]], {best[1][0]: best[0]})[0]
        return FaqMatch(hit.title, hit.text, round(best[0], 4), hit.source(), hit.lang)

    def _search(self, query: str, lang: Lang | None, kinds: tuple[str, ...], top: int) -> list[Hit]:
        qlang = lang or detect_language(query)
        qterms = self._query_terms(query, qlang)
        rows = self._candidates(qterms, lang, kinds, CANDIDATES)
        lexical = rank_lexical(qterms, rows)  # chunk id -> (bm25-like score, coverage)
        qvec = self._query_vector(query)
        dense = self._dense_scores(qvec, lang, "passage", None, kinds) if qvec is not None else {}
        rankings = [sorted(lexical, key=lambda c: -lexical[c][0]), sorted(dense, key=lambda c: -dense[c])]
        outline: dict[int, float] = {}
        faq: dict[int, float] = {}
        if qvec is not None and "article" in kinds:  # the title and heading field: one vector per article
            outline = self._dense_scores(qvec, lang, "outline", None, ("article",))
            faq = self._dense_scores(qvec, lang, "passage", None, ("faq",)) if "faq" in kinds else {}
        doc_of = self._documents_of(set(lexical) | set(dense) | set(outline) | set(faq))
        by_chunk = rrf(rankings)  # picks each document's passage: the one both rankings like best
        best: dict[int, int] = {}
        for cid, doc in doc_of.items():
            if cid in by_chunk and (doc not in best or by_chunk[cid] > by_chunk[best[doc]]):
                best[doc] = cid
        documents = [first_per_document(r, doc_of) for r in rankings]
        if outline:
            documents.append(by_outline(outline, faq, doc_of))
            for cid in outline | faq:  # found by its outline alone: the chunk that carries the outline
                best.setdefault(doc_of[cid], cid)
        fused = rrf(documents)  # documents, not passages, compete
        chosen = [best[d] for d in sorted(fused, key=lambda d: -fused[d])[: top * 3]]
        unseen = [c for c in chosen if c not in dense and c not in lexical]  # found by its outline alone
        if qvec is not None and unseen:
            dense = dense | self._dense_scores(qvec, lang, "passage", unseen, kinds)
        relevance: dict[int, float] = {}
        for cid in chosen:
            cover = lexical.get(cid, (0.0, 0.0))[1]
            relevance[cid] = cover if qvec is None else 0.5 * cover + 0.5 * rescale(dense.get(cid, 0.0), *COSINE)
        return mix(self._hits(chosen, relevance), top)

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

    def _hits(self, chunk_ids: list[int], relevance: dict[int, float]) -> list[Hit]:
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
            by_id[cid] = Hit(cid, doc, kind, path, title, url, lang, category, section, text, score)
        return [by_id[c] for c in chunk_ids if c in by_id]

    def index_state(self) -> tuple[Any, ...]:
        """(newest chunk id, chunk count): changes whenever the index does (in this process or another)."""
        with self.read() as db:
            return tuple(db.execute("SELECT max(id), count(*) FROM kb_chunks").fetchone())

    def texts(self) -> list[str]:
        """Every passage and every document title of the index (e.g. to build a vocabulary)."""
        with self.read() as db:
            return [r[0] for r in db.execute("SELECT text FROM kb_chunks UNION ALL SELECT title FROM kb_documents")]

    def categories(self) -> dict[str, str]:
        """Category of each article by its path and by its file name (case-folded), for evaluation."""
        with self.read() as db:
            rows = db.execute("SELECT path, category FROM kb_documents WHERE kind = 'article'").fetchall()
        out = {path.casefold().rsplit("/", 1)[-1]: cat for path, cat in rows}
        return out | {path.casefold(): cat for path, cat in rows}

    def topics(self, lang: Lang, *, limit: int = 6, per_topic: int = 4) -> list[tuple[str, list[str]]]:
        """The knowledge base's categories with most entries in `lang` (at most `limit`), each with up to
        `per_topic` questions a customer might ask about it: its FAQ questions in file order, else its
        article titles. Documents without a category are left out. For the chat's welcome."""
        with self.read() as db:
            rows = db.execute(
                "SELECT category, kind, title FROM kb_documents WHERE lang = ? AND category != '' "
                "ORDER BY category, kind = 'faq' DESC, id",
                [lang],
            ).fetchall()
        found: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        faq: dict[str, bool] = {}
        for category, kind, title in rows:  # per category, FAQ entries come first
            sizes[category] = sizes.get(category, 0) + 1
            faq.setdefault(category, kind == "faq")
            questions = found.setdefault(category, [])
            if len(questions) < per_topic and (kind == "faq") == faq[category] and title not in questions:
                questions.append(title)
        ranked = sorted(found, key=lambda c: (-sizes[c], c))[:limit]
        return [(c, found[c]) for c in sorted(ranked)]

    def count(self) -> dict[str, int]:
        """Documents (articles and FAQ entries), chunks and FAQ entries in the knowledge base."""
        with self.read() as db:
            docs, faqs = db.execute("SELECT count(*), coalesce(sum(kind = 'faq'), 0) FROM kb_documents").fetchone()
            chunks = db.execute("SELECT count(*) FROM kb_chunks").fetchone()[0]
        return {"documents": int(docs), "chunks": int(chunks), "faqs": int(faqs)}

    def documents(self) -> list[KbDocument]:
        """Every document with its passages (and their stored passage vectors when a model embedded them),
        in ingestion order: what fine-tuning builds its examples from."""
        model = self.embedder.model_id if self.embedder is not None else ""
        with self.read() as db:
            rows = db.execute(
                "SELECT d.id, d.kind, d.path, d.title, d.lang, d.category, d.origin, d.answer, c.section, c.text, "
                "v.vector FROM kb_documents d JOIN kb_chunks c ON c.document_id = d.id LEFT JOIN kb_vectors v "
                "ON v.chunk_id = c.id AND v.role = 'passage' AND v.model = ? ORDER BY d.id, c.ord, c.id",
                [model],
            ).fetchall()
        docs: dict[int, KbDocument] = {}
        for doc_id, kind, path, title, lang, category, origin, answer, section, text, blob in rows:
            passage = KbPassage(section, text, from_blob([blob], len(blob) // 4)[0] if blob else None)
            known = docs.get(doc_id)
            docs[doc_id] = (
                replace(known, passages=(*known.passages, passage))
                if known
                else KbDocument(path, kind, title, lang, category, origin, answer, (passage,))
            )
        return list(docs.values())


@dataclass(frozen=True)
class KbPassage:
    """One passage of a document as stored, with its passage vector (None without an embedding model)."""

    section: str
    text: str
    vector: Any = None


@dataclass(frozen=True)
class KbDocument:
    """An article or FAQ entry as stored (`answer` is an FAQ entry's answer)."""

    path: str
    kind: str
    title: str
    lang: Lang
    category: str
    origin: str
    answer: str
    passages: tuple[KbPassage, ...]
