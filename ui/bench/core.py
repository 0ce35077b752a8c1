"""`firstline bench`: how fast firstline is, against what, and where the time goes.

One process run measures, on the same model and prompt: firstline's full chat path (Bot.stream_message
through the ledger), plain llama-cpp-python on a separately loaded `Llama` with identical settings, and
native llama.cpp (`llama-bench`, built from the llama.cpp source llama-cpp-python vendors); the machine's
memory bandwidth and the decode ceiling it implies; prompt caching of follow-up turns; the FAQ fast path;
ledger overhead and report time; concurrent chat sessions through the running server; and how well the
ledger's compute seconds agree with an outside clock. Every figure is a named value with a unit
(`results` in the JSON); targets are judged on the figures and written into a Markdown report with a
plot. Benchmarks print figures; tests only check this plumbing.

This module is the suite's core: figures, targets and statistics, with nothing but the standard library
(scripts/gpu_bench.py runs it on machines without the product). ui/bench/runner.py runs the sections in
order: decode.py (firstline vs llama-cpp-python vs native), limits.py (memory bandwidth, ceilings),
cache.py (prompt caching of follow-up turns), system.py (machine, FAQ, ledger, reports), server.py
(concurrent sessions through the running server) and accounting.py (ledger vs an outside clock), then
report.py writes the Markdown, JSON and plot. The model sections share harness.py; native.py runs
llama-bench.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from usage.stats import percentile

SECTIONS = (
    "machine",
    "decode",
    "limits",
    "cache",
    "faq",
    "ledger",
    "postgres",
    "server",
    "accounting",
    "guard",
    "worker",
    "buffers",
    "threads",
    "engines",
)


@dataclass
class Figure:
    """One measured figure: a stable name, a value (None when not measured) and its unit."""

    name: str
    value: float | None
    unit: str
    label: str = ""
    section: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Target:
    """A performance target judged on measured figures (met is None when it could not be measured)."""

    name: str
    goal: str
    met: bool | None
    measured: str
    cause: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchOptions:
    """What to run and how big; `quick` shrinks every section to fit in about two minutes."""

    out_dir: Path = Path("bench-report")
    quick: bool = False
    sections: tuple[str, ...] = SECTIONS
    gen_tokens: int = 128
    reps: int = 5
    ledger_requests: int = 500
    ledger_rows: int = 1_000_000
    database_url: str | None = None  # PostgreSQL for the `postgres` section (a scratch schema in it)
    pg_rows: int = 10_000_000
    faq_requests: int = 100
    sessions: tuple[int, ...] = (1, 4, 16)
    server_requests: int = 8  # per concurrency level (at least one turn per session)
    server_max_tokens: int = 64
    engine_sessions: tuple[int, ...] = (1, 4, 16, 64)  # the `engines` section (issue #16)
    engine_turns: int = 8  # turns per level at least (one per session at higher levels)
    cache_reps: int = 3
    accounting_runs: int = 3  # plus two with a slow consumer in full runs
    llama_bench: Path | None = None
    # figures of the last GPU run (scripts/gpu_bench.py), quoted in the report as such
    gpu_results: Path | None = Path(__file__).resolve().parents[2] / "docs" / "bench" / "gpu" / "gpu-bench.json"
    threads: int | None = None  # llama.cpp threads for every section (default: the model settings')
    work_dir: Path | None = None

    @classmethod
    def for_mode(cls, quick: bool, **overrides: Any) -> BenchOptions:
        """Defaults for a full run, or the smaller `--quick` run."""
        if quick:
            base = cls(
                quick=True,
                gen_tokens=32,
                reps=2,
                ledger_requests=200,
                ledger_rows=100_000,
                pg_rows=200_000,
                faq_requests=40,
                sessions=(1, 4),
                server_requests=4,
                server_max_tokens=32,
                engine_sessions=(1, 4),
                engine_turns=4,
                cache_reps=1,
                accounting_runs=2,
            )
        else:
            base = cls()
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        return base


@dataclass
class Bench:
    """Collects figures, targets and notes while the sections run."""

    options: BenchOptions
    progress: Callable[[str], None] = lambda _msg: None
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    section: str = ""
    started: float = field(default_factory=time.time)
    work_dir: Path = Path(".")

    def add(self, name: str, value: float | None, unit: str, label: str = "", note: str = "") -> Figure:
        """Record a figure in the current section."""
        fig = Figure(name, None if value is None else float(value), unit, label or name, self.section, note)
        self.figures.append(fig)
        return fig

    def note(self, text: str, section: str | None = None) -> None:
        """An explanation shown under the section in the report."""
        self.notes.setdefault(section or self.section, []).append(text)

    def value(self, name: str) -> float | None:
        """The value of a recorded figure (None when absent or not measured)."""
        for fig in self.figures:
            if fig.name == name:
                return fig.value
        return None

    def target(self, name: str, goal: str, met: bool | None, measured: str, cause: str = "") -> None:
        self.targets.append(Target(name, goal, met, measured, cause))

    def workspace(self, name: str) -> Path:
        """A fresh directory for one section's databases."""
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# -- statistics ----------------------------------------------------------------------------------------
def median(values: Sequence[float | None]) -> float | None:
    """The 50th percentile (usage.stats.percentile, linearly interpolated); None for no values."""
    return percentile(values, 50)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def decode_rate(token_times: Sequence[float], tokens: int | None = None) -> float | None:
    """Decode tokens/s from the times the tokens arrived: (tokens - 1) / (t_last - t_first)."""
    if len(token_times) < 2:
        return None
    n = tokens if tokens is not None else len(token_times)
    span = token_times[-1] - token_times[0]
    return (n - 1) / span if span > 0 and n > 1 else None


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for prose: rounded, or 'n/a'."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


