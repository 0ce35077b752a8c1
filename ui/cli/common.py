"""Options and error handling shared by every `firstline` command module."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class HelpGroup(click.Group):
    """A command group whose command list shows each command's whole first sentence, wrapped, never cut
    off with "..." (click shortens it to fit one line). Every `firstline` group uses it (`cls=HelpGroup`)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class DecimalType(click.ParamType):
    """An exact decimal number >= 0 (shown as NUMBER in --help)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"not a number: {value!r}", param, ctx)
        if not result.is_finite() or result < 0:
            self.fail(f"must be a number >= 0, not {value!r}", param, ctx)
        return result


DECIMAL = DecimalType()


def database_path(data_dir: Path | None) -> Path | str:
    """The store of a data directory, resolved as the rest of firstline does (nothing is created): its SQLite
    file, or the PostgreSQL URL of FIRSTLINE_DATABASE_URL. Test it with `usage.db.exists`."""
    from bot.settings import BotSettings

    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    return settings.database


def data_dir_option(func: F) -> F:
    """Every command accepts --data-dir (default: FIRSTLINE_DATA_DIR, else a per-user directory)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="FIRSTLINE_DATA_DIR",
        help="Data directory (database, indexes). Default: $FIRSTLINE_DATA_DIR or ~/.local/share/firstline.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def fail(message: str, code: int = 1) -> None:
    """One line on stderr, non-zero exit."""
    click.echo(f"firstline: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Translate known errors into one stderr line and an exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bot.errors import BotError
        from models.errors import ModelError
        from usage.errors import StorageError

        try:
            return func(*args, **kwargs)
        except ModelError as exc:
            fail(str(exc), 3)
        except StorageError as exc:
            fail(str(exc), 4)
        except BotError as exc:
            fail(str(exc), 2)

    return wrapper  # type: ignore[return-value]


def emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str))
