"""Customer spelling, read the way the escalation rules need it: typos and chat shorthand undone.

Customers type "assistnace", "complant", "reimbvurse", "withpayment", "ur", "cant". Rules written as
regular expressions over correct words miss all of these. `normalize` rewrites a message before the
rules read it:

- chat shorthand becomes words ("u" -> "you", "ur" -> "your", "cant" -> "cannot", "wanna" -> "want to");
- a word that is in neither the English nor the German word list (pyspellchecker's frequency lists,
  inflected forms included) and lies within one edit (two for words of eight letters and more; a swap of
  two neighbouring letters is one edit) of exactly one nearest *keyword* (the words the rules look for)
  becomes that keyword; real words are never changed ("relate" stays "relate", not "rebate");
- an unknown word that splits into a known word and a keyword is split ("withpayment" -> "with payment").

Everything else (punctuation, digits, case of untouched words) is kept, so patterns that look at
punctuation still work. The keyword list is the caller's: only words that matter to a rule are corrected
towards, which keeps the correction cheap and predictable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.wordlists import WordList

SHORTHAND = {
    "u": "you", "ya": "you", "yu": "you", "ur": "your", "yr": "your", "pls": "please", "plz": "please",
    "wanna": "want to", "gotta": "got to", "gonna": "going to", "cant": "cannot", "can't": "cannot",
    "can’t": "cannot", "dont": "do not", "don't": "do not", "don’t": "do not", "doesnt": "does not",
    "didnt": "did not", "isnt": "is not", "wont": "will not", "im": "i am", "ive": "i have", "thx": "thanks",
    "ppl": "people", "sb": "somebody", "sth": "something", "asap": "as soon as possible",
}  # fmt: skip
_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
MIN_FUZZY = 4  # shorter words are too easily another word


@lru_cache(maxsize=1)
def _word_lists() -> tuple[WordList, ...]:
    from bot.wordlists import word_list  # loaded once per process, shared with the answer checks

    return tuple(word_list(lang) for lang in ("en", "de"))


def is_word(word: str) -> bool:
    """Whether a lower-case word is an English or German word form."""
    return any(word in words for words in _word_lists())


class Speller:
    """Corrects unknown words towards a fixed set of keywords (see the module docstring)."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self.keywords = frozenset(k.lower() for k in keywords)
        self._sorted = sorted(self.keywords)

    @lru_cache(maxsize=8192)  # noqa: B019 - one Speller per rule set, kept for the process
    def correct(self, word: str) -> str:
        """The keyword an unknown word stands for, its split into two words, or the word itself."""
        low = word.lower()
        if low in SHORTHAND:
            return SHORTHAND[low]
        if low in self.keywords or len(low) < MIN_FUZZY or is_word(low):
            return word
        from rapidfuzz.distance import OSA

        limit = 1 if len(low) < 8 else 2
        best: list[tuple[int, str]] = []
        for keyword in self._sorted:
            if abs(len(keyword) - len(low)) > limit or len(keyword) < MIN_FUZZY:
                continue
            dist = OSA.distance(low, keyword, score_cutoff=limit)
            if dist <= limit:
                best.append((dist, keyword))
        if best:
            best.sort()
            if len(best) == 1 or best[0][0] < best[1][0]:  # one nearest keyword, else leave it alone
                return best[0][1]
            return word
        return self._split(low) or word

    def _split(self, low: str) -> str | None:
        """A glued pair "known word + keyword" or "keyword + known word" ("withpayment")."""
        for cut in range(1, len(low)):
            head, tail = low[:cut], low[cut:]
            head_ok = head in self.keywords or head in SHORTHAND or is_word(head)
            tail_ok = tail in self.keywords or tail in SHORTHAND or is_word(tail)
            if head_ok and tail_ok and (head in self.keywords or tail in self.keywords):
                return f"{SHORTHAND.get(head, head)} {SHORTHAND.get(tail, tail)}"
        return None

    def normalize(self, text: str) -> str:
        """The text with shorthand expanded and unknown words corrected towards the keywords."""
        text = re.sub(r"(?i)\bw/(?=\s)", "with", text)  # "speak w/ a person"
        return _TOKEN.sub(lambda m: self.correct(m.group(0)), text)
