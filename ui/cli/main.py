"""The `firstline` command line (see shared/interfaces.md for the stable contract; docs/cli.md for the help).

The command modules never import this one: it imports them and registers their commands on `main`.
"""

from __future__ import annotations

import logging
import sys

import click

from ui.cli import benchmark, chat, cost, kb, ops


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """firstline: a self-hosted first-level support chatbot with a compute-cost ledger."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
):
    main.add_command(command)
