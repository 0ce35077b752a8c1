"""Output hygiene for model answers: no remote images, no links that are not in the knowledge base, no HTML.

The model can invent URLs or echo Markdown from the customer's message. Before an answer is stored or
shown, images and raw HTML tags are removed and links are kept only when their target is one of the
knowledge base sources of this answer (otherwise the link text stays, the target goes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)[^)]*\)")
_BARE = re.compile(r"(?i)\b((?:https?://|www\.)[^\s<>()\]]+)")
_HTML_IMG = re.compile(r"(?is)<\s*img\b[^>]*>")
_HTML_A = re.compile(r"(?is)<\s*a\b[^>]*>(.*?)<\s*/\s*a\s*>")
# elements whose content is not text for the reader, then every remaining tag: an answer is Markdown, and
# raw HTML (iframe, video, style, svg, form, meta, base ...) could load remote content or restyle the page
_HTML_BLOCK = re.compile(
    r"(?is)<\s*(script|style|iframe|object|svg|math|template|noscript|textarea|select)\b.*?<\s*/\s*\1\s*>"
)
_HTML_TAG = re.compile(r"(?s)</?[a-zA-Z!?][^>]*>")  # as in HTML, a tag name follows '<' directly


def sanitize_answer(text: str, allowed_urls: Iterable[str] = ()) -> str:
    """Strip images, unknown links and raw HTML from model output."""
    allowed = {u.rstrip("/").lower() for u in allowed_urls if u}
    text = _HTML_IMG.sub("", text)
    text = _HTML_A.sub(r"\1", text)
    text = _HTML_TAG.sub("", _HTML_BLOCK.sub("", text))
    text = _IMAGE.sub(lambda m: m.group(1), text)

    def link(m: re.Match[str]) -> str:
        label, url = m.group(1), m.group(2)
        return m.group(0) if url.rstrip("/").lower() in allowed else label

    text = _LINK.sub(link, text)

    def bare(m: re.Match[str]) -> str:
        url = m.group(1).rstrip(".,;:!?")
        tail = m.group(1)[len(url) :]
        return (url if url.rstrip("/").lower() in allowed else "[link removed]") + tail

    # bare URLs outside Markdown links (those were handled above)
    parts = re.split(r"(\[[^\]]*\]\([^)]*\))", text)
    return "".join(p if p.startswith("[") and "](" in p else _BARE.sub(bare, p) for p in parts)
