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
import json
import logging
import tempfile
import threading
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from bot.outcomes import ConversationOutcomes
from ui.app import Services
from ui.web.access import ADMIN_PATH, mount_protected, require_role
from ui.web.admin_views import (
    PRESETS,
    conversations_frame,
    estimate_markdown,
    failures_frame,
    failures_markdown,
    fmt_money,
    fmt_num,
    fmt_share,
    kpi_html,
    preset_range,
    projection_markdown,
    requests_frame,
    route_frame,
    summary_markdown,
    table_frame,
    time_frame,
    time_unit,
)
from usage.alerts import Alert, AlertDispatcher, AlertSettings
from usage.budgets import BudgetGuard
from usage.db import exists
from usage.drilldown import conversations_of, requests_of
from usage.ledger import utcnow
from usage.planning import estimate, project, span_text
from usage.pricing import CloudPerSecond, PeriodUsage, PricingError, duration_s
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
LATENCY_LABELS = [label.removesuffix(" s") for label in latency_labels()]


class Dashboard:
    """Server-side state of the dashboard: paths, the pricing book and a budget guard."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.data_dir = Path(services.bot_settings.data_dir)
        self.db_path = services.bot_settings.database  # a SQLite path or a PostgreSQL URL
        self._lock = threading.Lock()
        self._guard: BudgetGuard | None = getattr(services, "budget", None)
        # budget alerts (e-mail / webhook); the guard wakes the dispatcher when a step changes
        self.alerts = AlertDispatcher(self.db_path, AlertSettings(), currency=self.book().currency)
        if self._guard is not None:
            self._guard.listeners.append(self.alerts.wake)

    def book(self) -> ProfileBook:
        return load_profiles(self.data_dir, sync_history=exists(self.db_path), database=self.db_path)

    def guard(self, book: ProfileBook) -> BudgetGuard:
        with self._lock:
            if self._guard is None:
                self._guard = BudgetGuard(self.db_path, book)
                self._guard.listeners.append(self.alerts.wake)
            else:
                self._guard.update(book)
            return self._guard

    def facts(self) -> ConversationOutcomes | None:
        """Conversations and tickets counted by their stores (None: the report counts from the ledger)."""
        store, tickets = getattr(self.services, "store", None), getattr(self.services, "tickets", None)
        return ConversationOutcomes(store, tickets) if store is not None and tickets is not None else None

    def report(self, since: str, until: str, by: str, profile: str) -> tuple[Report, ProfileBook]:
        book = self.book()
        if exists(self.db_path):
            prepare(self.db_path)
        chosen = book.get(profile) if profile else book.active_profile
        result = build_report(
            self.db_path,
            chosen,
            by=by,
            since=parse_when(since or None),
            until=parse_when(until or None, end=True),
            assumptions=book.assumptions,
            facts=self.facts(),
        )
        return result, book


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
        per_request = cost / totals.requests if totals.requests else None
        money_cols = {"Cost": fmt_money(cost, p.currency), "Cost per request": fmt_money(per_request, p.currency)}
        rows.append({"Profile": name, "Kind": p.kind.replace("_", " "), "Version": p.version, **money_cols})
    return pd.DataFrame(rows, columns=["Profile", "Kind", "Version", "Cost", "Cost per request"])


def model_versions_markdown(db_path: Path | str, data_dir: Path) -> str:
    """Fine-tuned model versions (`firstline models list`): which one serves and its held-out figures against
    the base; cost per version is the report grouped by model."""
    from bot.tuning.promotion import version_rows
    from bot.tuning.registry import ModelRegistry

    if not exists(db_path):
        return ""
    registry = ModelRegistry(db_path, data_dir)
    try:
        rows = version_rows(registry)
    finally:
        registry.close()
    if len(rows) < 2:
        return ""
    cells = []
    for row in rows[1:]:
        tuned, base = (row["metrics"] or {}).get("tuned") or {}, (row["metrics"] or {}).get("base") or {}
        keys = ("reference_f1", "garbled_rate_de")
        figures = ", ".join(f"{k} {_num(base.get(k))} → {_num(tuned.get(k))}" for k in keys)
        mark = " **(serving)**" if row["active"] else ""
        cells.append(f"`{html.escape(row['version'])}`{mark}: {figures}")
    serving = next(r["version"] for r in rows if r["active"])
    return f"**Model versions** (serving: `{html.escape(serving)}`; held-out, base → tuned): " + " · ".join(cells)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def model_markdown(dash: Dashboard, report: Report) -> str:
    model = dash.services.model
    from usage.db import connect
    from usage.provisioning import current_state

    state = None
    if exists(dash.db_path):
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
    versions = model_versions_markdown(dash.db_path, dash.data_dir)
    if versions:
        parts.append(versions)
    t = report.to_json()["totals"]
    parts.append(
        f"in the period: {span_text(t['provisioned_s'])} provisioned ({t['provisioned_source']}), "
        f"{span_text(t['idle_s'])} idle, utilisation {fmt_share(t['utilization'])}"
    )
    return "\n\n".join(parts)


def budget_markdown(guard: BudgetGuard) -> tuple[str, pd.DataFrame]:
    status = guard.status().as_dict()
    unit = status["currency"] if status["unit"] == "money" else "compute-s"

    def amount(value: str | None) -> str:
        if value is None:
            return "no limit"
        return fmt_money(value, unit) if status["unit"] == "money" else f"{fmt_num(value, 1)} {unit}"

    lines = [f"**Budget step: {status['step']}** (profile {html.escape(status['profile'])})"]
    for p in status["periods"]:
        lines.append(f"- {p['period']}: spent {amount(p['spent'])} of {amount(p['limit'])} "
                     f"({fmt_share(p['share'])}) → {p['step']}")  # fmt: skip
    events = pd.DataFrame(
        [
            [e["at"][:19].replace("T", " "), e["profile"], e["period"], e["step"], fmt_share(e["share"])]
            for e in guard.events(20)
        ],  # fmt: skip
        columns=["At (UTC)", "Profile", "Period", "Step", "Share of budget"],
    )
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
    return sync_versions(dash.db_path, merged) if exists(dash.db_path) else merged


def transcript_markdown(services: Services, conversation_id: str) -> str:
    """A conversation's messages (customer, bot, staff) for the drill-down."""
    messages = services.store.messages(conversation_id)
    if not messages:
        return f"No messages stored for conversation `{html.escape(conversation_id)}` (deleted by retention?)."
    lines = [f"**Conversation `{html.escape(conversation_id)}`**"]
    for m in messages:
        route = f" · {m.route}" if m.route else ""
        lines.append(f"- `{m.created_at[:19].replace('T', ' ')}` **{m.role}**{route}: {html.escape(m.content)}")
    return "\n".join(lines)


