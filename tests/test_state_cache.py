"""The KV state cache: an interleaved conversation resumes from its saved state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.state_cache import StateCache, common_prefix
from models.types import ChatMessage


def test_common_prefix() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.intc)
    assert common_prefix(a, np.array([1, 2, 9], dtype=np.intc)) == 2
    assert common_prefix(a, a[:2]) == 2
    assert common_prefix(a, np.array([], dtype=np.intc)) == 0


def test_lookup_finds_the_longest_shared_prefix() -> None:
    cache = StateCache(1000)
    cache.put([1, 2, 3, 4, 5], bytearray(10))
    cache.put([1, 2, 7, 8], bytearray(10))
    hit = cache.lookup([1, 2, 3, 4, 9, 9])
    assert hit is not None and hit.prefix == 4 and list(hit.tokens) == [1, 2, 3, 4, 5]
    assert cache.lookup([5, 5]) is None


def test_a_longer_state_supersedes_its_prefix_and_budget_evicts_oldest() -> None:
    cache = StateCache(25)
    cache.put([1, 2], bytearray(10))
    cache.put([1, 2, 3], bytearray(10))  # extends [1, 2]: replaces it
    assert len(cache) == 1 and cache.size_bytes == 10
    assert not cache.put([1, 2], bytearray(10))  # already covered by [1, 2, 3]
    cache.put([4, 5], bytearray(10))
    cache.put([6, 7], bytearray(10))  # over 25 bytes: the least recently used ([1, 2, 3]) goes
    assert cache.lookup([1, 2, 3]) is None and cache.evictions == 1
    assert not cache.put([8], bytearray(30))  # bigger than the whole budget
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0


def test_disabled_cache_stores_nothing() -> None:
    cache = StateCache(0)
    assert not cache.enabled and not cache.put([1], bytearray(1))


@pytest.mark.real_model
def test_follow_up_after_another_conversation_resumes_from_the_saved_state(real_model: Any) -> None:
    system = ChatMessage("system", "You are the support assistant of Lumenet. Answer briefly. " * 8)
    first = [system, ChatMessage("user", "How do I reset my password?")]
    answer, _ = real_model.complete(first, max_tokens=24)
    real_model.complete([system, ChatMessage("user", "My internet is slow in the evening.")], max_tokens=24)
    follow = first + [ChatMessage("assistant", answer), ChatMessage("user", "And the two-factor login?")]
    text, usage = real_model.complete(follow, max_tokens=16)
    # without the state cache only the system prompt would be shared with the live KV cache
    assert usage.cached_tokens > real_model.count_tokens(first) - 2
    real_model.reset_cache()
    cold_text, cold = real_model.complete(follow, max_tokens=16)
    assert cold.cached_tokens == 0
    assert text == cold_text  # greedy decoding: the restored state computes the same answer
