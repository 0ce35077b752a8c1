"""Cost reports as text: the table `firstline report` prints and the CSV it and the admin dashboard write."""

from __future__ import annotations

import csv
import io
from typing import Any

from usage.reports import Report, Row

TABLE_COLUMNS = (
    "requests",
    "compute_s",
    "prefill_s",
    "decode_s",
    "tokens",
    "latency_p50_s",
    "latency_p95_s",
    "queue_wait_p95_s",
    "cost",
)


def report_csv(report: Report) -> str:
    """One CSV line per group (no totals line, so the rows can be summed)."""
    data = report.to_json()
    fields = [report.by, *Row("").as_dict().keys()]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in data["rows"]:
        writer.writerow(row)
    return buf.getvalue()


def report_table(report: Report) -> str:
    """A plain-text table with the totals line, provisioning and conversation outcomes."""
    data = report.to_json()
    head = [report.by, *TABLE_COLUMNS]
    body = [[str(r[report.by]), *(cell(r[c]) for c in TABLE_COLUMNS)] for r in data["rows"]]
    total = ["TOTAL", *(cell(data["totals"][c]) for c in TABLE_COLUMNS)]
    widths = [max(len(line[i]) for line in [head, *body, total]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(line(head))
    t = data["totals"]
    lines = [line(head), rule, *(line(b) for b in body), rule, line(total), ""]
    lines.append(
        f"profile {data['profile']} v{data['profile_version']} ({data['profile_kind']}), money in {data['currency']}, "
        f"{data['since']} .. {data['until']}"
    )
    lines.append(
        f"provisioned {t['provisioned_s']:.0f} s ({t['provisioned_source']}), idle {t['idle_s']:.0f} s, "
        f"utilisation {cell(t['utilization'])}, cost per request {cell(t['cost_per_request'])}"
    )
    if data["conversations"]:
        lines.append("conversations: " + ", ".join(f"{k} {cell(v)}" for k, v in data["conversations"].items()))
    lines += data["notes"]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One value in a text table: '-' for none, floats to 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
