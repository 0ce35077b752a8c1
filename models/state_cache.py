"""StateCache: saved KV-cache states of recent conversations, so an interleaved conversation resumes cheaply.

llama.cpp keeps one KV cache per context, and this process has one context. When conversation A's next
turn arrives after conversation B's, the prefix A shared with the cache is gone and its whole history
would be prefilled again. Before the live state is overwritten we save its sequence state (only the KV
cells of sequence 0: n_layer x 2 x n_embd_kv x 2 bytes per token, ~23 KB per token for SmolLM2-135M),
keyed by its tokens; a later prompt restores the entry sharing the longest token prefix with it. Entries
are evicted least-recently-used beyond a byte budget. Pure bookkeeping: no llama.cpp calls here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


@dataclass(frozen=True)
class CacheHit:
    """A saved state and how many leading tokens of the asked prompt it covers."""

    tokens: npt.NDArray[np.intc]
    state: bytearray
    prefix: int


class StateCache:
    """Longest-prefix lookup over saved sequence states, LRU-evicted beyond `capacity_bytes`."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = max(0, capacity_bytes)
        self.enabled = self.capacity_bytes > 0
        self._entries: OrderedDict[bytes, tuple[npt.NDArray[np.intc], bytearray]] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # restores (counted by the model)
        self.saves = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def lookup(self, tokens: Sequence[int] | npt.NDArray[np.intc]) -> CacheHit | None:
        """The entry sharing the longest prefix with `tokens` (None when nothing is shared)."""
        if not self._entries:
            return None
        query = np.asarray(tokens, dtype=np.intc)
        best_key, best_len = b"", 0
        for key, (toks, _) in self._entries.items():
            n = common_prefix(toks, query)
            if n > best_len:
                best_key, best_len = key, n
        if best_len == 0:
            return None
        self._entries.move_to_end(best_key)
        toks, state = self._entries[best_key]
        return CacheHit(toks, state, best_len)

    def covers(self, tokens: Sequence[int] | npt.NDArray[np.intc]) -> bool:
        """True when an entry already holds these tokens (or a continuation of them)."""
        query = np.asarray(tokens, dtype=np.intc)
        return any(
            len(toks) >= len(query) and common_prefix(toks, query) == len(query) for toks, _ in self._entries.values()
        )

    def put(self, tokens: Sequence[int] | npt.NDArray[np.intc], state: bytearray) -> bool:
        """Save a state for these tokens; entries it extends are dropped. False when it cannot fit."""
        if not self.enabled or len(state) > self.capacity_bytes:
            return False
        toks = np.array(tokens, dtype=np.intc)
        if self.covers(toks):
            return False
        # an entry whose tokens are a prefix of the new one is superseded by it
        for key, (old, old_state) in list(self._entries.items()):
            if len(old) <= len(toks) and common_prefix(old, toks) == len(old):
                del self._entries[key]
                self._bytes -= len(old_state)
        self._entries[toks.tobytes()] = (toks, state)
        self._bytes += len(state)
        self.saves += 1
        while self._bytes > self.capacity_bytes and self._entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
            self.evictions += 1
        return True

    def clear(self) -> None:
        """Forget every saved state."""
        self._entries.clear()
        self._bytes = 0
