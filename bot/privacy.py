"""Customer text hygiene: normalise hostile input and mask payment data before it is stored or sent.

- Unicode is normalised (NFC); control, zero-width and other invisible format characters (direction
  marks and overrides, tag characters, the byte-order mark), noncharacters and lone surrogates are
  removed; runs of whitespace are collapsed (newlines kept).
- Payment card numbers (13-19 digits passing the Luhn check) and IBANs (valid mod-97 checksum) are masked
  to their last four characters, so they never reach the database, the model or staff screens.
"""

from __future__ import annotations

import re
import unicodedata

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CARD = re.compile(r"(?<![\d.-])(?:\d[ .-]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Clean a customer message: NFC, no control/zero-width characters or lone surrogates."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    text = unicodedata.normalize("NFC", text)
    text = text.translate({ord(c): None for c in _ZERO_WIDTH})
    # every other invisible format character (direction marks, tag characters, soft hyphen, ...) and
    # noncharacters: they can hide text from staff and smuggle instructions to the model
    text = "".join(c for c in text if not _invisible(c))
    text = _CTRL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _invisible(ch: str) -> bool:
    cp = ord(ch)
    return unicodedata.category(ch) == "Cf" or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN."""
    s = re.sub(r"\s", "", candidate).upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def mask_payment_data(text: str) -> str:
    """Replace card numbers and IBANs with a masked form keeping the last four characters."""

    def card(m: re.Match[str]) -> str:
        raw = m.group(0)
        # the match may have swallowed a neighbouring number (CVV, expiry, amount): the longest run of
        # whole digit groups that is a valid card number is masked
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", raw)]
        best: tuple[int, int, str] | None = None
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                digits = re.sub(r"\D", "", raw[groups[i][0] : groups[j][1]])
                if 13 <= len(digits) <= 19 and luhn_ok(digits) and (best is None or len(digits) > len(best[2])):
                    best = (groups[i][0], groups[j][1], digits)
        if best is None:
            return raw
        start, end, digits = best
        return f"{raw[:start]}[card ****{digits[-4:]}]{raw[end:]}"

    def iban(m: re.Match[str]) -> str:
        raw = m.group(0)
        cut = len(raw)
        while cut > 0:  # the match may run on into the following words: drop them until the checksum fits
            if iban_ok(raw[:cut]):
                compact = re.sub(r"\s", "", raw[:cut]).upper()
                return f"[IBAN {compact[:2]}**…{compact[-4:]}]{raw[cut:]}"
            cut = raw[:cut].rstrip().rfind(" ")
        return raw

    return _CARD.sub(card, _IBAN.sub(iban, text))
