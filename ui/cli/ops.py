"""Operations commands: `firstline housekeeping` (data retention).

ui.cli imports this module at its end, so this module does not import ui.cli at import time (under
`python -m ui.cli` that would load a second, half-initialised copy); ui.cli's helpers are looked up when
the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from ui.cli.common import data_dir_option, emit, fail, friendly_errors, json_option


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
