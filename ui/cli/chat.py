"""Chat commands: `firstline serve` (the web app), `firstline ask` (one customer turn) and `firstline tickets`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ui.cli.common import HelpGroup, data_dir_option, database_path, emit, fail, friendly_errors, json_option


def preflight_model(data_dir: Path | None) -> Any:
    """Check the model before the web stack is imported: a bad file, or a model that crashes or hangs on its
    first generation, fails in seconds with one line naming the cause and the fix. The active fine-tuned
    version (`firstline models activate`) is loaded with it.

    The model worker process loads the model and runs a tiny generation before it reports ready (within
    FIRSTLINE_WORKER_START_TIMEOUT_S). Returns the started model, or None when the model is loaded on demand
    (the check has run and its worker is stopped) or the backend is scripted.
    """
    from bot.settings import BotSettings
    from models import loader
    from models.settings import ModelSettings
    from ui.app import active_serving, load_model
    from ui.settings import ServerSettings

    if ServerSettings().model_backend != "llama":
        return None
    settings = ModelSettings()
    bot_settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    serving = active_serving(bot_settings.database, settings, data_dir=bot_settings.data_dir)
    if settings.engine != "inprocess":  # a served engine (with the active adapter): started or probed here
        return load_model(settings, "llama", serving=serving)
    path, sha = loader.resolve_model(settings.model_path, settings.model_sha256)
    loader.check_model_file(path, sha)
    if settings.uses_worker("llama"):
        model = load_model(settings, "llama", serving=serving)
        if settings.idle_unload_s > 0:
            close = getattr(model, "close", None)
            if close is not None:
                close()
            return None
        return model
    if settings.idle_unload_s > 0:
        return None
    return load_model(settings, "llama", serving=serving)


@click.command()
@click.option("--host", default=None, help="Interface to bind. Default 127.0.0.1.")
@click.option("--port", type=int, default=None, help="TCP port. Default 7860.")
@data_dir_option
@friendly_errors
def serve(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the web app: customer chat, staff console, admin dashboard."""
    model = preflight_model(data_dir)  # a bad or crashing model is reported in seconds, before heavy imports
    from ui.app import build_services
    from ui.web.server import serve as run_server

    services = build_services(data_dir, model=model)
    if model is not None:
        services.owns_model = True  # started here: stopping the server stops its worker
    if host:
        services.server_settings.host = host
    if port:
        services.server_settings.port = port
    try:
        run_server(services)
    finally:
        services.close()


@click.command()
@click.argument("text")
@click.option("--conversation", "conversation_id", default=None, help="Continue this conversation id.")
@click.option("--lang", type=click.Choice(["de", "en"]), default=None, help="Answer language (default: detect).")
@data_dir_option
@json_option
@friendly_errors
def ask(text: str, conversation_id: str | None, lang: str | None, data_dir: Path | None, as_json: bool) -> None:
    """One customer turn through the full path (routing, knowledge base, model, escalation, ledger)."""
    from bot.conversation_store import check_conversation_id, new_conversation_id
    from ui.app import build_services

    conversation_id = check_conversation_id(conversation_id) if conversation_id else new_conversation_id()
    services = build_services(data_dir)
    try:
        reply = services.bot.handle_message(conversation_id, text, lang)  # type: ignore[arg-type]
    finally:
        services.close()
    payload = {
        "answer": reply.text,
        "route": reply.route,
        "sources": [{"title": s.title, "path": s.path, "score": s.score, "url": s.url} for s in reply.sources],
        "ticket_id": reply.ticket_id,
        "request_id": reply.request_id,
        "conversation_id": reply.conversation_id,
        "compute_s": reply.compute_s,
        "lang": reply.lang,
        "reason": reply.reason,
    }
    if as_json:
        emit(payload)
        return
    click.echo(reply.text)
    for s in reply.sources:
        click.echo(f"  [source] {s.title} ({s.path}, score {s.score:.3f})")
    click.echo(
        f"-- route={reply.route} conversation={reply.conversation_id} request={reply.request_id} "
        f"compute={reply.compute_s:.3f}s",
        err=True,
    )


