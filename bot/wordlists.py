"""Word lists of German and English: is a word a word, and which language is a text in.

The lists come from `pyspellchecker` (a maintained, pure-Python package on PyPI, ~7 MB, no further
dependencies), which ships word-frequency dictionaries for German (~340,000 forms, inflections included)
and English (~160,000) inside the wheel: nothing is downloaded at run time. (`wordfreq` was the other
candidate; its wheel is 57 MB and pulls in five more packages.)

*Unknown words* are what the well-formedness check counts: words that are in neither the answer
language's list nor the knowledge base's own vocabulary (product names, jargon) nor the customer's
question. German compounds are accepted when they split into known words ("Glasfasermodem" = "Glasfaser" +
"Modem"), hyphenated words part by part, and short all-capital abbreviations ("DECT", "IBAN") as such.
What the check catches: invented or mangled words ("Nachrichta", "Auszuglängler"), words of a third
language, character soup. What it misses: well-formed nonsense made of real words, wrong grammar
("ein neue Art"), and a real word in the wrong place.

*Language identification* is a unigram model over the same lists: each word votes with the log of its
relative frequency in each language (a word one list lacks gets a small floor probability there; a word
neither knows is no evidence), so function words ("the", "und", "sie") decide short texts and umlauts are
not needed. It tells German from English only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from bot.types import Lang

log = logging.getLogger(__name__)

LANGS: tuple[Lang, ...] = ("de", "en")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_HAS_DIGIT = re.compile(r"\d")
_URL = re.compile(
    r"(?i)\b(?:https?://|www\.)\S+|\S+@\S+\.\w+|\b[\w-]+(?:\.[\w-]+)+\.(?:de|com|net|org|example|local|io)\b"
)
FLOOR = 0.5  # pseudo-count of a word a list does not hold, for language identification
LINKING = ("", "s", "es", "n", "en", "e", "er")  # German compound linking elements (Fugenelemente)
MIN_PART = 3


@dataclass(frozen=True)
class WordList:
    """One language's word forms with their frequencies (lower case)."""

    lang: Lang
    counts: dict[str, int]
    total: int

    def __contains__(self, word: str) -> bool:
        return word in self.counts

    def log_prob(self, word: str) -> float:
        """Log relative frequency of a word; unknown words get a floor."""
        return math.log((self.counts.get(word, 0) or FLOOR) / self.total)


@lru_cache(maxsize=4)
def word_list(lang: Lang) -> WordList:
    """The bundled word list of a language (loaded once per process, ~0.5 s for German)."""
    from spellchecker import SpellChecker

    freq = SpellChecker(language=lang, distance=1).word_frequency
    counts = dict(freq.dictionary)
    return WordList(lang, counts, max(int(freq.total_words), 1))


def text_words(text: str) -> list[str]:
    """The words of a text as written (letters only, hyphen and apostrophe joins kept; no URLs, numbers)."""
    return _WORD.findall(_URL.sub(" ", text))


def _parts(word: str) -> list[str]:
    """A written word's checkable parts: hyphenated words part by part, a possessive 's dropped."""
    word = re.sub(r"['’]s$", "", word)
    return [p for p in re.split(r"['’-]", word) if p]


def is_compound(word: str, words: WordList, depth: int = 0) -> bool:
    """Whether a lower-case German word splits into known words (with linking elements), at most 3 parts."""
    if depth > 2:
        return False
    for cut in range(MIN_PART, len(word) - MIN_PART + 1):
        head, tail = word[:cut], word[cut:]
        for link in LINKING:
            if link and not head.endswith(link):
                continue
            stem = head[: len(head) - len(link)] if link else head
            if len(stem) < MIN_PART or stem not in words:
                continue
            if tail in words or (len(tail) >= 2 * MIN_PART and is_compound(tail, words, depth + 1)):
                return True
    return False


def unknown_words(text: str, lang: Lang, known: Iterable[str] = ()) -> tuple[list[str], int]:
    """(unknown words, words checked) of a text in `lang`; `known`: more accepted lower-case words.

    Words shorter than 3 letters are not checked; an all-capital word of up to 6 letters counts as an
    abbreviation.
    """
    words = word_list(lang)
    extra = known if isinstance(known, set | frozenset) else set(known)
    unknown: list[str] = []
    checked = 0
    for written in text_words(text):
        for part in _parts(written):
            if len(part) < 3:
                continue
            checked += 1
            if part.isupper() and len(part) <= 6:
                continue
            low = part.lower()
            if low in words or low in extra:
                continue
            if lang == "de" and len(low) >= 2 * MIN_PART and is_compound(low, words):
                continue
            unknown.append(part)
    return unknown, checked


def identify_language(text: str) -> tuple[Lang | None, float]:
    """('de' | 'en', margin) of a text by its words; (None, 0.0) when it has no words.

    `margin` is the log-likelihood difference per word between the two languages (about 1 or more is
    clear; near 0 the text could be either, e.g. a product name alone).
    """
    lists = [word_list(lang) for lang in LANGS]
    # a word no list knows (a product name, a typo) is evidence for neither language
    words = [w for written in text_words(text) for p in _parts(written) if any((w := p.lower()) in wl for wl in lists)]
    if not words:
        return None, 0.0
    scores = {lang: sum(word_list(lang).log_prob(w) for w in words) for lang in LANGS}
    best = max(LANGS, key=lambda lang: scores[lang])
    other = next(lang for lang in LANGS if lang != best)
    return best, (scores[best] - scores[other]) / len(words)


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """Lower-case word parts of some texts (a knowledge base's own vocabulary)."""
    return frozenset(p.lower() for t in texts for w in text_words(t) for p in _parts(w))
