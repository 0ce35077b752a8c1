"""The schema: docs/schema.md is generated from the migrations, and every table has one owning module.

The owner is the module whose migration set creates the table; only it writes (INSERT, UPDATE, DELETE) the
table's rows. Everyone else goes through the owner's methods (e.g. housekeeping asks ConversationStore,
TicketStore, SuggestionStore, the Ledger and UserStore to delete or rename; reports ask TicketStore for
staff time). The few exceptions are listed below with their reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from ui.cli import docs

ROOT = Path(__file__).resolve().parent.parent
WRITE = re.compile(
    r"""(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|COPY)\s+"?(\w+)"""
    r"""|\.table\(\s*"(\w+)"\s*\)\.(?:insert|update|upsert|delete)""",
    re.IGNORECASE,
)
# (module, table): why this module may write a table it does not own
EXCEPTIONS = {
    ("usage.reports", "requests"): "synthetic_ledger fills a scratch database for `firstline bench` / cost benchmark",
    ("usage.reports", "conversations"): "synthetic_ledger's conversations for the same scratch database",
    ("ui.bench.system", "requests"): "the bare-driver floor of a ledger write, measured on a scratch database",
    ("ui.bench.system", "rollup"): "the benchmark's scratch database",
    ("usage.sharing", "requests"): "processor-sharing billing re-bills finished rows inside the Ledger's write "
    "transaction (usage.ledger calls it; same package, and the PostgreSQL rollup follows through on_rebill)",
}


READ = re.compile(r"""(?:FROM|JOIN)\s+"?(\w+)""", re.IGNORECASE)


def test_schema_doc_is_current() -> None:
    assert docs.SCHEMA_DOC.read_text(encoding="utf-8") == docs.schema_markdown(), (
        "docs/schema.md is stale: run `make docs`"
    )


def _owns(owner: str, module: str) -> bool:
    # a package keeps its tables' migrations in its `schema` module (bot.kb.schema): the package owns them
    return module == owner or (owner.endswith(".schema") and module.startswith(owner.rsplit(".", 1)[0] + "."))


def test_every_table_is_written_only_by_its_owner() -> None:
    tables = docs.schema_tables()
    assert len(tables) >= 12  # the migrations were found
    violations = []
    for package in docs.STORE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for m in WRITE.finditer(path.read_text(encoding="utf-8")):
                table = m.group(1) or m.group(2)
                info = tables.get(table)
                if info is None or _owns(info["owner"], module) or (module, table) in EXCEPTIONS:
                    continue
                violations.append(f"{module} writes {table} (owner: {info['owner']})")
    assert not violations, "\n".join(violations)


def test_tables_are_read_only_by_their_owner_and_declared_readers() -> None:
    """Reports count conversations and staff time through bot.outcomes (TicketStore, ConversationStore), the
    evaluation asks the Ledger for a conversation's totals: a new raw read of someone else's table fails here."""
    tables = docs.schema_tables()
    violations = []
    for package in docs.STORE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for m in READ.finditer(path.read_text(encoding="utf-8")):
                info = tables.get(m.group(1))
                if info is None or _owns(info["owner"], module) or module in docs.READERS.get(m.group(1), {}):
                    continue
                violations.append(f"{module} reads {m.group(1)} (owner: {info['owner']})")
    assert not violations, "\n".join(sorted(set(violations)))
