"""Processor-sharing billing: each request's fair share of its replica's busy time (issue #16).

A served engine (llama-server with parallel slots, vLLM with continuous batching) computes several requests
in the same decode steps. Each request's own wall-clock interval (and the engine's per-request `timings`)
then counts the shared steps in full, so summing them bills the device several times over (llama.cpp
#9505: four parallel requests each report ~75 s). Instead, on each replica's timeline:

* the boundaries are every request's instants (sent, first token, end; Usage / Measurement `sent_at`,
  `first_token_at`, `ended_at`);
* the time between two consecutive boundaries is split **equally** among the requests active in it
  (processor sharing: k active requests each get 1/k of the device). Equal rather than by tokens: the
  engines report per-request token totals, not per-step ones, so a split by tokens would have to guess how
  each request's tokens fall across the segments; equal shares need no guess, and a request that is
  prefilling a long prompt next to decoding ones is what continuous batching interleaves anyway.

So per replica the billed seconds add up to exactly the replica's busy time (the union of its requests'
active intervals; idle time bills nobody and stays the separate "idle provisioned" line of the reports).

A request's share depends only on the requests that overlap it. It is **provisional** when it finishes
(the requests still running next to it are not known yet: the share can only shrink) and **final** once
every request that could overlap it has finished, i.e. once the window it belongs to has closed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from usage.pricing import to_micros


@dataclass(frozen=True)
class Interval:
    """One request's active interval on a replica's timeline (Unix epoch seconds)."""

    key: Hashable
    start: float
    end: float


def shares(intervals: Iterable[Interval]) -> dict[Hashable, float]:
    """Each request's processor-sharing share of the busy time (seconds), keyed like the intervals.

    The shares add up to busy_seconds() of the same intervals. The sweep keeps C(t), the integral of 1/k(t)
    over the busy time (k active requests at t): a request's share is C(end) - C(start), O(n log n)."""
    out: dict[Hashable, float] = {}
    items = []
    for i in intervals:
        if i.end > i.start:
            items.append(i)
        else:  # an empty (or inverted: clock skew) interval shares nothing
            out.setdefault(i.key, 0.0)
    events: list[tuple[float, int, int]] = []  # (time, +1 start / -1 end, index); ends sort before starts
    for n, i in enumerate(items):
        events.append((i.start, 1, n))
        events.append((i.end, -1, n))
    events.sort(key=lambda e: (e[0], e[1]))
    at_start: dict[int, float] = {}
    integral, active, last = 0.0, 0, 0.0
    for t, kind, n in events:
        if active:
            integral += (t - last) / active
        last = t
        if kind == 1:
            at_start[n] = integral
            active += 1
        else:
            active -= 1
            key = items[n].key
            out[key] = out.get(key, 0.0) + integral - at_start.pop(n)
    return out


def busy_seconds(intervals: Iterable[Interval]) -> float:
    """Length of the union of the intervals: how long the replica had at least one request active."""
    total, end = 0.0, float("-inf")
    for i in sorted(intervals, key=lambda i: (i.start, i.end)):
        if i.end <= end:
            continue
        total += i.end - max(i.start, end)
        end = i.end
    return total


def windows(intervals: Iterable[Interval]) -> list[list[Interval]]:
    """The replica's busy periods (maximal runs of overlapping intervals), oldest first: the closed windows
    in which the billed seconds add up to the busy time."""
    out: list[list[Interval]] = []
    end = float("-inf")
    for i in sorted(intervals, key=lambda i: (i.start, i.end)):
        if not out or i.start > end:
            out.append([])
        out[-1].append(i)
        end = max(end, i.end)
    return out


# -- the ledger's side (usage.ledger calls these inside its write transaction) --------------------------------
MAX_REQUEST_S = 6 * 3600.0  # how far back a request overlapping a window is looked for (longer ones: none)


def engine_columns(m: Any) -> dict[str, Any]:
    """The ledger columns of a Measurement's engine fields; `billing` says how compute_s is billed."""
    return {
        "engine": m.engine or None,
        "replica": m.replica or None,
        "sent_at": m.sent_at,
        "first_token_at": m.first_token_at,
        "ended_at": m.ended_at,
        "engine_prompt_n": m.engine_prompt_n,
        "engine_prompt_ms": m.engine_prompt_ms,
        "engine_predicted_n": m.engine_predicted_n,
        "engine_predicted_ms": m.engine_predicted_ms,
        "engine_cache_n": m.engine_cache_n,
        "estimated": int(bool(m.estimated)),
        "billing": "provisional" if m.shared else "measured",
    }


Rebill = Callable[[dict[str, Any], dict[str, Any]], None]


