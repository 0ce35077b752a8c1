"""The admin dashboard (/admin, admin login): cost and compute over time, the report tables, cloud versus
on-premises for the chosen period, the planning calculator, pricing profiles and budgets, model status.

The figures come from the same functions as `firstline report` (usage.reports), so the total shown in
`#total-cost` equals `firstline report --json`'s `totals.cost` for the same period and profile. Every
handler re-reads the user from the session cookie on the server and refuses anyone who is not an admin,
whatever the browser sends. Pricing is edited as the TOML file itself: saving validates it, bumps the
version of every profile whose values changed, and writes it back.
"""

from __future__ import annotations

import html
import logging
import tempfile
import threading
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from ui.app import Services
from ui.web.access import ADMIN_PATH, mount_protected, require_role
from usage.budgets import BudgetGuard
from usage.ledger import utcnow
from usage.planning import estimate, project
from usage.pricing import CloudPerSecond, PeriodUsage, PricingError, duration_s, money
from usage.profiles import ProfileBook, active_profile, dumps, load_profiles, parse, save_profiles, sync_versions
from usage.rendering import report_csv
from usage.reports import (
    GROUPS,
    Report,
    build_report,
    latency_histogram,
    latency_labels,
    parse_when,
    period_spend,
    prepare,
)

log = logging.getLogger(__name__)
_EXPORTS = Path(tempfile.gettempdir()) / "firstline-admin"
LATENCY_LABELS = latency_labels()


