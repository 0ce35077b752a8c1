"""Frozen value types of the conversation layer (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteKind = Literal["faq", "model", "human"]
Lang = Literal["en", "de"]


@dataclass(frozen=True)
class Source:
    """A knowledge-base passage the answer is built from (or an FAQ entry)."""

    title: str
    path: str
    score: float
    snippet: str = ""
    url: str = ""
    section: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "title": self.title,
            "path": self.path,
            "score": round(self.score, 4),
            "snippet": self.snippet,
            "url": self.url,
            "section": self.section,
        }


@dataclass(frozen=True)
class Route:
    """How a message is handled and why."""

    kind: RouteKind
    reason: str = ""


@dataclass(frozen=True)
class Message:
    """One stored message of a conversation."""

    role: Literal["user", "assistant", "staff", "system"]
    content: str
    created_at: str = ""
    request_id: str | None = None
    route: str | None = None
    sources: tuple[Source, ...] = ()  # for a model answer: the passages its question was sent with


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class Reply:
    """The bot's complete answer to one customer message."""

    text: str
    route: RouteKind
    conversation_id: str
    request_id: str | None
    lang: Lang
    sources: tuple[Source, ...] = field(default_factory=tuple)
    ticket_id: str | None = None
    compute_s: float = 0.0
    reason: str = ""
