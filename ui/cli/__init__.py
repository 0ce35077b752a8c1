"""The `firstline` command line: `main` registers the command modules (chat, kb, cost, ops, benchmark)."""
