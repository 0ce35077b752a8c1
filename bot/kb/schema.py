"""The knowledge base's tables in the shared `firstline.db` (migrations "firstline.knowledge").

`kb_files` (one row per ingested file, with its sha256), `kb_documents` (an article or one FAQ entry),
`kb_chunks` (passages) and `kb_fts`, an FTS5 table over the *analysed* text (see
`bot.kb.analysis.analyze`: stemmed, stop words dropped, ASCII-folded), so German and English inflections
meet; `kb_fts_vocab` is its vocabulary. `kb_vectors` holds float32 embeddings when a dense model is
configured.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

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
