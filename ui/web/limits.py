"""Bounds for what one customer can make the server do: message rate per session and per client address.

Gradio bounds the chat queue (`max_size`) and the work per event; these limits bound how fast one
browser session (and, more loosely, one client address: a script can open a new session per message)
may send. A throttled customer is told, in their language, how long to wait; nothing is stored and no
ledger row is written for a refused message. Limiters are in memory and per process, and their key set
is bounded so a flood of new sessions cannot grow memory without limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

TOO_FAST = {  # in the customer's language
    "en": "You are sending messages too quickly. Please wait {s} seconds and try again.",
    "de": "Sie senden gerade sehr viele Nachrichten. Bitte warten Sie {s} Sekunden und versuchen Sie es dann erneut.",
}


class SlidingWindowLimiter:
    """At most `limit` events per key within `window_s` seconds; `limit` 0 disables the limiter."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Record one event for `key`; 0.0 when allowed, else the seconds until the next is allowed."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            q = self._events.get(key)
            if q is None:
                q = self._events[key] = deque()
                while len(self._events) > self.max_keys:  # forget the least recently active key
                    self._events.popitem(last=False)
            else:
                self._events.move_to_end(key)
            while q and now - q[0] >= self.window_s:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.001, self.window_s - (now - q[0]))
            q.append(now)
            return 0.0

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class ChatLimits:
    """The customer chat's limits: per browser session and per client address."""

    per_session: SlidingWindowLimiter
    per_client: SlidingWindowLimiter

    @classmethod
    def create(cls, per_session: int, per_client: int, window_s: float, max_keys: int = 50_000) -> ChatLimits:
        """Limiters with the same window (see ServerSettings.chat_rate_*)."""
        return cls(
            SlidingWindowLimiter(per_session, window_s, max_keys=max_keys),
            SlidingWindowLimiter(per_client, window_s, max_keys=max_keys),
        )

    def check(self, session: str | None, client: str | None, lang: str = "en") -> str | None:
        """None when the message may go ahead, else the customer-facing "please wait" text in `lang`."""
        wait = self.per_session.hit(f"s:{session}") if session else 0.0
        if not wait and client:
            wait = self.per_client.hit(f"c:{client}")
        if wait:
            return TOO_FAST.get(lang, TOO_FAST["en"]).format(s=max(1, math.ceil(wait)))
        return None
