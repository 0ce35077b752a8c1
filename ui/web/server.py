"""The web server: FastAPI with the Gradio apps mounted under their own paths.

The customer chat is mounted at /chat (mounting a Gradio app at "/" breaks other mounts, gradio#8428);
"/" redirects there. The staff console (/staff) and the admin dashboard (/admin) need a login. FastAPI
route dependencies do not protect a mounted Gradio app (gradio#7005), so a middleware refuses every
request under those prefixes without a session of the right role (pages redirect to /login, everything
else gets 401); the apps add their own checks (see ui/web/access.py).
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable

import gradio as gr
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ui.app import Services
from ui.auth import SESSION_COOKIE, AuthError
from ui.settings import MailSettings
from ui.web.access import (
    ADMIN_PATH,
    CHAT_PATH,
    PROTECTED,
    STAFF_PATH,
    allowed,
    register_apis,
    request_user,
)
from ui.web.admin import mount_admin
from ui.web.customer import CSS as CHAT_CSS
from ui.web.customer import build_customer_app
from ui.web.limits import ChatLimits
from ui.web.mail import Mailer, ReplyMailer
from ui.web.ops import add_ops_routes
from ui.web.staff import mount_staff
from ui.web.widget import frame_ancestors, mount_widget

# Gradio routes the customer chat does not need and an anonymous caller must not use: file uploads (the
# chat has no file input; unbounded uploads fill the disk), fetching remote URLs through the server
# (`file=https://...` makes the server an open proxy), and the run-history / deep-link features (they keep
# copies of conversations in the browser or on disk).
CHAT_BLOCKED = ("/gradio_api/upload", "/gradio_api/run-history", "/gradio_api/runs", "/gradio_api/deep_link",
                "/gradio_api/proxy=", "/gradio_api/file=http", "/gradio_api/file/http")  # fmt: skip
# Gradio's REST routes take an api_name; an unknown name is a 500 inside Gradio, so only the mounted apps'
# public endpoint names get through (the browser itself uses queue/join, which these do not touch).
_REST = re.compile(r"^/gradio_api/(?:call/v2|call|run|api)/([^/]+)")
NO_FRAMES = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>firstline login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}}label{{display:block;margin:.6rem 0}}
input{{width:100%;padding:.4rem}}button{{padding:.5rem 1rem}}.err{{color:#b00020}}</style></head><body>
<h1>Staff / Admin login</h1>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>User <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button></form></body></html>"""


def safe_next(target: str | None) -> str:
    """Only redirect to our own protected pages after login (no open redirect)."""
    for prefix in PROTECTED:
        if target and (target == prefix or target.startswith(prefix + "/")) and "//" not in target:
            return target
    return STAFF_PATH + "/"