class Dashboard:
    """Server-side state of the dashboard: paths, the pricing book and a budget guard."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.data_dir = Path(services.bot_settings.data_dir)
        self.db_path = Path(services.bot_settings.database_path)
        self._lock = threading.Lock()
        self._guard: BudgetGuard | None = getattr(services, "budget", None)

    def book(self) -> ProfileBook:
        return load_profiles(self.data_dir, sync_history=self.db_path.exists())

    def guard(self, book: ProfileBook) -> BudgetGuard:
        with self._lock:
            if self._guard is None:
                self._guard = BudgetGuard(self.db_path, book)
            else:
                self._guard.update(book)
            return self._guard

    def report(self, since: str, until: str, by: str, profile: str) -> tuple[Report, ProfileBook]:
        book = self.book()
        if self.db_path.exists():
            prepare(self.db_path)
        chosen = book.get(profile) if profile else book.active_profile
        result = build_report(
            self.db_path,
            chosen,
            by=by,
            since=parse_when(since or None),
            until=parse_when(until or None, end=True),
            assumptions=book.assumptions,
        )
        return result, book


def total_html(report: Report) -> str:
    data = report.to_json()
    return (
        f'<div id="total-cost-box"><b>Total cost</b> <span class="amount">{data["totals"]["cost"]}</span> '
        f"{html.escape(data['currency'])} · {data['totals']['requests']} requests · "
        f"{data['totals']['compute_s']:.1f} compute-s · profile {html.escape(data['profile'])} "
        f"v{data['profile_version']}</div>"
    )


def summary_markdown(report: Report) -> str:
    t, conv = report.to_json()["totals"], report.outcomes.as_dict() if report.outcomes else None
    lines = [
        f"**Period** {report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC · "
        f"**p50/p95 latency** {_num(t['latency_p50_s'])} / {_num(t['latency_p95_s'])} s · "
        f"**p95 queue wait** {_num(t['queue_wait_p95_s'])} s · **utilisation** {_num(t['utilization'])} "
        f"({t['provisioned_s']:.0f} s provisioned, {t['provisioned_source']})"
    ]
    if conv and conv["conversations"]:
        conv = {k: "-" if v is None else v for k, v in conv.items()}
        lines.append(
            f"**Conversations** {conv['conversations']} · deflected {conv['deflected']} "
            f"(rate {conv['deflection_rate']}) · cost per conversation {conv['cost_per_conversation']} · "
            f"per resolved {conv['cost_per_resolved_conversation']} · staff time {conv['staff_s']} s · "
            f"staff cost avoided {conv['staff_cost_avoided']} ({conv['staff_minutes_source']} "
            f"{conv['staff_minutes_per_ticket']:.1f} min/ticket) · net saving {conv['net_saving']}"
        )
    lines += [f"_{n}_" for n in report.notes]
    return "\n\n".join(lines)


def table_frame(report: Report) -> pd.DataFrame:
    rows = report.to_json()["rows"]
    columns = [report.by, "requests", "compute_s", "prefill_s", "decode_s", "tokens", "latency_p50_s",
               "latency_p95_s", "queue_wait_p50_s", "queue_wait_p95_s", "cost"]  # fmt: skip
    return pd.DataFrame([[r[c] for c in columns] for r in rows], columns=columns)


def time_frames(dash: Dashboard, report: Report) -> tuple[pd.DataFrame, str]:
    """Cost and compute per hour (short periods) or day, as a plottable frame."""
    by = "hour" if report.until - report.since <= timedelta(days=3) else "day"
    series = build_report(
        dash.db_path, report.profile, by=by, since=report.since, until=report.until, with_outcomes=False
    )
    frame = pd.DataFrame(
        [
            {
                "time": pd.Timestamp(r.key.replace("Z", "") if by == "hour" else r.key),
                "cost": float(r.cost),
                "compute_s": float(r.compute_s),
                "requests": r.requests,
            }
            for r in series.rows
        ],
        columns=["time", "cost", "compute_s", "requests"],
    )
    return frame, by


def route_frame(dash: Dashboard, report: Report) -> pd.DataFrame:
    if report.by == "route":
        rows = report.rows
    else:
        rows = build_report(
            dash.db_path, report.profile, by="route", since=report.since, until=report.until, with_outcomes=False
        ).rows
    return pd.DataFrame(
        [
            {"route": r.key, "cost": float(r.cost), "compute_s": float(r.compute_s), "requests": r.requests}
            for r in rows
        ],
        columns=["route", "cost", "compute_s", "requests"],
    )


def comparison_frame(dash: Dashboard, report: Report, book: ProfileBook) -> pd.DataFrame:
    """The selected period priced under every profile (cloud per second, per hour, on-premises)."""
    totals = report.totals
    usage = PeriodUsage(
        totals.requests,
        totals.compute_s,
        duration_s(report.until - report.since),
        report.provisioned.seconds,
    )
    rows = []
    for name, p in book.profiles.items():
        if name == report.profile.name:
            cost = totals.cost
        elif isinstance(p, CloudPerSecond):
            cost = period_spend(dash.db_path, p, report.since, report.until).cost
        else:
            cost = p.period_cost(usage)
        per_request = money(cost / totals.requests) if totals.requests else None
        rows.append({"profile": name, "kind": p.kind, "version": p.version, "cost": money(cost),
                     "cost_per_request": per_request, "currency": p.currency})  # fmt: skip
    return pd.DataFrame(rows, columns=["profile", "kind", "version", "cost", "cost_per_request", "currency"])


def model_markdown(dash: Dashboard, report: Report) -> str:
    model = dash.services.model
    from usage.db import connect
    from usage.provisioning import current_state

    state = None
    if dash.db_path.exists():
        db = connect(dash.db_path, readonly=True)
        try:
            state = current_state(db)
        finally:
            db.close()
    loaded = getattr(model, "loaded", True)
    parts = [
        f"**Model** `{html.escape(model.model_id)}` on **{html.escape(model.device)}** · "
        f"{'loaded' if loaded else 'not loaded (loads on the next request)'}"
    ]
    if hasattr(model, "idle_s"):
        idle, in_use = getattr(model, "idle_s", 0), getattr(model, "in_use", 0)
        loads, unloads = getattr(model, "loads", 0), getattr(model, "unloads", 0)
        parts.append(
            f"on demand: unloads after {idle:.0f} s idle · in use {in_use} · loads {loads} · unloads {unloads}"
        )
    if state:
        parts.append(f"provisioned since {state['loaded_since']} ({html.escape(str(state['model_id']))})")
    t = report.to_json()["totals"]
    parts.append(
        f"in the period: {t['provisioned_s']:.0f} s provisioned ({t['provisioned_source']}), {t['idle_s']:.0f} s idle, "
        f"utilisation {_num(t['utilization'])}"
    )
    return "\n\n".join(parts)


def budget_markdown(guard: BudgetGuard) -> tuple[str, pd.DataFrame]:
    status = guard.status().as_dict()
    lines = [f"**Budget step: {status['step']}** (profile {html.escape(status['profile'])}, unit {status['unit']})"]
    for p in status["periods"]:
        lines.append(f"- {p['period']}: spent {p['spent']} of {p['limit'] or 'no limit'} → {p['step']}")
    events = pd.DataFrame(guard.events(20), columns=["at", "profile", "period", "step", "spent", "limit", "share"])
    return "\n".join(lines), events


def csv_file(report: Report) -> str:
    _EXPORTS.mkdir(parents=True, exist_ok=True)
    path = _EXPORTS / f"firstline-report-{report.by}-{utcnow():%Y%m%dT%H%M%S%f}.csv"
    path.write_text(report_csv(report), encoding="utf-8")
    return str(path)


def save_pricing(dash: Dashboard, text: str) -> ProfileBook:
    """Validate edited TOML, bump versions of changed profiles, write the file and record the versions."""
    old = dash.book()
    new = parse(text, old.path)
    merged = replace(old, profiles={})
    for profile in new.profiles.values():
        previous = old.profiles.get(profile.name)
        base = replace(merged, profiles={**merged.profiles, profile.name: previous}) if previous else merged
        merged = base.with_profile(profile)
    merged = replace(
        merged,
        active=new.active,
        currency=new.currency,
        budgets=new.budgets,
        thresholds=new.thresholds,
        assumptions=new.assumptions,
    )
    merged.get(merged.active)
    save_profiles(merged)
    return sync_versions(dash.db_path, merged) if dash.db_path.exists() else merged


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def build_admin_app(services: Services) -> gr.Blocks:
    """The admin dashboard as a Gradio app (mount it with mount_admin)."""
    dash = Dashboard(services)
    book = dash.book()
    names = list(book.profiles)
    with gr.Blocks(title="firstline admin", analytics_enabled=False) as demo:
        gr.Markdown("# firstline · costs and operations  \n[Staff console](/staff/) · [Log out](/logout)")
        with gr.Row():
            since = gr.Textbox(label="Since (YYYY-MM-DD, UTC)", placeholder="start of the ledger", elem_id="since")
            until = gr.Textbox(label="Until (YYYY-MM-DD, included)", placeholder="now", elem_id="until")
            by = gr.Dropdown(list(GROUPS), value="day", label="Group by", elem_id="group-by")
            profile = gr.Dropdown(names, value=book.active, label="Pricing profile", elem_id="profile")
            refresh = gr.Button("Refresh", variant="primary", elem_id="refresh")
        total = gr.HTML(elem_id="total-cost")
        summary = gr.Markdown(elem_id="summary")
        with gr.Tabs():
            with gr.Tab("Costs"):
                with gr.Row():
                    cost_plot = gr.LinePlot(x="time", y="cost", title="Cost over time", elem_id="cost-plot")
                    compute_plot = gr.BarPlot(
                        x="time", y="compute_s", title="Compute seconds over time", elem_id="compute-plot"
                    )
                with gr.Row():
                    route_plot = gr.BarPlot(x="route", y="cost", title="Cost by route", elem_id="route-plot")
                    latency_plot = gr.BarPlot(
                        x="latency",
                        y="requests",
                        title="Latency distribution",
                        elem_id="latency-plot",
                        sort=LATENCY_LABELS,
                    )
                table = gr.Dataframe(label="Report", elem_id="report-table", interactive=False)
                download = gr.DownloadButton("Export CSV", elem_id="export-csv")
            with gr.Tab("Cloud vs on-premises"):
                compare = gr.Dataframe(label="The selected period under every profile", elem_id="compare")
                days = gr.Slider(1, 365, value=30, step=1, label="Project the last N days to a year")
                project_btn = gr.Button("Project and find break-even")
                projection = gr.JSON(label="Projection")
            with gr.Tab("Calculator"):
                with gr.Row():
                    rph = gr.Textbox("100", label="Requests per hour")
                    spr = gr.Textbox("3", label="Seconds per request")
                    pps = gr.Textbox("0.0373", label="Price per compute-second")
                    ppr = gr.Textbox("0.0001", label="Price per request")
                    hpd = gr.Textbox("12", label="Hours per day")
                    dpy = gr.Textbox("250", label="Days per year")
                calc = gr.Button("Calculate")
                calc_out = gr.JSON(label="Estimate", elem_id="estimate")
            with gr.Tab("Pricing and budgets"):
                toml = gr.Code(language="yaml", label="pricing.toml", interactive=True, elem_id="pricing")
                save = gr.Button("Save pricing")
                saved = gr.Markdown()
                budget = gr.Markdown(elem_id="budget")
                events = gr.Dataframe(label="Budget step changes", interactive=False)
            with gr.Tab("Model"):
                model = gr.Markdown(elem_id="model-status")

        def do_refresh(s: str, u: str, g: str, p: str, request: gr.Request) -> tuple[Any, ...]:
            require_role(services, request, "admin")
            try:
                report, current = dash.report(s, u, g, p)
            except (ValueError, PricingError) as exc:
                raise gr.Error(str(exc)) from exc
            series, _ = time_frames(dash, report)
            hist = pd.DataFrame(
                latency_histogram(dash.db_path, report.since, report.until), columns=["latency", "requests"]
            )
            budget_md, events_df = budget_markdown(dash.guard(current))
            return (
                total_html(report),
                summary_markdown(report),
                series,
                series,
                route_frame(dash, report),
                hist,
                table_frame(report),
                gr.DownloadButton(value=csv_file(report)),
                comparison_frame(dash, report, current),
                model_markdown(dash, report),
                budget_md,
                events_df,
            )

        outputs = [total, summary, cost_plot, compute_plot, route_plot, latency_plot, table, download, compare,
                   model, budget, events]  # fmt: skip
        refresh.click(do_refresh, [since, until, by, profile], outputs)
        demo.load(do_refresh, [since, until, by, profile], outputs)

        def load_pricing(request: gr.Request) -> str:
            require_role(services, request, "admin")
            return dumps(dash.book())

        demo.load(load_pricing, None, [toml])

        def do_project(n: float, request: gr.Request) -> dict[str, Any]:
            require_role(services, request, "admin")
            return project(dash.db_path, dash.book(), days=int(n)).as_dict()

        project_btn.click(do_project, [days], [projection])

        def do_estimate(*values_and_request: Any) -> dict[str, Any]:
            *values, request = values_and_request
            require_role(services, request, "admin")
            try:
                return estimate(*[Decimal(str(v).strip()) for v in values]).as_dict()
            except Exception as exc:
                raise gr.Error(f"check the inputs: {exc}") from exc

        calc.click(do_estimate, [rph, spr, pps, ppr, hpd, dpy], [calc_out])

        def do_save(text: str, request: gr.Request) -> tuple[str, str, Any]:
            user = require_role(services, request, "admin")
            try:
                new_book = save_pricing(dash, text)
            except (PricingError, ValueError) as exc:
                return dumps(dash.book()), f"**Not saved:** {html.escape(str(exc))}", gr.Dropdown()
            log.info("pricing profiles saved by %s", user.name)
            ledger = getattr(services, "ledger", None)
            if ledger is not None:  # price new requests with the new values right away
                ledger.profile = active_profile(new_book)
            dash.guard(new_book)
            return dumps(new_book), "Saved.", gr.Dropdown(choices=list(new_book.profiles), value=new_book.active)

        save.click(do_save, [toml], [toml, saved, profile])
    return demo


def mount_admin(app: FastAPI, services: Services) -> None:
    """Mount the admin dashboard at /admin (admins only, checked on every request)."""
    blocks = build_admin_app(services)
    blocks.queue(default_concurrency_limit=2)
    mount_protected(app, services, blocks, ADMIN_PATH, "admin")
