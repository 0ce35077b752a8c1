"""A thin LangChain `BaseChatModel` over our ChatModel.

It lets prompts and chains built with `langchain-core` run on the one model this process has loaded
(never a `ChatLlamaCpp` per request, which would load the model each time). Each streamed chunk carries
text; the last one carries our measured `Usage` in `response_metadata["usage"]` and LangChain's
`usage_metadata` token counts. Pass `usage_sink=callable` to also receive the Usage when the stream
is closed early (a cancelled chat still has its compute time recorded); a served engine's failed tries
that were retried on another replica reach the sink first, one Usage each, the request's own last.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from models.types import ChatMessage, ChatModel, Role, Usage

_ROLES: dict[str, Role] = {"system": "system", "human": "user", "ai": "assistant", "user": "user"}


def to_chat_messages(messages: list[BaseMessage]) -> list[ChatMessage]:
    """Convert LangChain messages to ours (system / user / assistant)."""
    out = []
    for m in messages:
        role = _ROLES.get(m.type, "user")
        content = m.content if isinstance(m.content, str) else str(m.content)
        out.append(ChatMessage(role=role, content=content))
    return out


class FirstlineChatModel(BaseChatModel):
    """LangChain chat model backed by the process's loaded ChatModel."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat_model: Any
    max_tokens: int | None = None
    temperature: float | None = None

    @property
    def _llm_type(self) -> str:
        return "firstline-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self._model.model_id, "device": self._model.device}

    @property
    def _model(self) -> ChatModel:
        return self.chat_model  # type: ignore[no-any-return]

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        gen = self._model.stream(
            to_chat_messages(messages),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            grammar=kwargs.get("grammar"),
        )
        sink = kwargs.get("usage_sink")
        try:
            for piece in gen:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            gen.close()
            # also reached when the consumer stops early: the caller still learns what was spent; tries that a
            # served engine retried on another replica come first, the request's own usage last
            if sink is not None:
                for attempt in getattr(gen, "failed_attempts", ()):
                    sink(attempt)
                if gen.usage is not None:
                    sink(gen.usage)
        usage = gen.usage
        if usage is not None:
            yield ChatGenerationChunk(message=_usage_chunk(usage))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text: list[str] = []
        usage: Usage | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            text.append(str(chunk.message.content))
            usage = chunk.message.response_metadata.get("usage", usage)
        message = AIMessage(content="".join(text), response_metadata={"usage": usage})
        return ChatResult(generations=[ChatGeneration(message=message)])


def _usage_chunk(usage: Usage) -> AIMessageChunk:
    return AIMessageChunk(
        content="",
        response_metadata={"usage": usage, "model_name": usage.model_id},
        usage_metadata={
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    )
