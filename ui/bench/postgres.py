"""The PostgreSQL store at scale: ledger write overhead, two ways of writing a request, a report over N rows.

Runs when a PostgreSQL URL is given (`firstline bench --database-url`, FIRSTLINE_BENCH_DATABASE_URL;
`make bench` starts Debian's PostgreSQL with scripts/postgres.sh and passes one). Everything happens in a
scratch schema that is dropped afterwards.

- `pg.ledger.*`: Ledger.start + Ledger.finish per request (two commits, the finish also updates the daily
  rollups of sums and conversations), p50/p95 (target: p95 under 2 ms).
- `pg.write.update.*` vs `pg.write.append.*`: the bare statements of the two designs the issue asked to
  compare, on a monthly-partitioned table: insert a `started` row and finish it with one update, or
  append a start row and a finish row to two insert-only tables (no update, no dead tuples).
- `pg.report.*`: `firstline report` by day / month / route over N synthetic rows spread over a year
  (COPY, then the rollups built once), in process, best of 3, without and with the conversation outcomes
  (deflection: closed days from the daily conversation rollup), and those outcomes alone (target: under 1 s over
  10 million rows).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ui.bench.core import Bench, Shared
from usage.stats import percentile


def postgres(bench: Bench, shared: Shared) -> None:
    """The PostgreSQL section (skipped with a note when no database URL is given)."""
    url = bench.options.database_url
    if not url:
        bench.note("not run: no PostgreSQL URL (`firstline bench --database-url`, or `make bench`)")
        return
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        version = conn.execute("SHOW server_version").fetchone()
    bench.details["postgres_version"] = version[0] if version else "?"
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        _ledger_overhead(bench, scoped)
        _write_patterns(bench, url, schema)
        _report(bench, scoped)
    finally:
        from usage.db import close_all

        close_all(scoped)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _add_percentiles(bench: Bench, name: str, values: list[float], label: str) -> None:
    for q in (50, 95):
        p = percentile(values, q)
        bench.add(f"{name}.p{q}", None if p is None else p * 1000, "ms", f"{label}, p{q}")


def _ledger_overhead(bench: Bench, url: str) -> None:
    from usage.ledger import Ledger, Measurement

    led = Ledger(url, heartbeat=False)
    m = Measurement(prefill_s=0.05, decode_s=1.2, prompt_tokens=150, completion_tokens=64, model_id="m", device="CPU")
    totals = []
    try:
        for i in range(20 + bench.options.ledger_requests):
            t0 = time.perf_counter()
            rid = led.start(conversation_id=f"c{i % 50}", route="model", model_id="m", device="CPU")
            led.finish(rid, status="completed", measurement=m)
            if i >= 20:
                totals.append(time.perf_counter() - t0)
    finally:
        led.close()
    _add_percentiles(bench, "pg.ledger.overhead", totals, "PostgreSQL: Ledger.start + finish (with rollup)")


def _write_patterns(bench: Bench, url: str, schema: str) -> None:
    """Bare psycopg: insert-then-update vs an append-only pair, both two commits per request."""
    import psycopg

    month = datetime.now(UTC).replace(day=1)
    following = (month + timedelta(days=32)).replace(day=1)
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        conn.execute(
            'CREATE TABLE w_update (request_id TEXT COLLATE "C", started_at TEXT COLLATE "C", status TEXT, '
            "compute_s DOUBLE PRECISION, cost_micros BIGINT, PRIMARY KEY (request_id, started_at)) "
            "PARTITION BY RANGE (started_at)"
        )
        bounds = f"FROM ('{month:%Y-%m}') TO ('{following:%Y-%m}')"
        conn.execute(f"CREATE TABLE w_update_now PARTITION OF w_update FOR VALUES {bounds}")
        conn.execute("CREATE INDEX ON w_update (status)")
        conn.execute('CREATE TABLE w_start (request_id TEXT COLLATE "C" PRIMARY KEY, started_at TEXT, status TEXT)')
        conn.execute(
            'CREATE TABLE w_finish (request_id TEXT COLLATE "C" PRIMARY KEY, finished_at TEXT, status TEXT, '
            "compute_s DOUBLE PRECISION, cost_micros BIGINT)"
        )
        runs: dict[str, list[float]] = {"update": [], "append": []}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for i in range(20 + bench.options.ledger_requests):
            for kind in ("update", "append"):
                rid = uuid.uuid4().hex
                t0 = time.perf_counter()
                if kind == "update":
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO w_update (request_id, started_at, status) VALUES (%s, %s, 'started')",
                            [rid, now],
                        )
                    with conn.transaction():
                        conn.execute(
                            "UPDATE w_update SET status = 'completed', compute_s = 1.25, cost_micros = 46725 "
                            "WHERE request_id = %s AND status = 'started'",
                            [rid],
                        )
                else:
                    with conn.transaction():
                        conn.execute("INSERT INTO w_start VALUES (%s, %s, 'started')", [rid, now])
                    with conn.transaction():
                        conn.execute("INSERT INTO w_finish VALUES (%s, %s, 'completed', 1.25, 46725)", [rid, now])
                if i >= 20:
                    runs[kind].append(time.perf_counter() - t0)
    _add_percentiles(bench, "pg.write.update", runs["update"], "insert on start, one update on finish")
    _add_percentiles(bench, "pg.write.append", runs["append"], "append-only start row + finish row")
    up, ap = (percentile(runs[k], 95) or 0.0 for k in ("update", "append"))
    bench.note(
        f"Writing a request as insert-then-update takes {up * 1000:.3f} ms p95, as an append-only pair "
        f"{ap * 1000:.3f} ms p95 (two commits each; each commit waits for one WAL flush). The ledger keeps "
        "insert-then-update: the append-only pair is not cheaper to write, and every reader would have to join "
        "the two halves (or a view would), while the one-row design keeps `requests` a plain table."
    )


def _report(bench: Bench, url: str) -> None:
    from usage.pricing import DEFAULT_PROFILE
    from usage.reports import build_report, outcomes, synthetic_ledger

    n = bench.options.pg_rows
    bench.progress(f"writing {n:,} synthetic ledger rows to PostgreSQL (COPY) ...")
    t0 = time.perf_counter()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=365)
    synthetic_ledger(url, n, days=365, start=start)
    bench.add("pg.report.rows", n, "rows", "ledger rows on PostgreSQL (12 monthly partitions)")
    bench.add("pg.report.fill_s", time.perf_counter() - t0, "s", "writing them with COPY and building the rollup")
    for by in ("day", "month", "route"):
        best = _best_of(3, lambda by=by: build_report(url, DEFAULT_PROFILE, by=by, with_outcomes=False))
        bench.add(f"pg.report.{by}_s", best, "s", f"report --by {by} over all rows (sums, p50/p95), best of 3")
    best = _best_of(3, lambda: build_report(url, DEFAULT_PROFILE, by="day"))
    bench.add(
        "pg.report.day_outcomes_s", best, "s", "report --by day with the conversation outcomes (deflection), best of 3"
    )
    best = _best_of(3, lambda: outcomes(url, start, datetime.now(UTC)))
    bench.add(
        "pg.report.outcomes_s", best, "s", "the conversation outcomes alone over all rows (daily rollup), best of 3"
    )


def _best_of(n: int, fn: Any) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
