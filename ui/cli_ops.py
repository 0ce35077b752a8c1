"""Operations commands: `firstline housekeeping` (data retention).

ui.cli imports this module at its end, so this module does not import ui.cli at import time (under
`python -m ui.cli` that would load a second, half-initialised copy); ui.cli's helpers are looked up when
the command runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _cli() -> ModuleType:
    """The running ui.cli module (it is `__main__` under `python -m ui.cli`)."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(getattr(main, "__spec__", None), "name", None) == "ui.cli":
        return main
    import importlib

    return sys.modules.get("ui.cli") or importlib.import_module("ui.cli")


def data_dir_option(func: F) -> F:
    """--data-dir, as ui.cli.data_dir_option."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="FIRSTLINE_DATA_DIR",
        help="Data directory (database, indexes). Default: $FIRSTLINE_DATA_DIR or ~/.local/share/firstline.",
    )(func)


def json_option(func: F) -> F:
    """--json, as ui.cli.json_option."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def friendly_errors(func: F) -> F:
    """ui.cli.friendly_errors, looked up when the command runs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _cli().friendly_errors(func)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def emit(payload: dict[str, Any]) -> None:
    _cli().emit(payload)


def fail(message: str, code: int = 1) -> None:
    _cli().fail(message, code)


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
    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    if not settings.database_path.exists():
        fail(f"no database at {settings.database_path} (check --data-dir / FIRSTLINE_DATA_DIR)", 2)
    report = purge(settings.database_path, days, dry_run=dry_run)
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
