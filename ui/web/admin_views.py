"""What the admin dashboard shows, built from reports: money for people, plottable frames, tables, text.

Pure functions over `usage` results (no Gradio, no requests), so the figures can be tested directly and the
layout in ui/web/admin.py stays about layout. Money is shown rounded for reading (two decimals, three
significant digits below one unit) with the exact six-decimal figure of `firstline report --json` in the
element's title; time series have a bar for every bucket of the period, empty ones included.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd

from usage.planning import Estimate, Projection, span_text
from usage.reports import OUTCOMES, Report, Row

PRESETS = ("Today", "Last 7 days", "Last 30 days", "This month", "Last month", "All time")
MAX_BARS = 120  # a time series with more buckets than this is shown by the next coarser unit


def fmt_money(value: Decimal | str | float | None, currency: str = "") -> str:
    """Money for reading: 1,234.57 / 0.56 / 0.0112 / 0.000137 (never six decimals of zeros)."""
    if value is None:
        return "-"
    amount = Decimal(str(value))
    if amount == 0:
        text = "0.00"
    elif abs(amount) >= 1:
        text = f"{amount:,.2f}"
    else:
        digits = max(2, -amount.copy_abs().adjusted() + 2)  # three significant digits, at least two decimals
        text = f"{amount:.{digits}f}".rstrip("0")
        text = text + "0" * max(0, 2 - len(text.split(".")[1]))
    return f"{text} {currency}".strip()


def fmt_num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):,.{digits}f}"


def fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def preset_range(name: str, now: datetime) -> tuple[str, str]:
    """(since, until) text for a date preset; until is a day included (or empty: now)."""
    today = now.astimezone(UTC).date()
    if name == "Today":
        return today.isoformat(), ""
    if name == "Last 7 days":
        return (today - timedelta(days=6)).isoformat(), ""
    if name == "Last 30 days":
        return (today - timedelta(days=29)).isoformat(), ""
    if name == "This month":
        return today.replace(day=1).isoformat(), ""
    if name == "Last month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1).isoformat(), last.isoformat()
    return "", ""


def kpi_html(report: Report) -> str:
    """The headline figures: total cost (exact in the title), requests, failures and their cost, latency."""
    data, t = report.to_json(), report.totals
    cur = html.escape(data["currency"])
    totals = data["totals"]
    failed_share = t.failed / t.requests if t.requests else None
    conv = report.outcomes.as_dict() if report.outcomes else None

    def box(elem: str, label: str, value: str, detail: str = "", title: str = "") -> str:
        tip = f' title="{html.escape(title)}"' if title else ""
        return (
            f'<div class="kpi" id="{elem}"><div class="kpi-label">{label}</div>'
            f'<div class="kpi-value"{tip}>{value}</div><div class="kpi-detail">{detail}</div></div>'
        )

    boxes = [
        box("kpi-cost", "Total cost", f'<span class="amount">{fmt_money(t.cost)}</span> {cur}',
            f"profile {html.escape(data['profile'])} v{data['profile_version']}",
            f"exactly {totals['cost']} {data['currency']}"),
        box("kpi-requests", "Requests", f"{t.requests:,}", f"{fmt_num(t.compute_s, 1)} compute-s"),
        box("kpi-failed", "Failed requests", f"{t.failed:,}",
            f"{fmt_share(failed_share)} · {t.errors} errors, {t.cancelled} cancelled, {t.interrupted} interrupted"),
        box("kpi-failed-cost", "Failed spend", f"{fmt_money(totals['failed_cost'])} {cur}",
            "compute of requests that did not complete", f"exactly {totals['failed_cost']} {data['currency']}"),
        box("kpi-latency", "Latency p50 / p95", f"{fmt_num(t.latency_p50_s)} / {fmt_num(t.latency_p95_s)} s",
            f"queue wait p95 {fmt_num(t.queue_wait_p95_s)} s"),
    ]  # fmt: skip
    if conv and conv["conversations"]:
        boxes.append(
            box(
                "kpi-conversations",
                "Conversations",
                f"{conv['conversations']:,}",
                f"{conv['deflected']} resolved by the bot ({fmt_share(conv['deflection_rate'])}), "
                f"{conv['escalated']} handed to staff",
            )  # fmt: skip
        )
    return f'<div id="total-cost-box" class="kpis">{"".join(boxes)}</div>'


def summary_markdown(report: Report) -> str:
    """The period and the lines that explain the figures (provisioning, savings, sampling notes)."""
    data = report.to_json()
    t, cur = data["totals"], data["currency"]
    lines = [
        f"**Period** {report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC · "
        f"**utilisation** {fmt_share(t['utilization'])} of {span_text(t['provisioned_s'])} provisioned "
        f"({t['provisioned_source']}) · **cost per request** {fmt_money(t['cost_per_request'], cur)}"
    ]
    conv = data["conversations"]
    if conv and conv["conversations"]:
        lines.append(
            f"**Cost per conversation** {fmt_money(conv['cost_per_conversation'], cur)} · per resolved "
            f"{fmt_money(conv['cost_per_resolved_conversation'], cur)} · staff time "
            f"{fmt_num((conv['staff_s'] or 0) / 60, 1)} min · staff cost avoided "
            f"{fmt_money(conv['staff_cost_avoided'], cur)} ({conv['staff_minutes_source']} "
            f"{conv['staff_minutes_per_ticket']:.1f} min/ticket) · **net saving** {fmt_money(conv['net_saving'], cur)}"
        )
    lines += [f"_{html.escape(n)}_" for n in report.notes]
    return "\n\n".join(lines)


TABLE_COLUMNS = {  # report key -> column title
    "requests": "Requests",
    "failed": "Failed",
    "compute_s": "Compute s",
    "tokens": "Tokens",
    "latency_p50_s": "p50 s",
    "latency_p95_s": "p95 s",
    "queue_wait_p95_s": "Queue p95 s",
    "cost": "Cost",
    "failed_cost": "Failed cost",
}


def table_frame(report: Report) -> pd.DataFrame:
    """The report rows for reading: rounded money and seconds, whole numbers with separators."""
    rows = report.to_json()["rows"]
    out = []
    for r in rows:
        line: dict[str, Any] = {report.by.capitalize(): r[report.by] or "(none)"}
        for key, title in TABLE_COLUMNS.items():
            value = r[key]
            if key in ("cost", "failed_cost"):
                line[title] = fmt_money(value)
            elif key.endswith("_s"):
                line[title] = fmt_num(value)
            else:
                line[title] = f"{value:,}"
        out.append(line)
    return pd.DataFrame(out, columns=[report.by.capitalize(), *TABLE_COLUMNS.values()])


def time_unit(since: datetime, until: datetime) -> str:
    """hour, day or month: the finest unit that keeps the series at MAX_BARS bars or fewer."""
    span = until - since
    if span <= timedelta(hours=MAX_BARS):
        return "hour"
    return "day" if span <= timedelta(days=MAX_BARS) else "month"


def bucket_labels(unit: str, since: datetime, until: datetime) -> list[str]:
    """Every bucket of [since, until) as the report labels it (2025-03-01T10:00Z, 2025-03-01, 2025-03)."""
    labels: list[str] = []
    if unit == "month":
        lo = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif unit == "day":
        lo = since.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        lo = since.replace(minute=0, second=0, microsecond=0)
    while lo < until or not labels:
        if unit == "month":
            labels.append(lo.strftime("%Y-%m"))
            lo = (lo + timedelta(days=32)).replace(day=1)
        elif unit == "day":
            labels.append(lo.strftime("%Y-%m-%d"))
            lo += timedelta(days=1)
        else:
            labels.append(lo.strftime("%Y-%m-%dT%H:00Z"))
            lo += timedelta(hours=1)
    return labels


def time_frame(series: Report, unit: str) -> pd.DataFrame:
    """Cost, compute and requests per bucket, a row for every bucket of the period (empty ones are zero),
    with a short label to plot on a categorical axis (one point is a bar, two points draw no trend)."""
    found: dict[str, Row] = {r.key: r for r in series.rows}
    rows = []
    for key in bucket_labels(unit, series.since, series.until):
        r = found.get(key, Row(key))
        label = key[5:10] + " " + key[11:13] + "h" if unit == "hour" else key
        rows.append({"time": label, "bucket": key, "cost": float(r.cost), "compute_s": float(r.compute_s),
                     "requests": r.requests, "failed": r.failed})  # fmt: skip
    return pd.DataFrame(rows, columns=["time", "bucket", "cost", "compute_s", "requests", "failed"])


def route_frame(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"route": r.key, "cost": float(r.cost), "requests": r.requests} for r in rows],
        columns=["route", "cost", "requests"],
    )


def failures_frame(by_outcome: Report) -> pd.DataFrame:
    """Failed requests by cause: count, share of all requests, compute, cost, what the cause means."""
    total = by_outcome.totals.requests
    out = []
    for r in sorted(by_outcome.rows, key=lambda r: (-r.requests, r.key)):
        if r.key == "completed":
            continue
        out.append(
            {
                "Cause": r.key,
                "Requests": r.requests,
                "Share": fmt_share(r.requests / total if total else None),
                "Compute s": fmt_num(r.compute_s),
                "Cost": fmt_money(r.cost),
                "Meaning": OUTCOMES.get(r.key, ""),
            }
        )
    return pd.DataFrame(out, columns=["Cause", "Requests", "Share", "Compute s", "Cost", "Meaning"])


def failures_markdown(by_outcome: Report) -> str:
    t, cur = by_outcome.totals, by_outcome.profile.currency
    if not t.failed:
        return f"**No failed requests** in this period ({t.requests:,} requests)."
    share = t.failed / t.requests if t.requests else None
    return (
        f"**{t.failed:,} of {t.requests:,} requests failed** ({fmt_share(share)}), costing "
        f"**{fmt_money(from_row_cost(t.failed_cost_micros), cur)}** of {fmt_money(t.cost, cur)}. "
        "Select a cause to list its requests."
    )


def from_row_cost(micros: int) -> Decimal:
    return Decimal(micros) / Decimal(1_000_000)


def requests_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["Started (UTC)", "Conversation", "Route", "Outcome", "Compute s", "Latency s", "Tokens", "Cost",
               "Error", "Request"]  # fmt: skip
    return pd.DataFrame(
        [
            [
                r["started_at"][:19].replace("T", " "),
                r["conversation_id"],
                r["route"],
                r["outcome"],
                fmt_num(r["compute_s"]),
                fmt_num(r["latency_s"]),
                r["tokens"],
                fmt_money(r["cost"]),
                (r["error"] or "")[:160],
                r["request_id"],
            ]  # fmt: skip
            for r in rows
        ],
        columns=columns,
    )


def conversations_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["Conversation", "Requests", "Failed", "Compute s", "Cost", "First (UTC)", "Last (UTC)", "Ticket"]
    return pd.DataFrame(
        [
            [
                r["conversation_id"],
                r["requests"],
                r["failed"],
                fmt_num(r["compute_s"]),
                fmt_money(r["cost"]),
                r["first"][:19].replace("T", " "),
                r["last"][:19].replace("T", " "),
                f"{r['ticket']} ({r['ticket_status']})" if r["ticket"] else "",
            ]  # fmt: skip
            for r in rows
        ],
        columns=columns,
    )


def projection_markdown(projection: Projection) -> str:
    """The projection as sentences: what it rests on (with a warning when that is thin), the yearly cost
    under every profile, and the break-even points."""
    data = projection.as_dict()
    cur = data["currency"]
    lines = []
    if data["warning"]:
        lines.append(f'<div class="warning" id="projection-warning">⚠ {html.escape(data["warning"])}</div>')
    lines.append(f"_{html.escape(data['basis'])}_ Scaled to a year: {data['per_year']['requests']:,} requests, "
                 f"{fmt_num(data['per_year']['compute_s'] / 3600, 1)} compute-hours.")  # fmt: skip
    lines.append("| Profile | Cost per year | Cost per request |\n|---|---:|---:|")
    lines[-1] += "".join(
        f"\n| {html.escape(p['profile'])}{' (cheapest)' if p['profile'] == data['cheapest'] else ''} | "
        f"{fmt_money(p['cost_per_year'], cur)} | {fmt_money(p['cost_per_request'], cur)} |"
        for p in data["profiles"]
    )
    for b in data["break_even"]:
        if b["requests_per_hour"] is None:
            lines.append(f"- {b['profile']} never becomes cheaper than {b['versus']} at this mix of compute.")
        else:
            reach = "" if b["reachable_with_one_machine"] else " (more than one machine can serve)"
            lines.append(f"- {b['profile']} is cheaper than {b['versus']} above {b['requests_per_hour']:,} "
                         f"requests an hour{reach}.")  # fmt: skip
    return "\n\n".join(lines)


def estimate_markdown(result: Estimate, currency: str) -> str:
    d = result.as_dict()
    rows = [("Compute per hour", d["compute_cost_per_hour"]), ("Transfer per hour", d["transfer_cost_per_hour"]),
            ("**Cost per hour**", d["cost_per_hour"]), ("Cost per day", d["cost_per_day"]),
            ("**Cost per year**", d["cost_per_year"])]  # fmt: skip
    table = "| | |\n|---|---:|\n" + "\n".join(f"| {k} | {fmt_money(v, currency)} |" for k, v in rows)
    return f"{table}\n\n**Utilisation** {fmt_share(d['utilization'])}: {html.escape(d['note'])}."
