"""Staff and admin logins: hashed passwords, expiring server-side sessions, rate-limited login.

Passwords are hashed with scrypt (stdlib) and a per-user salt. A session is a random token in an
HttpOnly cookie; only its SHA-256 is stored, with an expiry. Roles: `staff` (staff console) and `admin`
(admin dashboard and staff console). Customers never log in. Every Gradio mount for staff/admin checks
the session on each request (see ui/web/server.py); handlers re-read the user from the request, never from
browser state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from usage.db import Store, Target
from usage.ledger import iso, parse_iso, utcnow

migrations = Migrations("firstline.ui")
ROLES = ("staff", "admin")
SESSION_COOKIE = "firstline_session"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(Exception):
    """A user-management request was invalid (shown to the operator or the person logging in)."""


@migrations()
def m001_users(db: Database) -> None:
    db.table("users").create(
        {"name": str, "role": str, "password_hash": str, "created_at": str, "disabled": int},
        pk="name",
        not_null={"role", "password_hash", "created_at"},
        defaults={"disabled": 0},
    )
    db.table("sessions").create(
        {"token_hash": str, "name": str, "role": str, "created_at": str, "expires_at": str},
        pk="token_hash",
        foreign_keys=[("name", "users", "name")],
    )
    db.table("sessions").create_index(["expires_at"])


def hash_password(password: str) -> str:
    """scrypt$n$r$p$salt$hash, all base64."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


_DUMMY_HASH = hash_password(secrets.token_hex(8))


@dataclass(frozen=True)
class User:
    """A logged-in staff member or admin."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        """Admins can do everything staff can."""
        return self.role == role or self.role == "admin"


class RateLimiter:
    """At most `limit` events per key in a sliding window (in memory, per process)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        """True when `key` already has `limit` events in the window."""
        now = time.monotonic()
        with self._lock:
            q = self._events[key]
            while q and now - q[0] > self.window_s:
                q.popleft()
            return len(q) >= self.limit

    def hit(self, key: str) -> None:
        """Record one event for `key`."""
        with self._lock:
            self._events[key].append(time.monotonic())


class UserStore(Store):
    """Users and their sessions."""

    def __init__(self, path: Target, session_hours: float = 12.0) -> None:
        super().__init__(path, migrations)
        self.session_ttl = timedelta(hours=session_hours)
        self.login_limiter = RateLimiter(limit=5, window_s=300)

    def add_user(self, name: str, role: str, password: str) -> User:
        """Create a login; raises AuthError if the name is taken or invalid."""
        if not _NAME.match(name or ""):
            raise AuthError("user name must be 2-64 letters, digits or . _ @ -")
        if role not in ROLES:
            raise AuthError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise AuthError("password must be at least 8 characters")
        with self.write() as db:
            db.lock("users")  # two processes adding the same name: the second is told it exists
            if db.table("users").count_where("name = ?", [name]):
                raise AuthError(f"user {name!r} already exists")
            db.table("users").insert(
                {
                    "name": name,
                    "role": role,
                    "password_hash": hash_password(password),
                    "created_at": iso(utcnow()),
                }
            )
        return User(name, role)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if name and password match (same work whether or not the user exists)."""
        with self.read() as db:
            rows = list(db.query("SELECT role, password_hash, disabled FROM users WHERE name = ?", [name]))
        if not rows:
            verify_password(password, _DUMMY_HASH)
            return None
        row = rows[0]
        if not verify_password(password, row["password_hash"]) or row["disabled"]:
            return None
        return User(name, row["role"])

    def login(self, name: str, password: str, client: str) -> str:
        """Check credentials (rate-limited per client and per name) and open a session; returns its token."""
        keys = (f"ip:{client}", f"user:{name}")
        if any(self.login_limiter.blocked(k) for k in keys):
            raise AuthError("too many login attempts; wait a few minutes and try again")
        user = self.authenticate(name, password)
        if user is None:
            # only failures count: colleagues behind one address (office NAT, proxy) can all log in
            for k in keys:
                self.login_limiter.hit(k)
            raise AuthError("wrong user name or password")
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.write() as db:
            db.table("sessions").insert(
                {
                    "token_hash": _token_hash(token),
                    "name": user.name,
                    "role": user.role,
                    "created_at": iso(now),
                    "expires_at": iso(now + self.session_ttl),
                }
            )
            db.execute("DELETE FROM sessions WHERE expires_at < ?", [iso(now)])
        return token

    def session_user(self, token: str | None) -> User | None:
        """The user of a valid, unexpired session token."""
        if not token:
            return None
        with self.read() as db:
            rows = list(
                db.query(
                    "SELECT s.name, u.role, s.expires_at, u.disabled FROM sessions s JOIN users u ON u.name = s.name "
                    "WHERE s.token_hash = ?",
                    [_token_hash(token)],
                )
            )
        if not rows or rows[0]["disabled"] or parse_iso(rows[0]["expires_at"]) < utcnow():
            return None
        return User(rows[0]["name"], rows[0]["role"])

    def logout(self, token: str | None) -> None:
        if token:
            with self.write() as db:
                db.execute("DELETE FROM sessions WHERE token_hash = ?", [_token_hash(token)])

    def delete_expired_sessions(self, *, dry_run: bool = False) -> int:
        """Delete sessions past their expiry; returns how many (with dry_run: would be)."""
        now = iso(utcnow())
        with self.write() as db:
            if dry_run:
                return int(db.execute("SELECT count(*) FROM sessions WHERE expires_at < ?", [now]).fetchone()[0])
            return int(db.execute("DELETE FROM sessions WHERE expires_at < ?", [now]).rowcount)

    def users(self) -> list[dict[str, object]]:
        """Every login (never its password hash), with the number of its unexpired sessions."""
        with self.read() as db:
            return list(
                db.query(
                    "SELECT name, role, created_at, disabled, (SELECT count(*) FROM sessions s WHERE s.name = u.name "
                    "AND s.expires_at >= ?) AS sessions FROM users u ORDER BY name",
                    [iso(utcnow())],
                )
            )

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (its sessions end at once) or enable a login; raises AuthError for an unknown name."""
        with self.write() as db:
            self._require(db, name)
            db.execute("UPDATE users SET disabled = ? WHERE name = ?", [int(disabled), name])
            if disabled:
                db.execute("DELETE FROM sessions WHERE name = ?", [name])

    def reset_password(self, name: str, password: str) -> None:
        """Set a new password; the login's open sessions end (whoever held them must log in again)."""
        if len(password) < 8:
            raise AuthError("password must be at least 8 characters")
        with self.write() as db:
            self._require(db, name)
            db.execute("UPDATE users SET password_hash = ? WHERE name = ?", [hash_password(password), name])
            db.execute("DELETE FROM sessions WHERE name = ?", [name])

    @staticmethod
    def _require(db: Database, name: str) -> None:
        if not db.table("users").count_where("name = ?", [name]):
            raise AuthError(f"no user {name!r}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