@click.group(cls=HelpGroup)
def tickets() -> None:
    """The escalation queue."""


@tickets.command("list")
@click.option("--status", type=click.Choice(["open", "claimed", "resolved"]), default=None, help="Filter by status.")
@data_dir_option
@json_option
@friendly_errors
def tickets_list(status: str | None, data_dir: Path | None, as_json: bool) -> None:
    """List tickets, oldest first."""
    from bot.tickets import TicketStore
    from usage.db import exists

    path = database_path(data_dir)
    rows = []
    if exists(path):  # a read: no database is created for it
        store = TicketStore(path)
        try:
            rows = store.list(status=status)
        finally:
            store.close()
            store.conversations.close()
    payload = [
        {
            "id": t.id,
            "status": t.status,
            "reason": t.reason,
            "conversation_id": t.conversation_id,
            "created_at": t.created_at,
            "claimed_by": t.claimed_by,
            "resolved_at": t.resolved_at,
        }
        for t in rows
    ]
    if as_json:
        emit({"tickets": payload})
        return
    if not payload:
        click.echo("no tickets")
    for t in payload:
        created = str(t["created_at"])[:19]
        click.echo(f"{t['id']}  {t['status']:<8} {created}  {t['reason']:<32} {t['conversation_id']}")


@tickets.command("show")
@click.argument("ticket_id")
@data_dir_option
@json_option
@friendly_errors
def tickets_show(ticket_id: str, data_dir: Path | None, as_json: bool) -> None:
    """One ticket: its state, summary, the conversation's messages and the ticket's events."""
    from bot.tickets import TicketError, TicketStore
    from usage.db import exists

    path = database_path(data_dir)
    if not exists(path):
        fail(f"no ticket {ticket_id!r} (no database at {path})", 2)
    store = TicketStore(path)
    try:
        try:
            ticket = store.get(ticket_id.strip())
        except TicketError:
            fail(f"no ticket {ticket_id!r}", 2)
        events = store.events(ticket.id)
        messages = store.conversations.messages(ticket.conversation_id)
    finally:
        store.close()
        store.conversations.close()
    payload: dict[str, Any] = {
        "ticket": {
            "id": ticket.id,
            "status": ticket.status,
            "reason": ticket.reason,
            "summary": ticket.summary,
            "lang": ticket.lang,
            "conversation_id": ticket.conversation_id,
            "created_at": ticket.created_at,
            "claimed_by": ticket.claimed_by,
            "claimed_at": ticket.claimed_at,
            "resolved_at": ticket.resolved_at,
            "email": ticket.email,
            "sources": list(ticket.sources),
        },
        "messages": [{"role": m.role, "content": m.content, "created_at": m.created_at} for m in messages],
        "events": [{k: e[k] for k in ("kind", "actor", "body", "created_at")} for e in events],
    }
    if as_json:
        emit(payload)
        return
    t = payload["ticket"]
    owner = f" by {t['claimed_by']}" if t["claimed_by"] else ""
    click.echo(f"{t['id']}  {t['status']}{owner}  reason {t['reason']}  opened {str(t['created_at'])[:19]}")
    click.echo(
        f"conversation {t['conversation_id']}  language {t['lang']}" + (f"  e-mail {t['email']}" if t["email"] else "")
    )
    if t["summary"]:
        click.echo(f"summary: {t['summary']}")
    click.echo("\nmessages:")
    for m in payload["messages"]:
        click.echo(f"  {str(m['created_at'])[:19]}  {m['role']:<9} {m['content']}")
    click.echo("\nevents:")
    for e in payload["events"]:
        body = f"  {e['body']}" if e["body"] else ""
        click.echo(f"  {str(e['created_at'])[:19]}  {e['kind']:<10} {e['actor']}{body}")
