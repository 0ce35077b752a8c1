"""Cost reports as text: the table `firstline report` prints and the CSV it and the admin dashboard write."""

from __future__ import annotations

import csv
import io
from typing import Any

from usage.reports import Report, Row

TABLE_COLUMNS = (
    "requests",
    "errors",
    "compute_s",
    "prefill_s",
    "decode_s",
    "tokens",
    "latency_p50_s",
    "latency_p95_s",
    "queue_wait_p95_s",
    "cost",
    "failed_cost",
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
    lines = [line(head), rule, *(line(b) for b in body), rule, line(total), "", *report_notes(report)]
    return "\n".join(lines)


def report_notes(report: Report) -> list[str]:
    """The lines under the table: period, profile, failures, provisioning and conversations, as sentences."""
    data = report.to_json()
    t, cur = data["totals"], data["currency"]
    lines = [
        f"Period {data['since'][:16].replace('T', ' ')} to {data['until'][:16].replace('T', ' ')} UTC, priced under "
        f"{data['profile']} v{data['profile_version']} ({data['profile_kind'].replace('_', ' ')}); money in {cur}."
    ]
    if t["failed"]:
        lines.append(
            f"Failed: {t['failed']} of {t['requests']} requests ({t['errors']} errors, {t['cancelled']} cancelled, "
            f"{t['interrupted']} interrupted) cost {t['failed_cost']} {cur}; `--by outcome` shows the causes."
        )
    utilisation = "-" if t["utilization"] is None else f"{t['utilization']:.1%}"
    per_request = "-" if t["cost_per_request"] is None else f"{t['cost_per_request']} {cur}"
    lines.append(
        f"Provisioned {t['provisioned_s']:.0f} s ({t['provisioned_source'].replace('_', ' ')}), "
        f"idle {t['idle_s']:.0f} s, utilisation {utilisation}; cost per request {per_request}."
    )
    conv = data["conversations"]
    if conv and conv["conversations"]:
        rate = "-" if conv["deflection_rate"] is None else f"{conv['deflection_rate']:.0%}"
        lines.append(
            f"Conversations: {conv['conversations']} ({conv['escalated']} handed to staff, {conv['deflected']} "
            f"resolved by the bot alone: {rate}); {cell(conv['cost_per_conversation'])} {cur} per conversation."
        )
        lines.append(
            f"Staff time avoided: {conv['deflected']} conversations x {conv['staff_minutes_per_ticket']:.1f} min "
            f"({conv['staff_minutes_source']}) x {conv['staff_hourly_cost']} {cur}/h = {conv['staff_cost_avoided']} "
            f"{cur}; net saving after the bot's cost {cell(conv['net_saving'])} {cur}."
        )
    return lines + data["notes"]


def cell(value: Any) -> str:
    """One value in a text table: '-' for none, floats to 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
