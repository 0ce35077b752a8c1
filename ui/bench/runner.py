"""Runs the benchmark sections in order, judges the targets and writes the report (see ui/bench/core.py)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ui.bench import (
    accounting,
    cache,
    decode,
    engines,
    guard,
    harness,
    limits,
    postgres,
    report,
    server,
    system,
    threads,
    worker,
)
from ui.bench.core import SECTIONS, Bench, BenchOptions, Shared, judge_targets

SectionFn = Callable[[Bench, Shared], None]
FUNCTIONS: dict[str, SectionFn] = {
    "machine": system.machine,
    "decode": decode.decode,
    "limits": limits.limits,
    "cache": cache.follow_up_cache,
    "faq": system.faq,
    "ledger": system.ledger,
    "postgres": postgres.postgres,
    "server": server.concurrency,
    "accounting": accounting.accounting,
    "worker": worker.worker_hop,
    "buffers": worker.extra_buffers,
    "threads": threads.threads,
    "guard": guard.guard,
    "engines": engines.engines,
}


def run_bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> Bench:
    """Run the selected sections in order, judge the targets and write the report into options.out_dir."""
    bench = Bench(options, progress or (lambda _m: None))
    shared = Shared()
    selected = [s for s in SECTIONS if s in options.sections]
    with tempfile.TemporaryDirectory(prefix="firstline-bench-", dir=options.work_dir) as tmp:
        bench.work_dir = Path(tmp)
        bench.details["load_before"] = os.getloadavg()
        bench.details["machine"] = system.machine_info()
        for name in selected:
            bench.section = name
            bench.progress(f"[{name}] ...")
            t0 = time.perf_counter()
            try:
                FUNCTIONS[name](bench, shared)
            except Exception as exc:  # one broken section must not lose the others' figures
                bench.note(f"**section failed**: {type(exc).__name__}: {exc}")
                bench.progress(f"[{name}] failed: {type(exc).__name__}: {exc}")
            bench.details.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            harness.close_services(bench)  # what a section that failed midway left open (not a figure)
        bench.details["load_after"] = os.getloadavg()
        bench.section = "targets"
        judge_targets(bench)
    bench.details["runtime_s"] = round(time.time() - bench.started, 1)
    report.write(bench)
    return bench