def bill(db: Any, replica: str, profile: Any, on_rebill: Rebill | None = None) -> int:
    """Re-bill the provisional rows of one replica (the one just finished among them): each gets its share of
    the replica's time among the finished requests known now, and becomes `final` once no request that could
    overlap it is still running (no `started` row began before it ended). Returns the rows made final.

    `on_rebill(old, new)` is called with each re-billed row before and after (the PostgreSQL ledger moves its
    daily rollup by the difference). The provisional rows are locked while they are re-billed (PostgreSQL:
    FOR UPDATE, in request-id order; SQLite's BEGIN IMMEDIATE already serializes writers), so two processes
    settling the same replica do not both move the rollup from the same old figures."""
    cur = db.execute(
        "SELECT * FROM requests WHERE replica = ? AND billing = 'provisional' ORDER BY request_id"
        + getattr(db, "for_update", ""),
        [replica],
    )
    names = _names(cur)
    pending = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    if not pending:
        return 0
    lo = min(float(r["sent_at"]) for r in pending)
    hi = max(float(r["ended_at"] if r["ended_at"] is not None else r["sent_at"]) for r in pending)
    known = db.execute(
        "SELECT request_id, sent_at, ended_at, coalesce(retrieval_s, 0) FROM requests WHERE replica = ? "
        "AND sent_at >= ? AND sent_at <= ? AND ended_at >= ? AND status != 'started'",
        [replica, lo - MAX_REQUEST_S, hi, lo],
    ).fetchall()
    share = shares(Interval(r[0], float(r[1]), float(r[2] if r[2] is not None else r[1])) for r in known)
    retrieval = {r[0]: float(r[3]) for r in known}
    oldest = db.execute("SELECT min(started_at) FROM requests WHERE status = 'started'").fetchone()[0]
    horizon = _epoch(oldest) if oldest else float("inf")
    made_final = 0
    for old in pending:
        rid, ended = old["request_id"], old["ended_at"]
        final = ended is not None and float(ended) < horizon
        compute = retrieval.get(rid, 0.0) + share.get(rid, 0.0)
        new = old | {
            "compute_s": compute,
            "cost_micros": to_micros(profile.request_cost(compute)),
            "profile": profile.name,
            "profile_version": profile.version,
            "currency": profile.currency,
            "billing": "final" if final else "provisional",
        }
        db.execute(
            "UPDATE requests SET compute_s = ?, cost_micros = ?, profile = ?, profile_version = ?, currency = ?, "
            "billing = ? WHERE request_id = ?",
            [new["compute_s"], new["cost_micros"], new["profile"], new["profile_version"], new["currency"],
             new["billing"], rid],
        )  # fmt: skip
        if on_rebill is not None:
            on_rebill(old, new)
        made_final += final
    return made_final


def _names(cur: Any) -> list[str]:
    """A cursor's column names (sqlite3: 7-tuples; psycopg: Column objects)."""
    return [d[0] if isinstance(d, tuple) else d.name for d in cur.description]


def billing_counts(db: Any, since: str, until: str) -> dict[str, int]:
    """How many requests started in [since, until) are billed provisionally (shared replicas, still settling)
    and estimated (the engine reported nothing for them); empty for a ledger from before issue #16.

    Each count reads a partial index (ledger.m008_billing_indexes) that holds only those rows, so a report
    over many closed days does not scan their rows (or partitions, on PostgreSQL) for this note."""
    columns = set(_names(db.execute("SELECT * FROM requests LIMIT 0")))  # SQLite and PostgreSQL alike
    if "billing" not in columns:
        return {}
    period = "started_at >= ? AND started_at < ?"
    (provisional,) = db.execute(
        f"SELECT count(*) FROM requests WHERE billing = 'provisional' AND {period}", [since, until]
    ).fetchone()
    (estimated,) = db.execute(
        f"SELECT count(*) FROM requests WHERE estimated = 1 AND {period}", [since, until]
    ).fetchone()
    return {"provisional": provisional, "estimated": estimated}


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def billing_note(counts: dict[str, int]) -> str:
    """The report's line on requests whose bill may still change or is firstline's estimate."""
    parts = []
    if counts.get("provisional"):
        parts.append(
            f"{counts['provisional']} request(s) billed provisionally: they ran on a shared engine replica next to "
            "requests still running; their share becomes final (it can only go down) once those have finished"
        )
    if counts.get("estimated"):
        parts.append(
            f"{counts['estimated']} request(s) estimated: the engine reported nothing for them (failed or cancelled), "
            "so their time is firstline's clock"
        )
    return "; ".join(parts)
