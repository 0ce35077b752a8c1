"""Operations commands: `firstline users` (staff and admin logins), `firstline housekeeping` (retention) and
`firstline doctor` (install checks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ui.cli.common import HelpGroup, data_dir_option, database_path, emit, fail, friendly_errors, json_option


@click.command()
@click.option(
    "--older-than-days",
    type=float,
    default=None,
    help="Delete conversations and tickets without activity for this many days. "
    "Default: $FIRSTLINE_RETENTION_DAYS (90).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted; change nothing.")
@data_dir_option
@json_option
@friendly_errors
def housekeeping(older_than_days: float | None, dry_run: bool, data_dir: Path | None, as_json: bool) -> None:
    """Delete old conversations and tickets (retention); the ledger keeps its anonymous figures."""
    from bot.housekeeping import HousekeepingSettings, purge
    from bot.settings import BotSettings

    days = older_than_days if older_than_days is not None else HousekeepingSettings().retention_days
    if days <= 0:
        fail("--older-than-days must be positive", 2)
    from ui.auth import UserStore
    from usage.db import exists

    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    if not exists(settings.database):
        fail(f"no database at {settings.database} (check --data-dir / FIRSTLINE_DATA_DIR)", 2)
    users = UserStore(settings.database)
    try:
        report = purge(
            settings.database,
            days,
            dry_run=dry_run,
            expire_sessions=lambda dry: users.delete_expired_sessions(dry_run=dry),
        )
    finally:
        users.close()
    if as_json:
        emit(report.as_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {report.conversations} conversation(s) with {report.messages} message(s) and "
        f"{report.tickets} ticket(s) ({report.ticket_events} event(s)) without activity since {report.cutoff[:10]}; "
        f"{report.ledger_rows_pseudonymised} ledger row(s) keep their figures under a pseudonym; "
        f"{report.kept_active} old conversation(s) kept because a ticket is still open; "
        f"{report.sessions} expired staff session(s) removed."
    )


@click.group(cls=HelpGroup)
def users() -> None:
    """Staff and admin logins."""


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _user_store(data_dir: Path | None, *, must_exist: bool = True) -> Any:
    from ui.auth import UserStore
    from usage.db import exists

    path = database_path(data_dir)
    if must_exist and not exists(path):
        fail(f"no database at {path} (check --data-dir / FIRSTLINE_DATA_DIR)", 2)
    return UserStore(path)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["staff", "admin"]), required=True, help="staff or admin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
@data_dir_option
@friendly_errors
def users_add(name: str, role: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Create a login (password from --password-stdin, else prompted twice)."""
    from ui.auth import AuthError

    password = _password(password_stdin)
    store = _user_store(data_dir, must_exist=False)
    try:
        store.add_user(name, role, password)
    except AuthError as exc:
        fail(str(exc), 2)
    finally:
        store.close()
    click.echo(f"created {role} login {name!r}", err=True)


@click.command()
@data_dir_option
@json_option
def doctor(data_dir: Path | None, as_json: bool) -> None:
    """Check the install: llama.cpp fits this CPU, the model generates in a child process, the database opens.

    One line per check; exit status 0 only when all pass. Each risky step runs in a child process, so a
    native crash is reported with its cause and the fix instead of ending this command.
    """
    from bot.settings import BotSettings
    from models.selfcheck import Check, model_checks
    from models.settings import ModelSettings
    from ui.settings import ServerSettings

    checks = model_checks(ModelSettings(), ServerSettings().model_backend)
    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    checks.append(Check("database", *_database_ok(settings.database)))
    if settings.database != settings.database_path:  # PostgreSQL: the knowledge-base index stays in SQLite here
        checks.append(Check("knowledge-base index", *_database_ok(settings.database_path)))
    if as_json:
        emit({"checks": [c.as_dict() for c in checks], "ok": all(c.ok for c in checks)})
    else:
        for c in checks:
            click.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if not all(c.ok for c in checks):
        raise SystemExit(1)


def _database_ok(target: Path | str) -> tuple[bool, str]:
    """The database opens (a SQLite file is created if new) and its check passes: SQLite's quick_check, or a
    query on PostgreSQL (named without its password)."""
    from usage.db import connect, is_postgres
    from usage.errors import StorageError
    from usage.pg import redact

    shown = redact(str(target)) if is_postgres(target) else str(target)
    try:
        db = connect(target)
        try:
            result = db.execute("PRAGMA quick_check" if db.dialect == "sqlite" else "SELECT 'ok'").fetchone()[0]
        finally:
            db.close()
    except (StorageError, OSError) as exc:
        return False, str(exc)
    except Exception as exc:  # sqlite3.DatabaseError: not a database, corrupt
        return False, f"cannot open database {shown}: {exc}"
    if result != "ok":
        return False, f"{shown}: quick_check reports {result}"
    return True, f"{shown} opens, quick_check ok" if not is_postgres(target) else f"{shown} opens, a query answers"


@users.command("list")
@data_dir_option
@json_option
@friendly_errors
def users_list(data_dir: Path | None, as_json: bool) -> None:
    """List the logins: name, role, created, disabled, open sessions."""
    rows: list[dict[str, Any]] = []
    from usage.db import exists

    if exists(database_path(data_dir)):  # a read: no database is created for it
        store = _user_store(data_dir)
        try:
            rows = [{**r, "disabled": bool(r["disabled"])} for r in store.users()]
        finally:
            store.close()
    if as_json:
        emit({"users": rows})
        return
    if not rows:
        click.echo("no logins (create one with `firstline users add NAME --role admin`)")
    for r in rows:
        state = "disabled" if r["disabled"] else "active"
        click.echo(f"{r['name']:<24} {r['role']:<6} {state:<9} created {str(r['created_at'])[:10]}  "
                   f"{r['sessions']} open session(s)")  # fmt: skip


def _set_disabled(name: str, data_dir: Path | None, disabled: bool) -> None:
    from ui.auth import AuthError

    store = _user_store(data_dir)
    try:
        store.set_disabled(name, disabled)
    except AuthError as exc:
        fail(str(exc), 2)
    finally:
        store.close()


@users.command("disable")
@click.argument("name")
@data_dir_option
@friendly_errors
def users_disable(name: str, data_dir: Path | None) -> None:
    """Disable a login: it cannot log in, and its open sessions end at once."""
    _set_disabled(name, data_dir, True)
    click.echo(f"disabled login {name!r}", err=True)


@users.command("enable")
@click.argument("name")
@data_dir_option
@friendly_errors
def users_enable(name: str, data_dir: Path | None) -> None:
    """Enable a disabled login again."""
    _set_disabled(name, data_dir, False)
    click.echo(f"enabled login {name!r}", err=True)


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input (first line).")
@data_dir_option
@friendly_errors
def users_reset_password(name: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a new password (from --password-stdin, else prompted twice); the login's open sessions end."""
    from ui.auth import AuthError

    password = _password(password_stdin)
    store = _user_store(data_dir)
    try:
        store.reset_password(name, password)
    except AuthError as exc:
        fail(str(exc), 2)
    finally:
        store.close()
    click.echo(f"new password set for {name!r}; its sessions were ended", err=True)
