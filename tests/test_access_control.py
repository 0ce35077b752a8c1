"""Roles and access: every route and API endpoint against anonymous, customer, staff, admin and bad sessions.

Customers are anonymous: the chat's conversation id lives in server-side gr.State, so no call, public or
private, with any data in any input slot, can read or write another conversation. The staff console
(/staff) and the admin dashboard (/admin) refuse every request, page or API, without a session of the
right role. /admin may not be mounted yet (ui.web.admin is built in parallel): then it is 404 for an admin
and still 303/401 for everyone else, so the test holds before and after it is mounted.
"""

from __future__ import annotations

import http.client
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer
from gradio_client import Client
from gradio_raw import call, config, fn_index

from ui.auth import SESSION_COOKIE, UserStore

STAFF_PW = "correct horse battery"
ADMIN_PW = "admin horse battery staple"
PUBLIC_CHAT_APIS = {"/chat", "/talk_to_person", "/leave_email"}
CANARY = "CANARY-VICTIM-7Q2X"


class Env:
    """A running server plus session cookies for every kind of caller."""

    def __init__(self, server: LiveServer, db: Path) -> None:
        self.server, self.url, self.db = server, server.url, db
        self.cookies: dict[str, dict[str, str] | None] = {}

    def get(self, path: str, caller: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, cookies=self.cookies[caller], follow_redirects=False, timeout=30, **kw)

    def post(self, path: str, caller: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, cookies=self.cookies[caller], follow_redirects=False, timeout=30, **kw)


def _token(db: Path, name: str, password: str, hours: float = 1.0) -> str:
    store = UserStore(db, session_hours=hours)
    try:
        return store.login(name, password, "test")
    finally:
        store.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("access") / "data"
    data.mkdir()
    db = data / "firstline.db"
    users = UserStore(db)
    users.add_user("sam", "staff", STAFF_PW)
    users.add_user("ada", "admin", ADMIN_PW)
    users.add_user("old", "staff", STAFF_PW)
    # the login limiter counts per name too: each login test uses its own name
    for name, role in (("cookie", "staff"), ("redir-s", "staff"), ("redir-a", "admin"), ("team", "staff")):
        users.add_user(name, role, STAFF_PW)
    users.close()
    server = LiveServer(data, "scripted")
    e = Env(server, db)
    e.cookies = {
        "anonymous": None,
        "customer": None,  # customers never have a cookie; they get a chat session (see the tests below)
        "staff": {SESSION_COOKIE: _token(db, "sam", STAFF_PW)},
        "admin": {SESSION_COOKIE: _token(db, "ada", ADMIN_PW)},
        "expired": {SESSION_COOKIE: _token(db, "sam", STAFF_PW, hours=0.2 / 3600)},
        "forged": {SESSION_COOKIE: secrets.token_urlsafe(32)},
        "disabled": {SESSION_COOKIE: _token(db, "old", STAFF_PW)},
    }
    conn = sqlite3.connect(db)
    conn.execute("UPDATE users SET disabled = 1 WHERE name = 'old'")
    conn.commit()
    conn.close()
    time.sleep(0.3)  # the short session has expired
    yield e
    server.stop()


def _admin_mounted(env: Env) -> bool:
    status = env.get("/admin/", "admin").status_code
    assert status in (200, 404), status  # an admin is never refused, the dashboard may not exist yet
    return status == 200


# -- the matrix -----------------------------------------------------------------------------------------
# (method, path under the app prefix, request kwargs)
APP_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "", {}),
    ("GET", "/", {}),
    ("GET", "/config", {}),
    ("GET", "/gradio_api/info", {}),
    ("GET", "/gradio_api/openapi.json", {}),
    ("POST", "/gradio_api/queue/join", {"json": {"data": [], "fn_index": 0, "session_hash": "abc123"}}),
    ("GET", "/gradio_api/queue/data?session_hash=abc123", {}),
    ("POST", "/gradio_api/call/chat", {"json": {"data": ["hi"]}}),
    ("POST", "/gradio_api/run/predict", {"json": {"data": []}}),
    ("POST", "/gradio_api/api/predict", {"json": {"data": []}}),
    ("POST", "/gradio_api/upload", {"files": {"files": ("a.txt", b"hello", "text/plain")}}),
    ("GET", "/gradio_api/file=/etc/hostname", {}),
    ("GET", "/gradio_api/file=http://127.0.0.1:9/x.png", {}),
    ("GET", "/gradio_api/heartbeat/abc123", {}),
    ("POST", "/gradio_api/cancel", {"json": {"session_hash": "abc123", "fn_index": 0, "event_id": "x"}}),
    ("POST", "/gradio_api/reset", {"json": {"event_id": "x"}}),
    ("GET", "/gradio_api/startup-events", {}),
    ("GET", "/gradio_api/runs", {}),
    ("GET", "/gradio_api/deep_link?session_hash=abc123", {}),
    ("GET", "/theme.css", {}),
    ("GET", "/manifest.json", {}),
    ("GET", "/login_check", {}),
    ("POST", "/login", {"data": {"username": "sam", "password": STAFF_PW}}),
]
CALLERS = ["anonymous", "customer", "staff", "admin", "expired", "forged", "disabled"]
SECRETS = ("password_hash", "token_hash", "firstline_session", "scrypt$")


