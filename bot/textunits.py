"""Cutting answers and passages into the units that answer-level checks work on (pure, no I/O).

Two readers of the same text need the same cuts: the quality checks (bot/quality.py) score an answer
sentence by sentence, the grounding guard (bot/guard.py) releases a streamed answer sentence by sentence,
and the extractive answerer (bot/extractive.py) picks whole units out of knowledge-base passages. A *unit*
is a prose sentence, a whole list (numbered steps stay together, with the sentence that introduces them),
or one table row with the table's header: cutting a step list or a table row apart would change what it
says.

Sentence boundaries are `.`, `!`, `?` (or `…`) followed by white space and something that can start a
sentence, and line breaks. Not boundaries: common German and English abbreviations ("z. B.", "e.g.",
"Nr.") and a period after a one- or two-digit number ("am 15. März"); a URL never holds a period followed
by a space. This is deliberately simple: it errs towards longer units, never towards cutting a fact in two.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["sentence", "list", "row"]

ABBREVIATIONS = frozenset(
    (
        "z.b", "zb", "d.h", "u.a", "u.u", "bzw", "ca", "nr", "vgl", "ggf", "usw", "inkl", "zzgl", "evtl", "bspw",
        "sog", "max", "min", "mind", "tel", "abs", "art", "ff", "str", "etc", "e.g", "i.e", "eg", "ie", "vs",
        "approx", "incl", "no", "dr", "mr", "mrs", "ms", "st",
    )
)  # fmt: skip
_LIST_ITEM = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")
_NUMBERED = re.compile(r"^\s*\d{1,2}[.)]\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
# a candidate end of sentence: terminal punctuation (closing quotes/brackets may follow) and white space
_END = re.compile(r"[.!?…]+[\"'”“»)\]]*\s+")
_START = re.compile(r"[A-ZÄÖÜ0-9\"'„“»(\[*]")


@dataclass(frozen=True)
class Unit:
    """A piece of a passage that can be quoted on its own: a sentence, a whole list or a table row."""

    text: str
    kind: UnitKind
    section: str = ""
    position: int = 0  # order within the passage


def _is_boundary(text: str, end: int, dot: int) -> bool:
    """Whether the terminal punctuation starting at text[dot], then white space up to `end`, ends a sentence."""
    if text[dot] != "." or text[dot + 1 : dot + 2] in ("!", "?", "…"):
        return _START.match(text, end) is not None or end >= len(text)
    before = text[:dot]
    word = re.search(r"(\S+)$", before)
    token = word.group(1).lower().strip("(\"'„“") if word else ""
    if token.rstrip(".") in ABBREVIATIONS or token in ABBREVIATIONS:
        return False
    if re.fullmatch(r"[a-zäöü]", token):  # a single letter: an initial or "z. B." spelt with spaces
        return False
    if token.isdigit() and len(token) <= 2:  # "am 15. März": an ordinal more often than an end
        return False
    return _START.match(text, end) is not None or end >= len(text)


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: cut at sentence ends and at line breaks; list markers stay with their item."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        start = 0
        for m in _END.finditer(line):
            if _is_boundary(line, m.end(), m.start()):
                piece = line[start : m.end()].strip()
                if piece:
                    out.append(piece)
                start = m.end()
        rest = line[start:].strip()
        if rest:
            out.append(rest)
    return out


def complete_sentences(buffer: str, final: bool = False) -> tuple[list[str], str]:
    """Split a growing (streamed) text into sentences known to be complete and the unfinished rest.

    A sentence is complete once the text after it has begun (a boundary needs the next character) or a
    line break follows it; with `final` the rest is complete too.
    """
    if final:
        return split_sentences(buffer), ""
    cut = 0
    last_newline = buffer.rfind("\n")
    if last_newline >= 0:
        cut = last_newline + 1
    # a boundary inside the last line counts only when the next sentence has started after it
    line = buffer[cut:]
    for m in _END.finditer(line):
        if m.end() < len(line) and _is_boundary(line, m.end(), m.start()):
            cut = buffer.rfind("\n") + 1 + m.end()
    return (split_sentences(buffer[:cut]), buffer[cut:]) if cut else ([], buffer)


def strip_lead_in(passage: str) -> str:
    """A passage without the overlap carried over from the previous chunk ("… tail of last chunk")."""
    if passage.startswith("…"):
        parts = passage.split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""
    return passage


def _table_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def passage_units(passage: str, section: str = "") -> list[Unit]:
    """The quotable units of a knowledge-base passage, in order.

    A list (consecutive list lines, with indented sub-items) is one unit, preceded by the sentence that
    introduces it when that sentence ends with a colon; a table row becomes "header: cell; ..." text;
    headings are not units but name the section of what follows.
    """
    units: list[Unit] = []
    lines = strip_lead_in(passage).splitlines()
    i = 0
    current = section

    def add(text: str, kind: UnitKind) -> None:
        text = text.strip()
        if text:
            units.append(Unit(text, kind, current, len(units)))

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if _HEADING.match(line):
            current = _HEADING.sub("", line).strip()
            i += 1
            continue
        if line.lstrip().startswith("|"):
            header: list[str] = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                if _TABLE_RULE.match(lines[i]):
                    i += 1
                    continue
                cells = _table_cells(lines[i])
                if not header:
                    header = cells
                else:
                    pairs = zip(header, cells, strict=False)
                    add("; ".join(f"{h}: {c}" if h else c for h, c in pairs if c), "row")
                i += 1
            continue
        if _LIST_ITEM.match(line):
            block = [line.rstrip()]
            i += 1
            while i < len(lines) and lines[i].strip() and (_LIST_ITEM.match(lines[i]) or lines[i][:1].isspace()):
                block.append(lines[i].rstrip())
                i += 1
            last = units[-1] if units else None
            intro = units.pop() if last and last.kind == "sentence" and last.text.rstrip("*_ ").endswith(":") else None
            text = "\n".join(block)
            add(f"{intro.text}\n{text}" if intro else text, "list")
            continue
        for sentence in split_sentences(line):
            add(sentence, "sentence")
        i += 1
    return units


def is_list(text: str) -> bool:
    """Whether a unit's text holds list lines (steps or bullets)."""
    return any(_LIST_ITEM.match(ln) for ln in text.splitlines())


def is_numbered(text: str) -> bool:
    """Whether a unit's text holds numbered steps."""
    return any(_NUMBERED.match(ln) for ln in text.splitlines())


def iter_lines(text: str) -> Iterator[str]:
    """Non-empty lines, stripped."""
    return (ln.strip() for ln in text.splitlines() if ln.strip())