# -- what sections share, targets, the JSON document ----------------------------------------------------
@dataclass
class Shared:
    """Things sections share: the loaded model (once per run) and what earlier sections measured."""

    model: Any = None
    plain: Any = None
    prompt_tokens: int | None = None
    messages: list[Any] = field(default_factory=list)


def _meets(value: float | None, predicate: Callable[[float], bool]) -> bool | None:
    return None if value is None else predicate(value)


def judge_targets(bench: Bench) -> None:
    """Mark each issue #7 target met / missed / not measured from the figures."""
    sel = bench.options.sections
    v = bench.value
    # (section, target name, goal, figure, threshold, as percent, cause key)
    simple = (
        ("decode", "decode_vs_llama_cpp_python", "full chat path decodes at >= 95% of plain llama-cpp-python",
         "decode.ratio.firstline_vs_llama_cpp_python", 0.95, True, "cause.decode_vs_llama_cpp_python"),
        ("decode", "decode_vs_native", "full chat path decodes at >= 85% of native llama.cpp",
         "decode.ratio.firstline_vs_native", 0.85, True, "cause.decode_vs_native"),
        ("cache", "cached_follow_up", "chat path, follow-up on the same topic: starts >= 2x as fast as uncached",
         "cache.chat.speedup.same_conversation", 2.0, False, "cause.cached_follow_up.chat"),
        ("cache", "cached_follow_up_new_topic", "chat path, follow-up on a new topic: starts >= 2x as fast as uncached",
         "cache.chat_topic.speedup.same_conversation", 2.0, False, "cause.cached_follow_up.chat_topic"),
        ("cache", "cached_follow_up_stable_prefix",
         "model, stable prefix: a cached follow-up turn starts >= 2x as fast as an uncached one",
         "cache.model.speedup.same_conversation", 2.0, False, ""),
        ("cache", "interleaved_follow_up",
         "another conversation in between: the follow-up still starts >= 2x faster (state cache)",
         "cache.model.speedup.state_cache", 2.0, False, ""),
    )  # fmt: skip
    for section, name, goal, figure, threshold, percent, cause in simple:
        if section not in sel:
            continue
        r = v(figure)
        shown = f"{fmt(None if r is None else r * 100, 1)}%" if percent else f"{fmt(r, 1)}x"
        bench.target(name, goal, None if r is None else r >= threshold, shown, bench.details.get(cause, ""))
    if "guard" in sel:
        r = v("guard.first_text.ratio")
        bench.target(
            "guard_first_text",
            "grounding guard: first visible text within 1.5x of the unguarded time to first token",
            None if r is None else r <= 1.5,
            f"{fmt(r, 2)}x",
            bench.details.get("cause.guard_first_text", ""),
        )
    if "faq" in sel:
        p50 = v("faq.latency.p50")
        calls = v("faq.model_calls")
        met = None if p50 is None else (p50 < 20.0 and (calls or 0) == 0)
        bench.target(
            "faq_fast_path",
            "FAQ path < 20 ms p50 with no model call",
            met,
            "not yet available" if p50 is None else f"p50 {fmt(p50)} ms, {fmt(calls, 0)} model calls",
            bench.details.get("cause.faq_fast_path", ""),
        )
    if "ledger" in sel:
        p95 = v("ledger.overhead.p95")
        bench.target(
            "ledger_overhead",
            "ledger overhead (start + finish) < 2 ms p95",
            _meets(p95, lambda x: x < 2.0),
            f"p95 {fmt(p95)} ms",
            bench.details.get("cause.ledger_overhead", ""),
        )
    if "engines" in sel:
        judge_engine_targets(bench)
    if "postgres" in sel and bench.options.database_url:
        p95 = v("pg.ledger.overhead.p95")
        bench.target(
            "pg_ledger_overhead",
            "PostgreSQL: ledger overhead (start + finish, with the daily rollup) < 2 ms p95",
            _meets(p95, lambda x: x < 2.0),
            f"p95 {fmt(p95)} ms",
        )
        rows, slowest = v("pg.report.rows"), max(v(f"pg.report.{b}_s") or 0.0 for b in ("day", "month", "route"))
        bench.target(
            "pg_report_10m",
            "PostgreSQL: report over 10 million ledger rows < 1 s",
            None if rows is None or rows < 10_000_000 else slowest < 1.0,
            f"{fmt(slowest, 3)} s (slowest of by day / month / route) over {int(rows or 0):,} rows",
        )
    if "server" in sel:
        levels = bench.options.sessions
        one = v("server.sessions_1.total_tokens_per_s")
        worst = [v(f"server.sessions_{n}.total_tokens_per_s") for n in levels if n > 1]
        measured = [w for w in worst if w is not None]
        met = None if one is None or not measured else min(measured) >= one
        bench.target(
            "concurrency_throughput",
            "concurrent sessions do not lower total throughput below one session's",
            met,
            ", ".join(f"{n}: {fmt(v(f'server.sessions_{n}.total_tokens_per_s'), 1)} tok/s" for n in levels),
            bench.details.get("cause.concurrency_throughput", ""),
        )


