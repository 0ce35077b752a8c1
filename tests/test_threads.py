"""ThreadGovernor (issue #11, item 5): fewer llama.cpp threads while other processes keep cores busy.

The governor reads /proc/stat (all CPUs) and /proc/self/stat (this process); here both are injected, so a
busy neighbour, a burst and an idle machine are exact.
"""

from __future__ import annotations

import pytest

from models.threads import ThreadGovernor, machine_busy_ticks, own_ticks


class Machine:
    """A 2-CPU machine whose tick counters the test advances."""

    def __init__(self) -> None:
        self.busy = self.total = self.own = 0
        self.now = 0.0

    def run(self, seconds: float, *, mine: float, others: float, cpus: int = 2) -> None:
        """Advance by `seconds` with this process using `mine` cores and other processes `others` cores."""
        ticks = round(seconds * 100)  # USER_HZ
        self.total += ticks * cpus
        self.busy += round(ticks * min(cpus, mine + others))
        self.own += round(ticks * mine)
        self.now += seconds

    def governor(self, max_threads: int = 2) -> ThreadGovernor:
        return ThreadGovernor(max_threads, cores=2, online=2, machine=lambda: (self.busy, self.total),
                              own=lambda: self.own, clock=lambda: self.now)  # fmt: skip


def test_all_threads_while_the_machine_is_free_one_fewer_beside_a_busy_core() -> None:
    m = Machine()
    gov = m.governor()
    m.run(0.3, mine=2.0, others=0.0)
    assert gov.update() == 2
    m.run(0.3, mine=1.3, others=0.7)  # a neighbour starts: our two threads now share the CPUs with it
    assert gov.update() == 1 and gov.others == pytest.approx(0.7, abs=0.05)
    m.run(0.3, mine=1.0, others=1.0)  # one thread beside it
    assert gov.update() == 1
    m.run(0.3, mine=1.0, others=0.0)  # it is gone
    assert gov.update() == 2 and gov.changes == 2


def test_a_short_burst_or_the_web_process_do_not_flip_the_count() -> None:
    m = Machine()
    gov = m.governor()
    m.run(0.3, mine=1.8, others=0.2)  # the web process streaming pieces, a query being embedded
    assert gov.update() == 2
    m.run(0.3, mine=1.0, others=1.0)
    assert gov.update() == 1
    m.run(0.3, mine=1.0, others=0.45)  # between the thresholds: stays where it is
    assert gov.update() == 1
    m.run(0.1, mine=2.0, others=0.0)
    assert gov.update() == 1  # looked less than interval_s ago: no new look
    m.run(0.2, mine=1.0, others=0.0)
    assert gov.update() == 2


def test_never_below_one_thread_nor_above_the_maximum() -> None:
    m = Machine()
    gov = m.governor(max_threads=8)
    m.run(0.3, mine=0.0, others=2.0)  # everything taken by others
    assert gov.update(force=True) == 1
    m.run(0.3, mine=0.0, others=0.0)
    assert gov.update() == 2  # the cores this process may use (2), not the configured 8


def test_before_a_request_the_idle_gap_shows_what_the_others_use() -> None:
    m = Machine()
    gov = m.governor()
    m.run(5.0, mine=0.0, others=1.0)  # between requests a training run kept one core busy
    assert gov.update(force=True) == 1


def test_the_proc_files_are_read() -> None:
    busy, total = machine_busy_ticks("cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (161, 981)
    stat = "4242 (python -m x) S 1 2 3 4 5 6 7 8 9 10 70 30 0 0 20 0"
    assert own_ticks(stat) == 100
    assert machine_busy_ticks()[1] > 0 and own_ticks() >= 0  # this machine's real files