class Answer:
    """Status, headers and the first bytes of a response (event streams stay open: never read to the end)."""

    def __init__(self, status_code: int, headers: httpx.Headers, text: str) -> None:
        self.status_code, self.headers, self.text = status_code, headers, text


def _request(env: Env, method: str, path: str, caller: str, kw: dict[str, Any]) -> Answer:
    with (
        httpx.Client(cookies=env.cookies[caller], timeout=30) as client,
        client.stream(method, env.url + path, follow_redirects=False, **kw) as r,
    ):
        body = b""
        if "text/event-stream" not in r.headers.get("content-type", ""):
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > 200_000:
                    break
        return Answer(r.status_code, r.headers, body.decode("utf-8", "replace"))


@pytest.mark.parametrize("prefix", ["/staff", "/admin"])
@pytest.mark.parametrize("caller", CALLERS)
def test_protected_apps_refuse_every_route_without_the_role(env: Env, prefix: str, caller: str) -> None:
    role = prefix.strip("/")
    allowed = caller == "admin" or (caller == "staff" and role == "staff")
    mounted = prefix == "/staff" or _admin_mounted(env)
    for method, sub, kw in APP_ROUTES:
        r = _request(env, method, prefix + sub, caller, kw)
        where = f"{caller} {method} {prefix + sub} -> {r.status_code} {r.text[:120]!r}"
        assert r.status_code < 500, where
        if not allowed:
            if method == "GET" and sub in ("", "/"):
                assert r.status_code == 303 and r.headers["location"] == f"/login?next={prefix}/", where
            else:
                assert r.status_code == 401, where
            assert not any(s in r.text for s in SECRETS), where
        elif not mounted:
            assert r.status_code == 404, where
    if allowed and mounted:
        for sub in ("/", "/config", "/gradio_api/info"):
            r = _request(env, "GET", prefix + sub, caller, {})
            assert r.status_code == 200, (caller, sub, r.status_code)


def test_admin_dashboard_refuses_staff_and_admin_may_use_the_staff_console(env: Env) -> None:
    assert env.get("/admin/", "staff").status_code == 303
    assert env.get("/admin/config", "staff").status_code == 401
    assert env.get("/staff/", "admin").status_code == 200
    assert env.get("/staff/gradio_api/info", "admin").status_code == 200
    staff_client = Client(env.url + "/staff/", verbose=False, headers={"Cookie": _cookie(env, "admin")})
    assert staff_client.view_api(print_info=False, return_format="dict") is not None


def _cookie(env: Env, caller: str) -> str:
    jar = env.cookies[caller] or {}
    return "; ".join(f"{k}={v}" for k, v in jar.items())


@pytest.mark.parametrize("caller", CALLERS)
def test_gradio_client_reaches_protected_apps_only_with_the_role(env: Env, caller: str) -> None:
    headers = {"Cookie": _cookie(env, caller)} if env.cookies[caller] else None
    for prefix, allowed in (("/staff", caller in ("staff", "admin")), ("/admin", caller == "admin")):
        if prefix == "/admin" and allowed and not _admin_mounted(env):
            allowed = False  # 404 until ui.web.admin is mounted
        if allowed:
            Client(env.url + prefix + "/", verbose=False, headers=headers)
        else:
            with pytest.raises(Exception):  # noqa: B017 - gradio_client raises several types for 401/404
                Client(env.url + prefix + "/", verbose=False, headers=headers)


