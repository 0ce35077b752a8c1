"""Customer ratings: thumbs on a bot answer, 1-5 stars after a ticket is resolved (migration set `firstline.feedback`).

A rating belongs to what it rates: an answer is its ledger request (`target` = request id, so ratings
group by route and model like every other figure of the ledger), a resolution is its ticket. A customer
may change their mind: the latest rating of a target counts (one row per target, updated in place).
Ratings hold no customer text and no conversation id, so retention has nothing to delete here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.db import Store, Target, connect, exists
from usage.errors import LedgerError
from usage.ledger import iso, utcnow
from usage.provisioning import has_table

migrations = Migrations("firstline.feedback")
KINDS = {"answer": (0, 1), "resolution": (1, 5)}  # kind -> allowed score range (thumbs down/up, stars)


@migrations()
def m001_ratings(db: Database) -> None:
    db.table("ratings").create(
        {"id": int, "kind": str, "target": str, "score": int, "created_at": str, "updated_at": str},
        pk="id",
        not_null={"kind", "target", "score", "created_at", "updated_at"},
    )
    db.execute("CREATE UNIQUE INDEX ratings_one_per_target ON ratings(kind, target)")
    db.table("ratings").create_index(["created_at"])


class FeedbackStore(Store):
    """Writes ratings (the chat) and reads them back (reports, `firstline eval`)."""

    def __init__(self, path: Target) -> None:
        super().__init__(path, migrations)

    def rate(self, kind: str, target: str, score: int) -> None:
        """Record (or change) the rating of an answer (`target`: request id) or a resolution (ticket id)."""
        low, high = KINDS.get(kind, (1, 0))
        if not target or not low <= int(score) <= high:
            raise LedgerError(f"invalid rating {kind!r} {score!r}")
        now = iso(utcnow())
        with self.write() as db:
            db.execute(
                "INSERT INTO ratings (kind, target, score, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(kind, target) DO UPDATE SET score = excluded.score, updated_at = excluded.updated_at",
                [kind, target, int(score), now, now],
            )

    def withdraw(self, kind: str, target: str) -> None:
        """Remove a rating (the customer clicked the same thumb again)."""
        with self.write() as db:
            db.execute("DELETE FROM ratings WHERE kind = ? AND target = ?", [kind, target])

    def score(self, kind: str, target: str) -> int | None:
        with self.read() as db:
            row = db.execute("SELECT score FROM ratings WHERE kind = ? AND target = ?", [kind, target]).fetchone()
        return None if row is None else int(row[0])


@dataclass(frozen=True)
class Feedback:
    """Ratings given in a period: answers (thumbs, by the answer's route) and resolutions (stars)."""

    answers_rated: int
    answers_helpful: int
    by_route: dict[str, tuple[int, int]]  # route -> (rated, helpful)
    resolutions_rated: int
    resolution_stars: int  # sum of the stars

    def as_dict(self) -> dict[str, Any]:
        return {
            "answers_rated": self.answers_rated,
            "answers_helpful": self.answers_helpful,
            "answer_helpful_rate": _rate(self.answers_helpful, self.answers_rated),
            "by_route": {
                route: {"rated": n, "helpful": ok, "helpful_rate": _rate(ok, n)}
                for route, (n, ok) in sorted(self.by_route.items())
            },
            "resolutions_rated": self.resolutions_rated,
            "resolution_rating_mean": round(self.resolution_stars / self.resolutions_rated, 3)
            if self.resolutions_rated
            else None,
        }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def summarize(db: Database, since: datetime | None = None, until: datetime | None = None) -> Feedback | None:
    """The ratings last changed in [since, until) (all when not given); None when nothing was ever rated."""
    if not has_table(db, "ratings"):
        return None
    where, params = "1=1", list[str]()
    if since is not None:
        where, params = where + " AND r.updated_at >= ?", [*params, iso(since)]
    if until is not None:
        where, params = where + " AND r.updated_at < ?", [*params, iso(until)]
    join = "LEFT JOIN requests q ON q.request_id = r.target" if has_table(db, "requests") else ""
    route = "coalesce(q.route, '?')" if join else "'?'"
    by_route: dict[str, tuple[int, int]] = {}
    for name, n, ok in db.execute(
        f"SELECT {route}, count(*), coalesce(sum(r.score), 0) FROM ratings r {join} "
        f"WHERE r.kind = 'answer' AND {where} GROUP BY 1",
        params,
    ).fetchall():
        by_route[str(name)] = (int(n), int(ok))
    n, stars = db.execute(
        f"SELECT count(*), coalesce(sum(score), 0) FROM ratings r WHERE kind = 'resolution' AND {where}", params
    ).fetchone()
    rated = sum(v[0] for v in by_route.values())
    return Feedback(rated, sum(v[1] for v in by_route.values()), by_route, int(n), int(stars))


def feedback(db_path: Target, since: datetime | None = None, until: datetime | None = None) -> Feedback | None:
    """`summarize` over a database file (read-only; None when it holds no ratings table)."""
    if not exists(db_path):
        return None
    db = connect(db_path, readonly=True)
    try:
        return summarize(db, since, until)
    finally:
        db.close()
