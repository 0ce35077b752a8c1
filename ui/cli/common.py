"""Options and error handling shared by every `firstline` command module."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


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
