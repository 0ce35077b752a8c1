"""Which engine serves the model (FIRSTLINE_ENGINE): the one place that builds a ChatModel from settings.

* `inprocess` (default): llama-cpp-python in a supervised model worker process (models.remote), or inside
  this process with FIRSTLINE_MODEL_WORKER=off (models.llama); one request at a time.
* `llama-server`: a local llama-server started and supervised by firstline (models.llama_server), with
  FIRSTLINE_ENGINE_SLOTS parallel slots and continuous batching.
* `openai`: the OpenAI-compatible servers in FIRSTLINE_ENGINE_URLS (llama-server or vLLM replicas,
  models.served), behind one replica pool.

The scripted test model (FIRSTLINE_MODEL_BACKEND=scripted) ignores the engine setting.
"""

from __future__ import annotations

from typing import Any

from models.errors import ModelError
from models.settings import ModelSettings
from models.types import ChatModel


def load_engine(
    settings: ModelSettings,
    backend: str = "llama",
    *,
    scripted_seconds_per_token: float = 0.0,
    load_options: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> ChatModel:
    """The process's model under these settings (started and ready, or raising a ModelError with the cause)."""
    if backend != "scripted" and settings.engine == "llama-server":
        from models.llama_server import LlamaServerEngine

        return LlamaServerEngine(settings, load_options=load_options, model_id=model_id)
    if backend != "scripted" and settings.engine == "openai":
        from models.served import ServedChatModel

        if load_options:  # e.g. an active fine-tuned version (`firstline models activate`)
            raise ModelError(
                "engine=openai cannot load adapters itself: configure them on the servers (llama-server --lora; "
                "vLLM --enable-lora --lora-modules NAME=PATH) and set FIRSTLINE_ENGINE_MODEL=NAME, then serve the "
                "base model here (`firstline models activate base --force`)"
            )
        return ServedChatModel(settings.url_list(), settings, engine="openai", model_id=model_id)
    if settings.uses_worker(backend):
        from models.remote import WorkerChatModel

        return WorkerChatModel(
            settings,
            backend=backend,
            scripted_seconds_per_token=scripted_seconds_per_token,
            load_options=load_options,
            model_id=model_id,
        )
    if backend == "scripted":
        from models.fake import ScriptedChatModel

        return ScriptedChatModel(context_size=settings.n_ctx, seconds_per_token=scripted_seconds_per_token,
                                 model_name=model_id or "scripted-fake")  # fmt: skip
    from models.llama import LlamaChatModel

    return LlamaChatModel(settings, load_options=load_options, model_id=model_id)