CSS = """
.kpis {display:flex; flex-wrap:wrap; gap:.6rem}
.kpi {flex:1 1 10rem; border:1px solid var(--border-color-primary); border-radius:.5rem; padding:.5rem .75rem}
.kpi-label {font-size:.8rem; opacity:.75} .kpi-value {font-size:1.35rem; font-weight:600}
.kpi-detail {font-size:.75rem; opacity:.75}
.warning {border-left:4px solid #c77700; background:#fff4e0; color:#5a3500; padding:.5rem .75rem; margin:.25rem 0}
"""


def build_admin_app(services: Services, *, with_dashboard: bool = False) -> Any:
    """The admin dashboard as a Gradio app (mount it with mount_admin); with its Dashboard if asked."""
    dash = Dashboard(services)
    book = dash.book()
    names = list(book.profiles)
    with gr.Blocks(title="firstline admin", analytics_enabled=False, fill_width=True) as demo:
        gr.Markdown("# firstline · costs and operations  \n[Staff console](/staff/) · [Log out](/logout)")
        with gr.Row(equal_height=True):
            preset = gr.Radio(list(PRESETS), value="All time", label="Period", elem_id="preset", scale=3)
            since = gr.Textbox(label="Since (YYYY-MM-DD, UTC)", placeholder="start of the ledger", elem_id="since")
            until = gr.Textbox(label="Until (YYYY-MM-DD, included)", placeholder="now", elem_id="until")
            by = gr.Dropdown(list(GROUPS), value="day", label="Group by", elem_id="group-by")
            profile = gr.Dropdown(names, value=book.active, label="Pricing profile", elem_id="profile")
            refresh = gr.Button("Refresh", variant="primary", elem_id="refresh", scale=0)
        total = gr.HTML(elem_id="total-cost")
        summary = gr.Markdown(elem_id="summary")
        shown = gr.State({})  # the period and grouping of the figures on screen, for the drill-down
        with gr.Tabs():
            with gr.Tab("Costs"):
                with gr.Row():
                    cost_plot = gr.BarPlot(x="time", y="cost", title="Cost over time", elem_id="cost-plot",
                                           x_title="time (UTC)", sort="x", x_label_angle=-45)  # fmt: skip
                    compute_plot = gr.BarPlot(x="time", y="compute_s", title="Compute seconds over time",
                                              elem_id="compute-plot", x_title="time (UTC)", sort="x",
                                              x_label_angle=-45)  # fmt: skip
                with gr.Row():
                    route_plot = gr.BarPlot(x="route", y="cost", title="Cost by route", elem_id="route-plot")
                    latency_plot = gr.BarPlot(x="latency", y="requests", title="Latency distribution",
                                              elem_id="latency-plot", x_title="latency (seconds)",
                                              sort=LATENCY_LABELS, x_label_angle=-40)  # fmt: skip
                gr.Markdown("Select a row of the report to see its conversations and requests.")
                table = gr.Dataframe(label="Report", elem_id="report-table", interactive=False, wrap=True)
                download = gr.DownloadButton("Export CSV", elem_id="export-csv")
                drill_head = gr.Markdown(elem_id="drill-head")
                drill_convs = gr.Dataframe(conversations_frame([]), label="Conversations (select one for its messages)",
                                           elem_id="drill-conversations", interactive=False, wrap=True)  # fmt: skip
                drill_reqs = gr.Dataframe(requests_frame([]), label="Requests", elem_id="drill-requests",
                                          interactive=False, wrap=True)  # fmt: skip
                transcript = gr.Markdown(elem_id="transcript")
            with gr.Tab("Errors"):
                failures_md = gr.Markdown(elem_id="failures-summary")
                failures = gr.Dataframe(label="Failed requests by cause (select one)", elem_id="failures",
                                        interactive=False, wrap=True)  # fmt: skip
                failed_reqs = gr.Dataframe(label="Failed requests, newest first", elem_id="failed-requests",
                                           interactive=False, wrap=True)  # fmt: skip
            with gr.Tab("Cloud vs on-premises"):
                compare = gr.Dataframe(label="The selected period under every profile", elem_id="compare", wrap=True)
                days = gr.Slider(1, 365, value=30, step=1, label="Project the last N days to a year", elem_id="days")
                project_btn = gr.Button("Project and find break-even", elem_id="project")
                projection = gr.Markdown(elem_id="projection")
            with gr.Tab("Calculator"):
                with gr.Row():
                    rph = gr.Number(100, label="Requests per hour", minimum=0)
                    spr = gr.Number(3, label="Seconds per request", minimum=0)
                    pps = gr.Number(0.0373, label=f"Price per compute-second ({book.currency})", minimum=0)
                    ppr = gr.Number(0.0001, label=f"Price per request ({book.currency})", minimum=0)
                    hpd = gr.Number(12, label="Hours per day", minimum=0, maximum=24)
                    dpy = gr.Number(250, label="Days per year", minimum=0, maximum=366)
                calc = gr.Button("Calculate", elem_id="calculate")
                calc_out = gr.Markdown(elem_id="estimate")
            with gr.Tab("Pricing and budgets"):
                toml = gr.Code(language="yaml", label="pricing.toml", interactive=True, elem_id="pricing")
                save = gr.Button("Save pricing", elem_id="save-pricing")
                saved = gr.Markdown(elem_id="saved")
                budget = gr.Markdown(elem_id="budget")
                events = gr.Dataframe(label="Budget step changes", interactive=False, elem_id="budget-events")
                alerts_md = gr.Markdown(elem_id="alerts")
                test_alert = gr.Button("Send a test alert", elem_id="test-alert")
                alerts_table = gr.Dataframe(label="Alerts sent (newest first)", interactive=False,
                                            elem_id="alert-log", wrap=True)  # fmt: skip
            with gr.Tab("Model"):
                model = gr.Markdown(elem_id="model-status")

        def do_refresh(s: str, u: str, g: str, p: str, request: gr.Request) -> tuple[Any, ...]:
            require_role(services, request, "admin")
            try:
                report, current = dash.report(s, u, g, p)
            except (ValueError, PricingError) as exc:
                raise gr.Error(str(exc)) from exc
            unit = time_unit(report.since, report.until)
            series = time_frame(
                build_report(
                    dash.db_path, report.profile, by=unit, since=report.since, until=report.until, with_outcomes=False
                ),  # fmt: skip
                unit,
            )
            by_route = report if report.by == "route" else _grouped(dash, report, "route")
            by_outcome = report if report.by == "outcome" else _grouped(dash, report, "outcome")
            buckets = latency_histogram(dash.db_path, report.since, report.until)
            hist = pd.DataFrame(
                [(label.removesuffix(" s"), n) for label, n in buckets], columns=["latency", "requests"]
            )
            failed = requests_of(dash.db_path, None, "", report.since, report.until, failed_only=True, limit=50)
            budget_md, events_df = budget_markdown(dash.guard(current))
            state = {"since": report.since.isoformat(), "until": report.until.isoformat(), "by": report.by}
            return (
                kpi_html(report),
                summary_markdown(report),
                series,
                series,
                route_frame(by_route.rows),
                hist,
                table_frame(report),
                gr.DownloadButton(value=csv_file(report)),
                comparison_frame(dash, report, current),
                model_markdown(dash, report),
                budget_md,
                events_df,
                failures_markdown(by_outcome),
                failures_frame(by_outcome),
                requests_frame(failed),
                state,
                *alerts_view(dash.alerts),
            )

        outputs = [total, summary, cost_plot, compute_plot, route_plot, latency_plot, table, download, compare,
                   model, budget, events, failures_md, failures, failed_reqs, shown,
                   alerts_md, alerts_table]  # fmt: skip
        refresh.click(do_refresh, [since, until, by, profile], outputs)
        demo.load(do_refresh, [since, until, by, profile], outputs)

        def do_preset(name: str, request: gr.Request) -> tuple[str, str]:
            require_role(services, request, "admin")
            return preset_range(name, utcnow())

        # "always_last" on both steps: a preset picked while the previous one still loads runs after it (with
        # the default, "once", its refresh was dropped, leaving the first preset's figures under its name)
        preset.input(do_preset, [preset], [since, until], trigger_mode="always_last").then(
            do_refresh, [since, until, by, profile], outputs, trigger_mode="always_last"
        )

        def do_drill(state: dict[str, Any], evt: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
            require_role(services, request, "admin")
            if not state or not evt.row_value:
                raise gr.Error("Refresh the report first.")
            key = str(evt.row_value[0])
            key = "" if key == "(none)" else key
            by_, lo, hi = state["by"], datetime.fromisoformat(state["since"]), datetime.fromisoformat(state["until"])
            tickets = getattr(dash.services, "tickets", None)
            convs = conversations_of(dash.db_path, by_, key, lo, hi,
                                     tickets=tickets.latest_of if tickets is not None else None)  # fmt: skip
            reqs = requests_of(dash.db_path, by_, key, lo, hi)
            head = (f"### {html.escape(by_)} {html.escape(key or '(none)')}: {len(convs)} conversation(s), "
                    f"{len(reqs)} request(s) shown (costs as recorded)")  # fmt: skip
            return head, conversations_frame(convs), requests_frame(reqs), ""

        table.select(do_drill, [shown], [drill_head, drill_convs, drill_reqs, transcript])

        def do_transcript(evt: gr.SelectData, request: gr.Request) -> str:
            require_role(services, request, "admin")
            return transcript_markdown(services, str((evt.row_value or [""])[0]))

        drill_convs.select(do_transcript, None, [transcript])

        def do_cause(state: dict[str, Any], evt: gr.SelectData, request: gr.Request) -> Any:
            require_role(services, request, "admin")
            if not state or not evt.row_value:
                raise gr.Error("Refresh the report first.")
            lo, hi = datetime.fromisoformat(state["since"]), datetime.fromisoformat(state["until"])
            return requests_frame(requests_of(dash.db_path, "outcome", str(evt.row_value[0]), lo, hi))

        failures.select(do_cause, [shown], [failed_reqs])

        def do_test_alert(request: gr.Request) -> tuple[str, pd.DataFrame]:
            require_role(services, request, "admin")
            if not dash.alerts.settings.channels:
                raise gr.Error("No alert channel is configured: " + dash.alerts.settings.describe())
            results = dash.alerts.send_test()
            text = "\n".join(f"- test alert by {c}: " + ("sent" if e is None else f"**failed**: {html.escape(e)}")
                             for c, e in results)  # fmt: skip
            return alerts_view(dash.alerts)[0] + "\n\n" + text, alerts_view(dash.alerts)[1]

        test_alert.click(do_test_alert, None, [alerts_md, alerts_table])

        def load_pricing(request: gr.Request) -> str:
            require_role(services, request, "admin")
            return dumps(dash.book())

        demo.load(load_pricing, None, [toml])

        def do_project(n: float, request: gr.Request) -> str:
            require_role(services, request, "admin")
            return projection_markdown(project(dash.db_path, dash.book(), days=int(n)))

        project_btn.click(do_project, [days], [projection])

        def do_estimate(
            requests_per_hour: float | None,
            seconds_per_request: float | None,
            price_per_second: float | None,
            price_per_request: float | None,
            hours_per_day: float | None,
            days_per_year: float | None,
            request: gr.Request,
        ) -> str:
            require_role(services, request, "admin")
            values = (requests_per_hour, seconds_per_request, price_per_second, price_per_request, hours_per_day,
                      days_per_year)  # fmt: skip
            if any(v is None for v in values):
                raise gr.Error("Fill in every field of the calculator.")
            try:
                result = estimate(*[Decimal(str(v)) for v in values])
            except (ValueError, ArithmeticError) as exc:
                raise gr.Error(f"Check the inputs: {exc}") from exc
            return estimate_markdown(result, dash.book().currency)

        calc.click(do_estimate, [rph, spr, pps, ppr, hpd, dpy], [calc_out])

        def do_save(text: str, request: gr.Request) -> tuple[str, str, Any]:
            user = require_role(services, request, "admin")
            try:
                new_book = save_pricing(dash, text or "")
            except (PricingError, ValueError) as exc:
                return dumps(dash.book()), f"**Not saved:** {html.escape(str(exc))}", gr.Dropdown()
            log.info("pricing profiles saved by %s", user.name)
            ledger = getattr(services, "ledger", None)
            if ledger is not None:  # price new requests with the new values right away
                ledger.profile = active_profile(new_book)
            dash.guard(new_book)
            return dumps(new_book), "Saved.", gr.Dropdown(choices=list(new_book.profiles), value=new_book.active)

        save.click(do_save, [toml], [toml, saved, profile])
    return (demo, dash) if with_dashboard else demo


def alerts_view(alerts: AlertDispatcher) -> tuple[str, pd.DataFrame]:
    """Where budget alerts go, and the outbox's newest rows."""
    text = (f"**Budget alerts**: {html.escape(alerts.settings.describe())}. An alert goes out when the step "
            "rises: first at `warn` (80 % of a budget by default, before it is reached), then at each further "
            "step.")  # fmt: skip
    rows = []
    for r in alerts.recent(20):
        payload = json.loads(r["payload"] or "{}")
        subject = Alert(payload).subject if payload else ""
        rows.append([r["created_at"][:19].replace("T", " "), r["channel"], r["status"], r["attempts"], subject,
                     r["last_error"] or ""])  # fmt: skip
    return text, pd.DataFrame(rows, columns=["Queued (UTC)", "Channel", "Status", "Attempts", "Alert", "Last error"])


def _grouped(dash: Dashboard, report: Report, by: str) -> Report:
    return build_report(dash.db_path, report.profile, by=by, since=report.since, until=report.until,
                        with_outcomes=False)  # fmt: skip


def mount_admin(app: FastAPI, services: Services) -> None:
    """Mount the admin dashboard at /admin (admins only, checked on every request)."""
    blocks, dash = build_admin_app(services, with_dashboard=True)
    dash.alerts.start()  # delivers budget alerts while the server runs (when a channel is configured)
    blocks.queue(default_concurrency_limit=2)
    mount_protected(app, services, blocks, ADMIN_PATH, "admin", css=CSS)