def build_app(services: Services, extra_mounts: list[Callable[[FastAPI, Services], None]] | None = None) -> FastAPI:
    """The FastAPI application serving every firstline page."""
    app = FastAPI(title="firstline", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.public_apis = {}  # mount path -> public api names (see access.register_apis)
    settings = services.server_settings
    chat_frames = {"Content-Security-Policy": frame_ancestors(settings.embedding_origins)}  # the widget's sites

    @app.middleware("http")
    async def protect(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > settings.max_request_bytes:
            return JSONResponse({"error": "request too large"}, status_code=413)
        if path.startswith(CHAT_PATH + "/") and path[len(CHAT_PATH) :].startswith(CHAT_BLOCKED):
            return JSONResponse({"error": "not available"}, status_code=403)
        mount, _, rest = path[1:].partition("/")
        rest_call = _REST.match("/" + rest)
        if rest_call and rest_call.group(1) not in app.state.public_apis.get("/" + mount, set()):
            if "/" + mount in PROTECTED and not allowed(services, request, PROTECTED["/" + mount]):
                return JSONResponse({"error": "login required"}, status_code=401)
            return JSONResponse({"error": "no such API endpoint"}, status_code=404)
        staff_area = path == "/login" or path == "/logout"
        for prefix, role in PROTECTED.items():
            if path == prefix or path.startswith(prefix + "/"):
                staff_area = True
                user = request_user(services, request)
                if user is None or not user.can(role):
                    if request.method == "GET" and path in (prefix, prefix + "/"):
                        return RedirectResponse(f"/login?next={prefix}/", status_code=303, headers=NO_FRAMES)
                    return JSONResponse({"error": "login required"}, status_code=401, headers=NO_FRAMES)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if staff_area:  # staff pages are never framed by another site (clickjacking)
            response.headers.update(NO_FRAMES)
        elif path == CHAT_PATH or path.startswith(CHAT_PATH + "/"):  # the chat: by itself and the widget's sites
            response.headers.update(chat_frames)
        return response

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(url=f"{CHAT_PATH}/")

    @app.get("/healthz", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/login", include_in_schema=False)
    def login_form(next: str | None = None) -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE.format(error="", next=html.escape(safe_next(next))))

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("")) -> Response:
        client = request.client.host if request.client else "unknown"
        try:
            token = services.users.login(username, password, client)
        except AuthError as exc:
            page = LOGIN_PAGE.format(
                error=f'<p class="err" id="error">{html.escape(str(exc))}</p>',
                next=html.escape(safe_next(next)),
            )
            status = 429 if "too many" in str(exc) else 401
            return HTMLResponse(page, status_code=status)
        user = services.users.session_user(token)
        target = safe_next(next)
        if user and user.role == "staff" and target.startswith(ADMIN_PATH):
            target = STAFF_PATH + "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=int(services.users.session_ttl.total_seconds()),
            path="/",
        )
        return response

    @app.get("/logout", include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:
        services.users.logout(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    if settings.scripted_seconds_per_token and hasattr(services.model, "seconds_per_token"):
        services.model.seconds_per_token = settings.scripted_seconds_per_token  # the fake model, for load tests
    if settings.scripted_answer and hasattr(services.model, "default_answer"):
        services.model.default_answer = settings.scripted_answer  # the fake model, for browser tests
    limits = ChatLimits.create(
        settings.chat_rate_limit, settings.chat_rate_limit_per_client, settings.chat_rate_window_s
    )
    customer = build_customer_app(services.bot, title=f"{services.bot_settings.company_name} Support", limits=limits)
    customer.queue(default_concurrency_limit=settings.chat_concurrency, max_size=settings.queue_size)
    gr.mount_gradio_app(app, customer, path=CHAT_PATH, footer_links=[], ssr_mode=False, run_history=False,
                        show_error=False, css=CHAT_CSS)  # fmt: skip
    register_apis(app, customer, CHAT_PATH)
    add_ops_routes(app, services, queues={"chat": customer})  # /health, /ready, /metrics (ui/web/ops.py)
    mount_widget(app)
    for mount in [mount_staff, mount_admin, *(extra_mounts or [])]:
        mount(app, services)
    return app


def serve(services: Services) -> None:
    """Run the server until interrupted."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    s = services.server_settings
    app = build_app(services)
    services.bot.answers.warm()  # word lists and the embedder load now, not in the first customer's answer
    mailer = Mailer(MailSettings())
    replies = ReplyMailer(services.tickets, services.store, mailer, company=services.bot_settings.company_name,
                          token_days=services.bot_settings.conversation_token_days)  # fmt: skip
    if mailer.enabled:  # staff replies reach customers who left an address
        replies.start()
    print(f"firstline: serving on http://{s.host}:{s.port}/  (customer chat at {CHAT_PATH}/)", flush=True)
    # behind a reverse proxy on a trusted address, X-Forwarded-Proto/-For give the real scheme (secure
    # cookies) and client address (rate limits); see docs/security.md
    # with JSON logs, uvicorn's own loggers go through the root handler (configured in ui/cli/main.py)
    log_config = None if s.log_format == "json" else LOGGING_CONFIG
    try:
        uvicorn.run(app, host=s.host, port=s.port, log_level="warning", timeout_graceful_shutdown=5,
                    proxy_headers=True, forwarded_allow_ips=s.forwarded_allow_ips, log_config=log_config)  # fmt: skip
    finally:
        replies.stop()
