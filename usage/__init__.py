"""The compute ledger, pricing profiles and cost reports.

`usage` imports nothing from the other firstline packages.
"""
