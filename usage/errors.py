"""Errors raised by firstline's SQLite stores.

`StorageError` reaches operators (CLI one-liner, server log) and, translated at the UI edge, customers
as "please try again"; nothing is half-written when it is raised: the transaction was rolled back.
"""


class StorageError(Exception):
    """The database could not be read or written (locked, disk full, read-only, corrupt)."""


class LedgerError(StorageError):
    """A ledger operation was invalid (unknown request id, finishing a row twice)."""
