"""Generates docs/settings.md (from the settings classes), docs/cli.md (from every `--help`) and docs/schema.md
(from the migrations), so they never drift.

`make docs` runs `python -m ui.cli.docs`; tests/test_docs.py fails when any of them is stale, and
tests/test_schema.py holds the schema's ownership rules (one owning module per table).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

SETTINGS = [
    ("models.settings", "ModelSettings"),
    ("bot.settings", "BotSettings"),
    ("bot.kb.search", "KnowledgeSettings"),
    ("bot.housekeeping", "HousekeepingSettings"),
    ("ui.settings", "ServerSettings"),
    ("usage.smtp", "SmtpSettings"),
    ("ui.settings", "MailSettings"),
    ("usage.profiles", "PricingSettings"),
    ("usage.alerts", "AlertSettings"),
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SETTINGS_DOC = DOCS / "settings.md"
CLI_DOC = DOCS / "cli.md"
SCHEMA_DOC = DOCS / "schema.md"
STORE_PACKAGES = ("bot", "ui", "usage")
PER_HOST = {"firstline.knowledge"}  # sets that stay in the data directory's SQLite file on every host
# modules that may read (never write) a table they do not own, with the reason; tests/test_schema.py holds it
READERS = {
    "requests": {
        "usage.reports": "cost reports aggregate the ledger's rows (same package)",
        "usage.planning": "projections start from the ledger's first row (same package)",
        "ui.bench.system": "the benchmark times a bare report query on its scratch database",
        "ui.bench.server": "the benchmark counts the requests a load run produced",
        "usage.sharing": "processor-sharing billing, called by the Ledger inside its transaction (same package)",
        "usage.feedback": "an answer's rating groups by its ledger request's route (same package)",
        "usage.drilldown": "the dashboard's drill-down lists a report group's rows (same package)",
    },
    "budget_events": {"usage.alerts": "the alert outbox turns rising budget steps into alerts (same package)"},
    "tickets": {"bot.inbox": "the staff inbox's queue, search and earlier tickets (read only)"},
    "ticket_events": {"bot.inbox": "the inbox searches the tickets' notes (read only)"},
    "messages": {"bot.inbox": "waiting times, unread counts and search over the tickets' conversations (read only)"},
    "requests_daily": {"usage.reports": "reports read closed days from the rollup (same package)"},
    "ledger_conversations": {"usage.reports": "the outcomes' human-routed conversations (same package)"},
    "conversations_daily": {"usage.reports": "the outcomes read closed days from the rollup (same package)"},
    "instances": {"usage.provisioning": "open periods end at their process's last heartbeat (same package)"},
}
WIDTH = 100  # help text wrapped as on a 100-column terminal, whatever terminal runs `make docs`


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, Path):
            return "(per-user data directory)"
    else:
        value = field.default
    return "(none)" if value is None else f"`{value}`"


def settings_markdown() -> str:
    """The Markdown text of docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "Generated from the code by `make docs` (`python -m ui.cli.docs`); do not edit by hand.",
        "Every setting is an environment variable with the prefix `FIRSTLINE_`.",
        "",
    ]
    classes = [getattr(importlib.import_module(module), name) for module, name in SETTINGS]
    for (module, name), cls in zip(SETTINGS, classes, strict=True):
        lines += [f"## {name} (`{module}`)", "", (cls.__doc__ or "").strip(), ""]
        lines += ["| variable | default | meaning |", "|---|---|---|"]
        prefix = cls.model_config.get("env_prefix", "")
        # a field inherited from another documented class is listed there, once
        inherited = {f for base in classes if base is not cls and issubclass(cls, base) for f in base.model_fields}
        for field_name, field in cls.model_fields.items():
            if field_name in inherited:
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{field_name.upper()}` | {_default(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


def commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, depth first in name order: (), ('ask',), ('kb',), ('kb', 'ingest'), ..."""
    out = [path]
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            out += commands(group.commands[name], (*path, name))
    return out


def help_text(main: click.Command, path: tuple[str, ...]) -> str:
    """What `firstline PATH --help` prints."""
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="firstline", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"firstline {' '.join(path)} --help failed: {result.output}")
    return result.output


def cli_markdown() -> str:
    """The Markdown text of docs/cli.md."""
    from ui.cli.main import main

    lines = [
        "# Command line",
        "",
        "Generated from the code by `make docs`; do not edit by hand. The stable names and JSON keys are",
        "listed in the README (Operations); this page is what `firstline --help` and every",
        "`firstline COMMAND --help` print.",
        "",
    ]
    for path in commands(main):
        title = " ".join(("firstline", *path))
        lines += [f"## `{title}`", "", "```text", help_text(main, path).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def migration_sets() -> dict[str, tuple[str, Any]]:
    """Every migration set in the code: name -> (module that defines its migrations, the Migrations object)."""
    import pkgutil

    from sqlite_utils.migrations import Migrations

    root = Path(__file__).resolve().parents[2]
    found: dict[str, tuple[str, Any]] = {}
    for package in STORE_PACKAGES:
        for info in pkgutil.walk_packages([str(root / package)], package + "."):
            source = root / (info.name.replace(".", "/") + ("/__init__.py" if info.ispkg else ".py"))
            if info.name.endswith("__main__") or "Migrations(" not in source.read_text(encoding="utf-8"):
                continue
            for value in vars(importlib.import_module(info.name)).values():
                if isinstance(value, Migrations) and value._migrations:
                    found[value.name] = (value._migrations[0].fn.__module__, value)
    return dict(sorted(found.items()))


