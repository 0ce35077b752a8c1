"""Text analysis for the index: words, stop words, stems, and query terms matched to the index vocabulary.

`analyze` is the one place where text becomes index terms, for documents and queries alike: lower-case
words, stop words dropped, Snowball-stemmed per language (German or English), then folded to ASCII
(ä -> a, ß -> ss), so "Kündigung", "kuendigen" and "Kündigungen" meet, as do "payments" and "paying".
`expand_query` then matches query terms to the index vocabulary (`Lexicon`): typos by edit distance,
German compounds by their parts, words by the longer terms that contain them. Nothing here is specific
to one company's documents: only general function words are stop words.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_FOLD = str.maketrans({"ä": "a", "ö": "o", "ü": "u", "ß": "ss", "é": "e", "è": "e", "á": "a", "à": "a"})


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: dict[str, frozenset[str]] = {  # function words only: they carry no topic in any help centre
    "en": _wordset(
        "a an and are as at be been being but by can could did do does doing done for from get gets got had "
        "has have having he her here hers him his how i im ive if in into is it its just me my myself no nor "
        "not of off on once only or other our ours out over own same she should so some such than that the "
        "their them then there these they this those through to too under until up very was we were what when "
        "where which while who whom why will with would you your yours yourself hey hi hello please thanks "
        "thank guys ok okay oh also any anything again still actually really already now want need like dont "
        "cant one thing stuff"
    ),
    "de": _wordset(
        "aber alle allem allen aller alles als also am an auch auf aus bei bin bis bist da damit dann das "
        "dass dem den der des dich die dir doch du durch ein eine einem einen einer eines er es etwas euch "
        "euer für hab habe haben hat hatte ich ihm ihn ihnen ihr ihre im in ist ja jetzt kann man mein meine "
        "meinem meinen meiner mich mir mit muss nach nicht noch nun nur ob oder ohne schon sehr sein seine "
        "sich sie sind so soll über um und uns unser unsere von vom vor war was weil welche wenn wer wie wir "
        "wird wo zu zum zur hallo hi bitte danke guten tag moin mal eigentlich einfach gerade denn ganz gibt "
        "geht"
    ),
}


@lru_cache(maxsize=2)
def _stemmer(lang: str) -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("german" if lang == "de" else "english")


@lru_cache(maxsize=200_000)
def stem(word: str, lang: str) -> str:
    """One lower-case word's index term: Snowball stem, folded to ASCII letters."""
    return str(_stemmer(lang).stemWord(word)).translate(_FOLD)


def words(text: str) -> list[str]:
    """Lower-case words of a text (letters and digits; apostrophes dropped: "don't" -> "dont")."""
    return [w.replace("’", "").replace("'", "") for w in _WORD.findall(text.lower())]


def analyze(text: str, lang: str, *, keep_stopwords: bool = False) -> list[str]:
    """Index terms of a text: words minus stop words, stemmed for `lang` ('en' or 'de'), ASCII-folded."""
    stop = STOPWORDS.get(lang, frozenset())
    return [stem(w, lang) for w in words(text) if keep_stopwords or w not in stop]


@dataclass(frozen=True)
class QueryTerm:
    """One informative query word: its IDF weight and the index terms that count as a match (with a factor)."""

    term: str
    weight: float
    alternatives: tuple[tuple[str, float], ...]


def idf(df: int, n: int) -> float:
    """BM25's inverse document frequency (always positive)."""
    import math

    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class Lexicon:
    """The index vocabulary: term -> number of chunks holding it, sorted for prefix and suffix lookups."""

    df: Mapping[str, int]
    n: int  # number of chunks
    keys: tuple[str, ...] = ()  # sorted terms
    rkeys: tuple[str, ...] = ()  # sorted reversed terms

    @classmethod
    def build(cls, df: Mapping[str, int], n: int) -> Lexicon:
        """A lexicon with its sorted lookup lists."""
        return cls(df, max(n, 1), tuple(sorted(df)), tuple(sorted(t[::-1] for t in df)))

    def starting_with(self, prefix: str) -> list[str]:
        """Terms that start with `prefix`."""
        lo = bisect.bisect_left(self.keys, prefix)
        return list(self.keys[lo : bisect.bisect_left(self.keys, prefix + "\uffff", lo)])

    def ending_with(self, suffix: str) -> list[str]:
        """Terms that end with `suffix`."""
        rev = suffix[::-1]
        lo = bisect.bisect_left(self.rkeys, rev)
        return [t[::-1] for t in self.rkeys[lo : bisect.bisect_left(self.rkeys, rev + "\uffff", lo)]]


def expand_query(terms: Sequence[str], lexicon: Lexicon) -> list[QueryTerm]:
    """Match query terms to index terms: exact, typo-corrected (edit distance), compound parts, prefixes.

    Typos are corrected only for words the index does not know (1 edit for 4-7 letters, 2 from 8);
    a word that is part of a longer index term ("frist" in "kundigungsfrist") or that consists of
    index terms ("kundigungsfrist" -> "kundig", "frist") matches those at a reduced factor.
    """
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    vocab, n = lexicon.df, lexicon.n
    out: list[QueryTerm] = []
    for term in dict.fromkeys(terms):
        alts: dict[str, float] = {}
        if term in vocab:
            alts[term] = 1.0
        elif len(term) >= 4 and lexicon.keys:
            limit = 1 if len(term) < 8 else 2
            found = process.extract(term, lexicon.keys, scorer=Levenshtein.distance, score_cutoff=limit, limit=3)
            for cand, dist, _ in found:
                alts.setdefault(cand, 0.8 if dist == 1 else 0.6)
        if len(term) >= 4:  # the word inside longer index terms (compounds, derived forms)
            longer = {v for v in lexicon.starting_with(term) + lexicon.ending_with(term) if v != term}
            for v in sorted(longer, key=lambda v: (-vocab[v], v))[:6]:
                alts.setdefault(v, 0.7)
        if len(term) >= 8:  # a compound made of index terms: its longest known head and tail
            parts = [term[:i] for i in range(len(term) - 3, 3, -1) if term[:i] in vocab][:2]
            parts += [term[i:] for i in range(3, len(term) - 3) if term[i:] in vocab][:2]
            for v in parts:
                alts.setdefault(v, 0.6)
        # weight: the word's own rarity (or its best stand-in's); a word the index lacks counts as rare
        primary = next(iter(alts), "")
        out.append(QueryTerm(term, idf(vocab.get(primary, 1), n), tuple(alts.items())))
    return out