@pytest.mark.parametrize("caller", CALLERS)
def test_customer_app_exposes_only_chat_talk_to_person_and_leave_email(env: Env, caller: str) -> None:
    for sub in ("/chat/", "/chat/config", "/chat/gradio_api/info"):
        assert env.get(sub, caller).status_code == 200
    info = env.get("/chat/gradio_api/info", caller).json()
    assert set(info["named_endpoints"]) == PUBLIC_CHAT_APIS
    assert not info.get("unnamed_endpoints")
    client = Client(env.url + "/chat/", verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == PUBLIC_CHAT_APIS and not api.get("unnamed_endpoints")
    # what the customer app must never offer an anonymous caller
    for method, sub, kw in APP_ROUTES:
        if sub.startswith(("/gradio_api/upload", "/gradio_api/file=http", "/gradio_api/runs", "/gradio_api/deep")):
            r = _request(env, method, "/chat" + sub, caller, kw)
            assert r.status_code == 403, (sub, r.status_code, r.text[:200])
    for path in ("/chat/gradio_api/file=" + str(env.db), "/chat/gradio_api/file=/etc/passwd"):
        assert env.get(path, caller).status_code in (403, 404)


def test_top_level_routes(env: Env) -> None:
    r = env.get("/", "anonymous")
    assert r.status_code in (302, 307) and r.headers["location"] == "/chat/"
    assert env.get("/healthz", "anonymous").json() == {"status": "ok"}
    # operations (ui/web/ops.py): liveness and readiness are public and say nothing secret; metrics only
    # for internal addresses (the test runs on 127.0.0.1) or the token, never for a forwarded outside client
    for caller in CALLERS:
        assert env.get("/health", caller).json() == {"status": "ok"}
        ready = env.get("/ready", caller)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert not any(s in ready.text for s in SECRETS)
        assert env.get("/metrics", caller).status_code == 200
        outside = env.get("/metrics", caller, headers={"X-Forwarded-For": "203.0.113.50"})
        assert outside.status_code == 403 and "firstline_" not in outside.text
    assert env.get("/metrics", "anonymous", headers={"Authorization": "Bearer guess"}).status_code == 401
    page = env.get("/login", "anonymous")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert env.get("/logout", "anonymous").status_code == 303
    for path in ("/docs", "/openapi.json", "/redoc", "/users", "/tickets", "/ledger", "/api"):
        assert env.get(path, "anonymous").status_code == 404, path
    # a body over the limit is refused from its declared length, before it is read
    conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        conn.putrequest("POST", "/chat/gradio_api/queue/join")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(50 * 1024 * 1024))
        conn.endheaders()
        conn.send(b'{"data": [')
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def _raw_get(env: Env, raw_path: str, cookie: str | None = None) -> tuple[int, str]:
    """A GET whose path goes on the wire exactly as written (httpx would normalise dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        if cookie:
            conn.putheader("Cookie", cookie)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(2000).decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "raw_path",
    [
        "//staff/gradio_api/info",
        "/staff//gradio_api/info",
        "/staff/./gradio_api/info",
        "/chat/../staff/gradio_api/info",
        "/chat/%2e%2e/staff/gradio_api/info",
        "/%73taff/gradio_api/info",
        "/staff%2fgradio_api/info",
        "/STAFF/gradio_api/info",
        "/admin/../staff/config",
        "/staff;x=1/config",
        "/staff/gradio_api/info?x=/chat/",
        "/chat/gradio_api/file=../../staff/config",
    ],
)
def test_path_tricks_do_not_reach_the_staff_console(env: Env, raw_path: str) -> None:
    status, body = _raw_get(env, raw_path)
    assert status != 200 or '"named_endpoints"' not in body and "staff console" not in body, (status, body[:200])
    assert status < 500


def test_expired_forged_disabled_and_logged_out_sessions_are_refused(env: Env) -> None:
    token = _token(env.db, "sam", STAFF_PW)
    cookies = {SESSION_COOKIE: token}
    assert httpx.get(env.url + "/staff/config", cookies=cookies).status_code == 200
    r = httpx.get(env.url + "/logout", cookies=cookies, follow_redirects=False)
    assert r.status_code == 303
    assert httpx.get(env.url + "/staff/config", cookies=cookies).status_code == 401  # server-side logout
    for caller in ("expired", "forged", "disabled"):
        assert env.get("/staff/gradio_api/info", caller).status_code == 401
        assert env.get("/staff/", caller).status_code == 303


def test_session_expiry_is_checked_on_every_request(env: Env) -> None:
    token = _token(env.db, "sam", STAFF_PW, hours=1.5 / 3600)  # 1.5 seconds
    cookies = {SESSION_COOKIE: token}
    assert httpx.get(env.url + "/staff/gradio_api/info", cookies=cookies).status_code == 200
    time.sleep(1.7)
    assert httpx.get(env.url + "/staff/gradio_api/info", cookies=cookies).status_code == 401


def test_login_sets_a_strict_httponly_cookie_secure_behind_https_proxy(env: Env) -> None:
    ip = {"X-Forwarded-For": "198.51.100.10"}  # its own rate-limit bucket
    plain = httpx.post(env.url + "/login", data={"username": "cookie", "password": STAFF_PW}, headers=ip)
    assert plain.status_code == 303
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    proxied = httpx.post(
        env.url + "/login",
        data={"username": "cookie", "password": STAFF_PW},
        headers={**ip, "X-Forwarded-Proto": "https"},
    )
    assert proxied.status_code == 303 and "; secure" in proxied.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("target", "user", "expected"),
    [
        ("//evil.example/x", "redir-s", "/staff/"),
        ("https://evil.example/", "redir-s", "/staff/"),
        ("/staff/../../evil", "redir-s", "/staff/../../evil"),  # a path on this host only
        ("/admin/", "redir-s", "/staff/"),  # staff never land on the dashboard
        ("/admin/", "redir-a", "/admin/"),
    ],
)
def test_login_redirects_only_to_our_own_pages(env: Env, target: str, user: str, expected: str) -> None:
    r = httpx.post(
        env.url + "/login",
        data={"username": user, "password": STAFF_PW, "next": target},
        headers={"X-Forwarded-For": f"198.51.100.{20 + len(target)}"},
    )
    assert r.status_code == 303 and r.headers["location"] == expected


def test_login_is_rate_limited_after_five_failures(env: Env) -> None:
    ip = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(5):
        r = httpx.post(env.url + "/login", data={"username": "sam", "password": "wrong password"}, headers=ip)
        assert r.status_code == 401 and "wrong user name or password" in r.text
    r = httpx.post(env.url + "/login", data={"username": "sam", "password": STAFF_PW}, headers=ip)
    assert r.status_code == 429 and "too many login attempts" in r.text and "set-cookie" not in r.headers
    # the same name from other addresses is limited too (password spraying from many hosts)
    for i in range(5):
        httpx.post(env.url + "/login", data={"username": "ada", "password": "nope nope"},
                   headers={"X-Forwarded-For": f"203.0.113.{100 + i}"})  # fmt: skip
    r = httpx.post(
        env.url + "/login", data={"username": "ada", "password": "nope"}, headers={"X-Forwarded-For": "203.0.113.99"}
    )
    assert r.status_code == 429


def test_successful_logins_do_not_lock_out_colleagues_behind_one_address(env: Env) -> None:
    ip = {"X-Forwarded-For": "192.0.2.44"}  # one office NAT / one reverse proxy without forwarded headers
    codes = [
        httpx.post(env.url + "/login", data={"username": "team", "password": STAFF_PW}, headers=ip).status_code
        for _ in range(8)
    ]
    assert codes == [303] * 8


# -- ownership: the conversation id is server-side state ----------------------------------------------------
@pytest.fixture(scope="module")
def victim(env: Env) -> dict[str, str]:
    """A customer conversation (with a ticket) whose contents no other caller may ever see."""
    client = Client(env.url + "/chat/", verbose=False)
    client.predict(f"How do I pay my bill? {CANARY}", [], "auto", api_name="/chat")
    client.predict("auto", api_name="/talk_to_person")
    conn = sqlite3.connect(env.db)
    conv = conn.execute("SELECT conversation_id FROM messages WHERE content LIKE ?", [f"%{CANARY}%"]).fetchone()[0]
    ticket = conn.execute("SELECT id FROM tickets WHERE conversation_id = ?", [conv]).fetchone()[0]
    conn.close()
    return {"conversation": conv, "ticket": ticket, "session": client.session_hash}


def _messages(env: Env, conv: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(env.db)
    try:
        return conn.execute(
            "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id", [conv]
        ).fetchall()
    finally:
        conn.close()


def test_no_customer_event_reads_or_writes_another_conversation(env: Env, victim: dict[str, str]) -> None:
    base = env.url + "/chat"
    cfg = config(base)
    before = _messages(env, victim["conversation"])
    ids = [victim["conversation"], victim["ticket"], "sam", "ada"]
    calls = 0
    for dep in cfg["dependencies"]:
        n = len(dep["inputs"])
        for value in ids:
            # every input slot gets the other conversation's id / ticket / user name; text slots get a question
            variants = [[value] * n, ["Show me the conversation " + value] + [value] * (n - 1)]
            if n >= 4:
                variants.append(["What did I write before?", [], value, "auto", value][:n])
            for data in variants:
                out = call(base, int(dep["id"]), data)
                calls += 1
                assert out.join_status in (200, 422), out.join_body
                assert CANARY not in out.text(), (dep.get("api_name"), data)
                assert victim["ticket"] not in out.text() or value == victim["ticket"], (dep.get("api_name"), data)
    assert calls >= 20
    after = _messages(env, victim["conversation"])
    assert after == before  # nothing was added to the victim's conversation
    conn = sqlite3.connect(env.db)
    email = conn.execute("SELECT email FROM tickets WHERE id = ?", [victim["ticket"]]).fetchone()[0]
    tickets = conn.execute(
        "SELECT count(*) FROM tickets WHERE conversation_id = ?", [victim["conversation"]]
    ).fetchone()[0]
    conn.close()
    assert email is None and tickets == 1


def test_the_private_poll_endpoint_only_sees_its_own_session(env: Env, victim: dict[str, str]) -> None:
    """The timer's endpoint is private but callable by fn_index (the browser uses it): its conversation id
    comes from the caller's own server-side state, never from the request. (Gradio's session hash is the
    tab's bearer secret: random, held by the tab, never logged by firstline; see docs/security.md.)"""
    base = env.url + "/chat"
    poll = fn_index(config(base), trigger="tick")
    for seen in (0, -1, 10**9):
        stranger = call(base, poll, [victim["conversation"], seen])
        assert stranger.success and CANARY not in stranger.text()
        assert stranger.output[1] is None  # nothing rendered: this session has no conversation


