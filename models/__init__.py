"""The local language model: load once, generate with streaming, measure compute time.

`models` imports nothing from the other firstline packages.
"""

from models.types import ChatMessage, ChatModel, Generation, Usage

__all__ = ["ChatMessage", "ChatModel", "Generation", "Usage"]
