"""The `firstline` command line (see shared/interfaces.md for the stable contract; docs/cli.md for the help).

The command modules never import this one: it imports them and registers their commands on `main`.
"""

from __future__ import annotations

import logging
import sys

import click

from ui.cli import benchmark, chat, cost, kb, ops, tune
from ui.cli.common import HelpGroup


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="firstline", prog_name="firstline", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """firstline: a self-hosted first-level support chatbot with a compute-cost ledger."""
    from ui.settings import ServerSettings

    configure_logging(logging.WARNING - 10 * min(verbose, 2), ServerSettings().log_format)


def configure_logging(level: int, log_format: str = "text") -> None:
    """Log lines on stderr: text, or one JSON object per line (FIRSTLINE_LOG_FORMAT=json)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


for command in (
    chat.serve,
    chat.ask,
    chat.tickets,
    kb.kb,
    kb.eval_command,
    cost.report,
    cost.cost,
    ops.users,
    ops.housekeeping,
    ops.doctor,
    benchmark.bench,
    tune.tune,
    tune.models,
    tune.classifier,
):
    main.add_command(command)