def judge_engine_targets(bench: Bench) -> None:
    """Issue #16's targets: llama-server (8 slots) against in-process on this CPU, and conservation."""
    v = bench.value
    one = v("engines.inprocess.sessions_1.total_tokens_per_s")
    eight = v("engines.llama-server_8.sessions_16.total_tokens_per_s")
    r = ratio(eight, one)
    bench.target(
        "engines_throughput",
        "llama-server, 8 slots, 16 sessions: >= 2x the total tokens/s of one in-process session",
        None if r is None else r >= 2.0,
        f"{fmt(eight, 1)} vs {fmt(one, 1)} tok/s ({fmt(r, 2)}x)",
    )
    inproc, served = v("engines.inprocess.sessions_16.ttft.p95"), v("engines.llama-server_8.sessions_16.ttft.p95")
    r = ratio(inproc, served)
    bench.target(
        "engines_ttft",
        "llama-server, 8 slots, 16 sessions: p95 time to first token >= 3x better than in-process",
        None if r is None else r >= 3.0,
        f"p95 {fmt(served)} vs {fmt(inproc)} ms ({fmt(r, 2)}x)",
    )
    ratios = [f.value for f in bench.figures if f.name.endswith(".billed_vs_busy") and f.value is not None]
    worst = max(ratios, key=lambda x: abs(x - 1.0)) if ratios else None
    bench.target(
        "billing_conservation",
        "billed compute within 1 % of each replica's measured busy time, every run",
        None if worst is None else abs(worst - 1.0) <= 0.01,
        f"worst billed/busy {fmt(worst, 3)} over {len(ratios)} runs",
        bench.details.get("cause.billing_conservation", ""),
    )


def results_payload(bench: Bench, files: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON document: `results` (named figures with units), targets, notes, machine details."""
    return {
        "results": [
            {"name": f.name, "value": f.value, "unit": f.unit, "label": f.label, "section": f.section}
            for f in bench.figures
        ],
        "targets": [t.as_dict() for t in bench.targets],
        "notes": bench.notes,
        "details": _jsonable(bench.details),
        "options": _jsonable(asdict(bench.options)),
        "files": files or {},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def spread(values: Iterable[float | None]) -> str:
    """'min-max' of a few values, for notes."""
    vals = [v for v in values if v is not None]
    return f"{fmt(min(vals))}-{fmt(max(vals))}" if vals else "n/a"
