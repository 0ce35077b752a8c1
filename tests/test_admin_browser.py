"""The admin dashboard in headless Chromium: an admin logs in and sees the plots and the report's total."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ui.auth import SESSION_COOKIE, UserStore
from usage.ledger import Ledger, Measurement

ROOT = Path(__file__).resolve().parent.parent
ADMIN, STAFF, PASSWORD = "ada", "sam", "correct horse battery"


def seed(data_dir: Path) -> None:
    """Ledger rows through the real ledger, an admin and a staff login."""
    db = data_dir / "firstline.db"
    ledger = Ledger(db, heartbeat=False)
    rng = random.Random(4)
    for i in range(30):
        rid = ledger.start(conversation_id=f"c{i // 3}", route=rng.choice(["model", "model", "faq"]), model_id="m")
        m = Measurement(queue_wait_s=rng.random() / 20, prefill_s=rng.random() / 5, decode_s=rng.random() * 2)
        ledger.finish(rid, measurement=m)
    ledger.close()
    users = UserStore(db)
    users.add_user(ADMIN, "admin", PASSWORD)
    users.add_user(STAFF, "staff", PASSWORD)
    users.close()


def cli_report(data_dir: Path, *args: str) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "ui.cli", "report", "--json", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        env={**os.environ, "FIRSTLINE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def login(page: Any, base: str, name: str, target: str = "/admin/") -> None:
    page.goto(f"{base}/login?next={target}")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login")


@pytest.mark.browser
def test_admin_sees_plots_and_a_total_matching_the_report(
    data_dir: Path, live_server_factory: Any, browser: Any, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    seed(data_dir)
    server = live_server_factory(backend="scripted")
    expected = cli_report(data_dir)
    assert expected["totals"]["requests"] == 30
    page = browser.new_page()
    request.node._pages = [page]
    login(page, server.url, ADMIN)
    page.wait_for_url("**/admin/**")
    expect(page.locator("#total-cost")).to_contain_text(expected["totals"]["cost"], timeout=60_000)
    expect(page.locator("#total-cost")).to_contain_text(expected["currency"])
    for plot in ("#cost-plot", "#compute-plot", "#route-plot", "#latency-plot"):
        expect(page.locator(f"{plot} svg, {plot} canvas").first).to_be_visible(timeout=30_000)
    day = expected["rows"][0]["day"]
    expect(page.locator("#report-table")).to_contain_text(day)

    page.locator("#group-by input").click()  # the table regroups; the total stays the report's total
    page.get_by_role("option", name="route").click()
    page.click("#refresh")
    expect(page.locator("#report-table")).to_contain_text("model", timeout=30_000)
    by_route = cli_report(data_dir, "--by", "route")
    expect(page.locator("#total-cost")).to_contain_text(by_route["totals"]["cost"])


@pytest.mark.browser
def test_staff_cannot_use_the_admin_dashboard(data_dir: Path, live_server_factory: Any, browser: Any) -> None:
    seed(data_dir)
    server = live_server_factory(backend="scripted")
    page = browser.new_page()
    login(page, server.url, STAFF)
    page.wait_for_url("**/staff/**")  # staff are sent to their console, not the dashboard
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: cookies[SESSION_COOKIE]}) as client:
        assert client.get("/admin/", follow_redirects=False).status_code == 303
        assert client.get("/admin/config").status_code == 401
    assert httpx.get(f"{server.url}/admin/config").status_code == 401


def test_admin_handlers_recheck_the_role_from_the_cookie(data_dir: Path) -> None:
    import gradio as gr
    from starlette.requests import Request

    from ui.web.access import require_role

    seed(data_dir)
    users = UserStore(data_dir / "firstline.db")

    class FakeServices:
        pass

    services: Any = FakeServices()
    services.users = users

    def gr_request(token: str | None) -> gr.Request:
        headers = [(b"cookie", f"{SESSION_COOKIE}={token}".encode())] if token else []
        return gr.Request(request=Request({"type": "http", "headers": headers}))

    admin_token = users.login(ADMIN, PASSWORD, "test")
    staff_token = users.login(STAFF, PASSWORD, "test")
    assert require_role(services, gr_request(admin_token), "admin").name == ADMIN
    for token in (staff_token, "forged", None):
        with pytest.raises(gr.Error):
            require_role(services, gr_request(token), "admin")
    with pytest.raises(gr.Error):
        require_role(services, None, "admin")
    users.close()


def fake_services(data_dir: Path) -> Any:
    from types import SimpleNamespace

    from models.fake import ScriptedChatModel

    settings = SimpleNamespace(data_dir=data_dir, database_path=data_dir / "firstline.db")
    return SimpleNamespace(bot_settings=settings, model=ScriptedChatModel(), users=None)


def test_dashboard_figures_match_the_report_and_pricing_edits_bump_versions(data_dir: Path) -> None:
    from decimal import Decimal

    from ui.web.admin import Dashboard, comparison_frame, csv_file, model_markdown, save_pricing, total_html
    from usage.pricing import PricingError
    from usage.profiles import dumps

    seed(data_dir)
    dash = Dashboard(fake_services(data_dir))
    report, book = dash.report("", "", "route", "")
    expected = cli_report(data_dir, "--by", "route")
    assert expected["totals"]["cost"] in total_html(report)
    frame = comparison_frame(dash, report, book)
    assert list(frame["profile"]) == list(book.profiles)
    assert frame.loc[frame["profile"] == book.active, "cost"].item() == expected["totals"]["cost"]
    csv_text = Path(csv_file(report)).read_text()
    assert csv_text.startswith("route,requests") and len(csv_text.strip().splitlines()) == 1 + len(report.rows)
    assert "scripted-fake" in model_markdown(dash, report)

    edited = dumps(book).replace("price_per_second = 0.0373", "price_per_second = 0.05")
    saved = save_pricing(dash, edited)
    assert saved.active_profile.version == 2 and saved.active_profile.price_per_second == Decimal("0.05")  # type: ignore[union-attr]
    assert dash.book().active_profile.version == 2
    assert save_pricing(dash, dumps(dash.book())).active_profile.version == 2  # unchanged: no bump
    with pytest.raises(PricingError):
        save_pricing(dash, edited.replace('kind = "on_premises"', 'kind = "barter"'))
    assert dash.book().active_profile.version == 2  # a refused edit leaves the file alone
