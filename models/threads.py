"""ThreadGovernor: fewer llama.cpp threads while other processes keep cores busy.

llama.cpp's CPU threads meet at a barrier after every graph node. When another process (an ingest, a
training run, a second service) takes one of two cores, a 2-thread decode keeps waiting for the thread that
has no core: measured here 112 -> 32 tokens/s, and ~70 -> 3 in the field, where every model question then
timed out. One thread beside the busy core decodes at ~82 tokens/s, but idle it is 25 % slower than two.
No fixed setting is right for both (OpenMP's passive wait policy halves idle speed; docs/performance.md),
so the thread count follows the machine: between tokens, at most every `interval_s`, the governor reads how
much CPU the rest of the machine used since its last look (/proc/stat minus this process's own time from
/proc/self/stat) and uses the cores that are left, with hysteresis so it does not flap.

Pure bookkeeping over two text sources, so tests can inject any machine; `llama_set_n_threads` is called
by the model (models/llama.py) when the count changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

# another process is counted as taking a core when it used this share of one over the last interval, and as
# having given it back below the lower share (hysteresis: a short burst does not flip the count back and forth)
TAKEN = 0.6
RELEASED = 0.3


def machine_busy_ticks(text: str | None = None) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat's first line."""
    if text is None:
        text = Path("/proc/stat").read_text()
    fields = [int(x) for x in text.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def own_ticks(text: str | None = None) -> int:
    """This process's user + system clock ticks so far, from /proc/self/stat."""
    if text is None:
        text = Path("/proc/self/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


class ThreadGovernor:
    """Chooses how many of `max_threads` llama.cpp threads to use from what other processes take."""

    def __init__(
        self,
        max_threads: int,
        *,
        cores: int | None = None,
        online: int | None = None,
        interval_s: float = 0.25,
        machine: Callable[[], tuple[int, int]] = machine_busy_ticks,
        own: Callable[[], int] = own_ticks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.cores = cores or len(os.sched_getaffinity(0))
        self.online = online or os.cpu_count() or self.cores  # CPUs /proc/stat's first line adds up
        self.interval_s = interval_s
        self._machine, self._own, self._clock = machine, own, clock
        self._taken = 0  # cores counted as taken by other processes
        self.others = 0.0  # cores other processes used over the last interval
        self.changes = 0
        self._last_at = clock()
        self._last = self._sample()

    @property
    def threads(self) -> int:
        """The thread count to use now (without looking again)."""
        return max(1, min(self.max_threads, self.cores - self._taken))

    def update(self, *, force: bool = False) -> int:
        """Look again if `interval_s` has passed (`force`: if a tenth of a second has, e.g. before a request's
        prompt, when the idle gap since the last request shows what the others use); returns the count to use."""
        now = self._clock()
        if now - self._last_at < (min(0.1, self.interval_s) if force else self.interval_s):
            return self.threads
        sample = self._sample()
        busy = sample[0] - self._last[0]
        total = sample[1] - self._last[1]
        mine = sample[2] - self._last[2]
        if total <= 0:
            return self.threads
        # ticks are per CPU: total ticks over the interval correspond to all online CPUs' time
        self.others = max(0.0, (busy - mine) / total * self.online)
        self._last, self._last_at = sample, now
        before = self.threads
        while self._taken < self.cores - 1 and self.others >= self._taken + TAKEN:
            self._taken += 1
        while self._taken > 0 and self.others <= self._taken - 1 + RELEASED:
            self._taken -= 1
        if self.threads != before:
            self.changes += 1
        return self.threads

    def _sample(self) -> tuple[int, int, int]:
        busy, total = self._machine()
        return busy, total, self._own()