def schema_tables() -> dict[str, dict[str, Any]]:
    """Apply every migration set to an empty SQLite database; per table its owner, set, columns and indexes.

    Raises ValueError when two sets create the same table (every table has one owning module)."""
    import sqlite3
    import tempfile

    from usage.db import connect

    sets = migration_sets()
    tables: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "schema.db")
        pending = list(sets)
        while pending:  # a set whose migrations need another set's tables (indexes on them) waits for it
            progress = False
            for name in list(pending):
                before = _table_names(db)
                try:
                    sets[name][1].apply(db)
                except sqlite3.OperationalError:
                    continue
                pending.remove(name)
                progress = True
                for table in sorted(_table_names(db) - before):
                    tables[table] = {"owner": sets[name][0], "set": name}
            if not progress:
                raise ValueError(f"migration sets that cannot be applied: {pending}")
        for table, info in tables.items():
            info["columns"] = [
                (r[1], r[2] or "", bool(r[3]), r[4], int(r[5]))
                for r in db.execute(f"PRAGMA table_info({table})").fetchall()
            ]
            info["indexes"] = [
                (r[1], [c[2] for c in db.execute(f"PRAGMA index_info({r[1]})").fetchall()], bool(r[2]))
                for r in db.execute(f"PRAGMA index_list({table})").fetchall()
                if not r[1].startswith("sqlite_autoindex")
            ]
        db.close()
    return dict(sorted(tables.items()))


def _table_names(db: Any) -> set[str]:
    rows = db.execute("PRAGMA table_list").fetchall()
    return {r[1] for r in rows if r[2] in ("table", "virtual") and not r[1].startswith(("sqlite_", "_sqlite"))}


def schema_markdown() -> str:
    """The Markdown text of docs/schema.md."""
    sets, tables = migration_sets(), schema_tables()
    lines = [
        "# Database schema",
        "",
        "Generated from the migrations by `make docs` (`python -m ui.cli.docs`); do not edit by hand.",
        "Every table has one owning module: the only module that defines, writes and deletes its rows",
        "(tests/test_schema.py checks the code for writes elsewhere). Other modules use the owner's methods.",
        "The same migrations run on SQLite and on PostgreSQL (usage/db.py, usage/pg.py): text columns are",
        '`TEXT COLLATE "C"`, integers `BIGINT`, floats `DOUBLE PRECISION`, an integer primary key an identity',
        "column there. Timestamps are ISO 8601 UTC text with microseconds (`2026-11-29T13:45:00.123456Z`),",
        "which sorts and compares as time on both.",
        "",
        "## Migration sets",
        "",
        "| set | owner | migrations | store |",
        "|---|---|---|---|",
    ]
    for name, (owner, migrations) in sets.items():
        applied = ", ".join(f"`{m.name}`" for m in migrations._migrations)
        store = "per-host SQLite index" if name in PER_HOST else "shared store"
        lines.append(f"| `{name}` | `{owner}` | {applied} | {store} |")
    lines.append("")
    for table, info in tables.items():
        lines += [f"## `{table}`", "", f"Owner: `{info['owner']}` (set `{info['set']}`)."]
        for reader, why in READERS.get(table, {}).items():
            lines.append(f"Read by `{reader}`: {why}.")
        lines.append("")
        if info["columns"]:
            lines += ["| column | type | not null | default | primary key |", "|---|---|---|---|---|"]
            for col, kind, notnull, default, pk in info["columns"]:
                dflt = "" if default is None else f"`{default}`"
                lines.append(f"| `{col}` | {kind or '-'} | {'yes' if notnull else ''} | {dflt} | {pk or ''} |")
            lines.append("")
        for index, cols, unique in info["indexes"]:
            lines.append(f"- {'unique ' if unique else ''}index `{index}` on ({', '.join(cols)})")
        if info["indexes"]:
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    docs = ((SETTINGS_DOC, settings_markdown()), (CLI_DOC, cli_markdown()), (SCHEMA_DOC, schema_markdown()))
    for path, text in docs:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
