"""Cheap German/English detection for short customer messages (word lists and umlauts)."""

from __future__ import annotations

import re

from bot.types import Lang

_WORD = re.compile(r"[a-zäöüß]+")
_DE = frozenset(
    ["ich", "du", "sie", "wir", "ihr", "mein", "meine", "meinen", "meinem", "mich", "mir", "und", "oder", "nicht", "kein", "keine", "keinen", "ist", "sind", "war", "wurde", "werden", "wird", "habe", "hat", "haben", "kann", "können", "könnte", "muss", "möchte", "will", "wie", "was", "warum", "wieso", "weshalb", "wann", "wo", "welche", "welcher", "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "zu", "zum", "zur", "mit", "auf", "für", "bei", "von", "vom", "im", "ins", "aus", "nach", "über", "unter", "bitte", "danke", "hallo", "guten", "tag", "geht", "funktioniert", "rechnung", "passwort", "vertrag", "kündigen", "kündigung", "internet", "router", "geld", "zurück", "mitarbeiter", "mensch", "noch", "schon", "auch", "nur", "sehr", "doch", "hab", "gibt", "es", "man", "sich", "auch", "wieder"]
)
_EN = frozenset(
    ["i", "you", "we", "they", "my", "me", "mine", "our", "your", "and", "or", "not", "no", "is", "are", "was", "were", "be", "been", "will", "would", "can", "could", "should", "must", "want", "how", "what", "why", "when", "where", "which", "who", "the", "a", "an", "to", "of", "with", "on", "for", "at", "by", "from", "in", "into", "about", "please", "thanks", "thank", "hello", "hi", "does", "do", "did", "have", "has", "had", "get", "got", "it", "its", "this", "that", "there", "bill", "password", "contract", "cancel", "internet", "router", "money", "back", "person", "human", "agent", "still", "already", "also", "only", "very"]
)


def detect_language(text: str, fallback: Lang = "en") -> Lang:
    """'de' or 'en' for a message; `fallback` when the text gives no signal."""
    low = text.lower()
    words = _WORD.findall(low)
    de = sum(1 for w in words if w in _DE) + 2 * len(re.findall(r"[äöüß]", low))
    en = sum(1 for w in words if w in _EN)
    if de > en:
        return "de"
    if en > de:
        return "en"
    return fallback
