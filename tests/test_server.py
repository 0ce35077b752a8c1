"""The running server over HTTP: gradio_client against the customer chat, separate sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client


def last_text(history: list[dict[str, Any]]) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return str(content)


def test_chat_over_http_with_separate_sessions(live_server_factory: Callable[..., Any], data_dir: Path) -> None:
    server = live_server_factory("scripted")
    assert httpx.get(server.url + "/", follow_redirects=False).status_code in (302, 307)
    a = Client(server.url + "/chat/", verbose=False)
    b = Client(server.url + "/chat/", verbose=False)
    _, hist_a = a.predict("How do I pay my bill?", [], "auto", api_name="/chat")
    _, hist_b = b.predict("Wie kündige ich meinen Vertrag?", [], "auto", api_name="/chat")
    assert last_text(hist_a) and last_text(hist_b)
    _, hist_a2 = a.predict("And when is it debited?", hist_a, "auto", api_name="/chat")
    assert len(hist_a2) == 4
    conn = sqlite3.connect(data_dir / "firstline.db")
    convs = conn.execute(
        "SELECT conversation_id, count(*) FROM messages WHERE role='user' GROUP BY conversation_id ORDER BY 2"
    ).fetchall()
    # two server-side conversations: one per client session, never mixed
    assert [c[1] for c in convs] == [1, 2]
    assert conn.execute("SELECT count(*) FROM requests WHERE status='completed'").fetchone()[0] == 3
    conn.close()


@pytest.mark.real_model
def test_real_model_chat_over_http(live_server_factory: Callable[..., Any], data_dir: Path) -> None:
    server = live_server_factory("llama")
    client = Client(server.url + "/chat/", verbose=False)
    _, history = client.predict(
        "My Wi-Fi keeps dropping every evening, the LumeBox stands in the hallway", [], "auto", api_name="/chat"
    )
    assert len(last_text(history).strip()) > 0
    conn = sqlite3.connect(data_dir / "firstline.db")
    row = conn.execute(
        "SELECT status, compute_s, device FROM requests WHERE route = 'model' ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    conn.close()
    assert row[0] == "completed" and row[1] > 0 and row[2] == "CPU"


def test_staff_and_admin_pages_require_login(live_server_factory: Callable[..., Any]) -> None:
    server = live_server_factory("scripted")
    for prefix in ("/staff", "/admin"):
        r = httpx.get(server.url + prefix + "/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        api = httpx.post(server.url + prefix + "/gradio_api/queue/join", json={})
        assert api.status_code == 401