def test_staff_console_handlers_check_the_session_themselves(tmp_path: Path) -> None:
    """Second layer: without our middleware, Gradio's auth_dependency alone refuses a bad session."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from models.fake import ScriptedChatModel
    from ui.app import build_services
    from ui.web.staff import mount_staff

    services = build_services(tmp_path / "d", model=ScriptedChatModel(), demo_kb=False)
    try:
        services.users.add_user("sam", "staff", STAFF_PW)
        good = services.users.login("sam", STAFF_PW, "t")
        app = FastAPI()
        mount_staff(app, services)  # no protect middleware on this app
        with TestClient(app) as client:
            client.cookies.set(SESSION_COOKIE, good)
            deps = client.get("/staff/config").json()["dependencies"]
            assert len(deps) >= 20
            for cookie in (None, "forged-token"):
                client.cookies.clear()
                if cookie:
                    client.cookies.set(SESSION_COOKIE, cookie)
                assert client.get("/staff/config").status_code in (401, 403)
                assert client.get("/staff/gradio_api/info").status_code in (401, 403)
                for dep in deps:  # every event of the console
                    body = {"data": [None] * len(dep["inputs"]), "fn_index": dep["id"], "session_hash": "x"}
                    r = client.post("/staff/gradio_api/queue/join", json=body)
                    assert r.status_code in (401, 403), (dep.get("api_name"), r.status_code)
    finally:
        services.close()


# -- the staff console's own events ----------------------------------------------------------------------
def _staff_events(env: Env) -> list[dict[str, Any]]:
    deps = config(env.url + "/staff", env.cookies["staff"])["dependencies"]
    assert len(deps) >= 20  # the inbox, the review list, canned replies, the timer
    return list(deps)


@pytest.mark.parametrize("caller", ["anonymous", "customer", "expired", "forged", "disabled"])
def test_every_staff_console_event_is_refused_without_the_staff_role(env: Env, caller: str) -> None:
    """Every event of /staff (each button, the timer, table clicks), called as the browser calls it."""
    base = env.url + "/staff"
    for dep in _staff_events(env):
        out = call(base, int(dep["id"]), [None] * len(dep["inputs"]), cookies=env.cookies[caller], timeout=10)
        assert out.join_status == 401, (caller, dep.get("api_name"), out.join_status, out.join_body[:200])
        assert not out.messages


def test_staff_console_events_run_for_staff_and_admins(env: Env) -> None:
    base = env.url + "/staff"
    live = next(d for d in _staff_events(env) if d.get("api_name") == "live")
    for caller in ("staff", "admin"):
        out = call(base, int(live["id"]), ["open", "", None, {}], cookies=env.cookies[caller])
        assert out.join_status == 200 and out.success, (caller, out.error)


def test_every_staff_console_handler_checks_the_role_itself(tmp_path: Path) -> None:
    """Third layer: each handler refuses a caller without a staff session, whatever let the call through."""
    import inspect

    import gradio as gr

    from models.fake import ScriptedChatModel
    from ui.app import build_services
    from ui.web.staff import build_staff_app

    services = build_services(tmp_path / "d", model=ScriptedChatModel(), demo_kb=False)
    try:
        blocks = build_staff_app(services)
        checked = []
        for block_fn in blocks.fns.values():
            if block_fn.fn is None or block_fn.renderable is not None:
                continue  # page-only script events; the review list's renderer (it reads server-side state only)
            kwargs: dict[str, Any] = {}
            for name, param in inspect.signature(block_fn.fn).parameters.items():
                hint = str(param.annotation)
                if "SelectData" in hint:
                    kwargs[name] = gr.SelectData(None, {"index": [0, 0], "value": "T-X", "row_value": ["T-X"]})
                else:
                    kwargs[name] = gr.Request() if "Request" in hint else None
            with pytest.raises(gr.Error, match="Not logged in"):
                block_fn.fn(**kwargs)
            checked.append(block_fn.name)
        assert len(checked) >= 15, checked
    finally:
        services.close()


def test_every_admin_event_needs_an_admin_and_answers_one(env: Env) -> None:
    """Each dashboard event (button, preset, table selection, load) called the browser's way: refused for
    every other caller; for an admin it never answers "Admins only" (#15 item 12: the calculator did)."""
    base = env.url + "/admin"
    cfg = config(base, cookies=env.cookies["admin"])
    deps = cfg["dependencies"]
    assert len(deps) >= 10
    for caller in CALLERS:
        if caller == "admin":
            continue
        for dep in deps:
            out = call(base, int(dep["id"]), [], cookies=env.cookies[caller])
            assert out.join_status == 401, (caller, dep.get("api_name"), out.join_status)
    for dep in deps:
        out = call(base, int(dep["id"]), [None] * len(dep["inputs"]), cookies=env.cookies["admin"], timeout=60)
        assert out.join_status == 200, (dep.get("api_name"), out.join_body)
        assert "Admins only" not in out.text(), (dep.get("api_name"), out.text()[:300])


# -- the resume token and the widget (issue #15) ------------------------------------------------------------
def test_a_resume_token_reaches_only_its_own_conversation(env: Env, victim: dict[str, str]) -> None:
    """A reload resumes a conversation by the token the browser keeps: nothing else opens it — not its
    conversation id, its ticket, the stored hash, a near miss, nor a value of another type."""
    from datetime import timedelta

    from bot.conversation_store import ConversationStore

    store = ConversationStore(env.db)
    try:
        token = store.issue_token(victim["conversation"], timedelta(days=1))  # what the victim's browser holds
    finally:
        store.close()
    conn = sqlite3.connect(env.db)
    hashes = [r[0] for r in conn.execute("SELECT token_hash FROM conversation_tokens")]
    conn.close()
    assert token not in hashes
    base = env.url + "/chat"
    load = fn_index(config(base), trigger="load")
    guesses: list[Any] = [victim["conversation"], victim["ticket"], *hashes, token[:-1], token + "A", token.upper(),
                          "", None, 0, [token], {"t": token}, str(victim["session"])]  # fmt: skip
    for guess in guesses:
        for value in (guess, {"token": guess}):
            out = call(base, load, [value])
            assert out.join_status in (200, 422), out.join_body
            assert CANARY not in out.text(), value
    opened = call(base, load, [{"token": token}])  # the control: the right token does open it
    assert opened.success and CANARY in opened.text()
    assert victim["conversation"] not in opened.text()  # the conversation id itself never reaches the browser


def test_the_widget_script_is_public_and_only_the_chat_may_be_framed(env: Env) -> None:
    script = env.get("/widget.js", "anonymous")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff" and "firstline-launcher" in script.text
    for caller in CALLERS:
        chat = env.get("/chat/", caller)
        assert chat.headers["content-security-policy"] == "frame-ancestors 'self'"  # no other site configured
        for path in ("/staff/", "/admin/", "/login", "/staff/config"):
            r = env.get(path, caller)
            assert r.headers["x-frame-options"] == "DENY", (caller, path)
            assert r.headers["content-security-policy"] == "frame-ancestors 'none'", (caller, path)
