"""Who may use what: the one role check and the protected mount, shared by the server and the apps.

The customer chat is public at /chat; the staff console (/staff) needs a staff or admin login and the
admin dashboard (/admin) an admin login. FastAPI route dependencies do not protect a mounted Gradio app
(gradio#7005), so protection is threefold: the server's middleware refuses every request under a
protected prefix without a session of the right role, Gradio's own `auth_dependency` (set by
`mount_protected`) checks the same session on its routes, and every handler re-reads the user with
`require_role`, from the session cookie on the server, never from browser state.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI, Request

from ui.app import Services
from ui.auth import SESSION_COOKIE, User

CHAT_PATH = "/chat"
STAFF_PATH = "/staff"
ADMIN_PATH = "/admin"
PROTECTED = {STAFF_PATH: "staff", ADMIN_PATH: "admin"}  # mount path -> role it needs
REFUSED = {  # what a handler tells a caller without the role
    "staff": "Not logged in (or your session expired). Please log in again.",
    "admin": "Admins only: log in again with an admin account.",
}


def request_user(services: Services, request: Request) -> User | None:
    """The logged-in user of a request (from the session cookie, checked on the server)."""
    return services.users.session_user(request.cookies.get(SESSION_COOKIE))


def allowed(services: Services, request: Request, role: str) -> bool:
    """Whether the request's user has `role` (admins have every role)."""
    user = request_user(services, request)
    return user is not None and user.can(role)


def require_role(services: Services, request: gr.Request | None, role: str) -> User:
    """The logged-in user with `role`, for a Gradio handler; raises gr.Error otherwise."""
    raw = getattr(request, "request", None)
    user = request_user(services, raw) if raw is not None else None
    if user is None or not user.can(role):
        raise gr.Error(REFUSED[role])
    return user


def mount_protected(
    app: FastAPI,
    services: Services,
    blocks: gr.Blocks,
    path: str,
    role: str,
    css: str | None = None,
    head: str | None = None,
) -> None:
    """Mount a Gradio app that only users with `role` (or admins) may use, on every route."""

    def dependency(request: Request) -> str | None:
        user = request_user(services, request)
        return user.name if user is not None and user.can(role) else None

    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth_dependency=dependency,
        footer_links=[],
        ssr_mode=False,
        run_history=False,
        css=css,
        head=head,
    )
    register_apis(app, blocks, path)


def register_apis(app: FastAPI, blocks: gr.Blocks, path: str) -> None:
    """Record the mounted app's public API names: the server's middleware lets only those through."""
    names = {fn.api_name for fn in blocks.fns.values() if fn.api_visibility == "public" and fn.api_name}
    if hasattr(app.state, "public_apis"):
        app.state.public_apis[path] = {str(n) for n in names}
