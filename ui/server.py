"""The web server: FastAPI with the Gradio apps mounted under their own paths.

The customer chat is mounted at /chat (mounting a Gradio app at "/" breaks other mounts, gradio#8428);
"/" redirects there. Staff and admin apps are mounted beside it with their own authentication.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from ui.customer import build_customer_app
from ui.services import Services

CHAT_PATH = "/chat"


def build_app(services: Services) -> FastAPI:
    """The FastAPI application serving every firstline page."""
    app = FastAPI(title="firstline", docs_url=None, redoc_url=None, openapi_url=None)
    settings = services.server_settings

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(url=f"{CHAT_PATH}/")

    @app.get("/healthz", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model": services.model.model_id, "device": services.model.device})

    customer = build_customer_app(services.bot, title=f"{services.bot_settings.company_name} Support")
    customer.queue(default_concurrency_limit=settings.chat_concurrency, max_size=settings.queue_size)
    gr.mount_gradio_app(app, customer, path=CHAT_PATH, footer_links=[], ssr_mode=False)
    return app


def serve(services: Services) -> None:
    """Run the server until interrupted."""
    import uvicorn

    s = services.server_settings
    app = build_app(services)
    print(f"firstline: serving on http://{s.host}:{s.port}/  (customer chat at {CHAT_PATH}/)", flush=True)
    uvicorn.run(app, host=s.host, port=s.port, log_level="warning", timeout_graceful_shutdown=5)
