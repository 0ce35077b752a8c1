"""Why a conversation goes to a human: cheap signals first, the model only when they are unsure.

Signals, in order of cost:
1. Rules (regular expressions, German and English) for an explicit request for a person, complaints and
   frustration, and a configurable list of sensitive topics (refunds and payment disputes, payment
   problems, legal threats, cancellations with special circumstances, account-specific data the bot
   cannot see, security incidents). A strong match escalates at once. The rules read the message after
   `normalize`: chat shorthand expanded and misspelt rule words corrected (bot/spelling.py), so
   "I want assistnace contacting a human agent" and "ich will mit nem Mitarbieter reden" match. The
   patterns describe the request (a verb of contact and a person; a complaint, claim or bad experience;
   a refund or restitution; a problem with a payment), not sentences of any data set: they were
   developed on one half of third-party customer requests and checked on the other (see
   bot/demo_kb/questions/README.md). Profanity alone never escalates.
2. Conversation signals: the customer says the answer did not help, or repeats a question the bot has
   already answered (fuzzy match), or the knowledge base had nothing relevant after one clarifying
   question (decided by the router, which sees retrieval).
3. Weak signals only (e.g. "again", "still not working") are "unsure": then the model is asked, with a
   grammar that only admits `answer` or `escalate`.
Every decision carries a machine-readable reason that is stored with the ticket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher

from bot.spelling import Speller
from bot.types import Message

# Reasons (stable identifiers: tickets, reports and tests use them)
CUSTOMER_REQUEST = "customer_request"
COMPLAINT = "complaint"
NOT_HELPED = "not_helped"
REPEATED_QUESTION = "repeated_question"
NO_KB_MATCH = "no_kb_match"
MODEL_FAILURE = "model_failure"
MODEL_DECISION = "model_decision"
BUDGET = "budget_exhausted"

_I = re.IGNORECASE


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), _I)


# Words the rules are built from. Customers' spelling is corrected towards them (bot/spelling.py) before
# any pattern reads a message, so one pattern covers "agent", "agnet" and "aegnt".
_PERSON = (
    r"(humans?|person|people|(?:customer\s+service\s+)?agents?|representatives?|reps?|operators?|someone|"
    r"somebody|staff|employees?|supervisors?|managers?|colleagues?|advis[eo]rs?|consultants?|assistants?|"
    r"individuals?|human\s+beings?)"
)
# not "call", "connect" or "transfer": "call someone abroad", "connect someone's laptop" are no requests
_TALK = (
    r"(talk|talking|speak|speaking|chat|chatting|contact|contacting|reach|reaching|get\s+in\s+touch|"
    r"getting\s+in\s+touch|get\s+hold|getting\s+hold|communicate|communicating|escalate|escalating)"
)
# words that may stand between the verb and the person: articles, adjectives, swearing
_SWEAR = r"(damn|fucking|fuckin|bloody|goddamn|goddamned|freaking|frigging|effing)"
_FILLER = (
    r"(to|with|a|an|the|some|any|one|of|from|at|real|live|actual|human|proper|your|you|customer|service|"
    rf"support|another|other|different|right|now|directly|please|just|{_SWEAR})"
)
_SUPPORT = r"(customer\s+)?(service|support|care|team|hotline|help\s*desk|call\s+cent(er|re))"

HUMAN_REQUEST = _rx(
    rf"\b{_TALK}(\s+\w+)?(\s+{_FILLER}){{0,3}}\s+{_PERSON}\b",  # one free word: a typo ("wth", "wirh")
    rf"\b(talk|talking|speak|speaking|chat|chatting)\s+(to|with)(\s+{_FILLER}){{0,3}}\s+{_SUPPORT}\b",
    r"\b(want|need|like|request|requesting|require|prefer|demand|ask\s+for|asking\s+for|give\s+me|get\s+me)\s+"
    r"(to\s+have\s+)?(a|an|some)?\s*(real|live|actual|proper)?\s*(human|person|agent|operator|representative|"
    r"human\s+being)\b",
    rf"\b(a|an|some|any)\s+(real\s+|actual\s+|live\s+)?{_PERSON}\s+(i|we)\s+(can|could|may)\s+"
    r"(talk|speak|chat|contact|reach|call|write)",
    r"\b(real|live|actual)\s+(person|human|agent)\b",
    r"^\W*((a|an|real|live|actual|human)\s+)*(agent|human|operator|representative|person|supervisor)\b\W*"
    r"(please|now)?\W*$",
    r"\b(put|transfer|connect|pass)\s+me\s+(through\s+|over\s+)?(to|with)\b",
    r"\bcall\s+me\s+back\b|\bcall\s*back\b",
    r"\b(bot|chatbot|robot|machine)\s+(is\s*n[o']?t|is\s+not|does\s*n[o']?t|does\s+not|can\s*n[o']?t|cannot)\s+"
    r"(help|understand)",
    r"\bmit\s+(einem|einer|jemandem|ihrem|eurem|dem|der|ihren|euren|nem|ner)\s+(\w+\s+)?"
    r"(mitarbeiter\w*|menschen|person|berater\w*|kundenberater\w*|sachbearbeiter\w*|ansprechpartner\w*|"
    r"kolleg\w*)",
    r"\bmit\s+(dem|einem|eurem|ihrem)\s+(kundenservice|kundendienst|support|service)\s+(\w+\s+)?"
    r"(sprechen|reden|chatten|verbinden)",
    r"\b(mitarbeiter\w*|menschen|mensch|echte\w*\s+person|kundenberater\w*|sachbearbeiter\w*|berater\w*|"
    r"jemanden|jemandem)\s+(\w+\s+){0,2}(sprechen|reden|verbinden|bitte|durchstellen|erreichen|kontaktieren|anrufen|"
    r"chatten|schreiben)",
    r"\b(will|möchte|moechte|brauche|hätte\s+gern|hätte\s+gerne|wünsche)\s+(\w+\s+){0,2}"
    r"(einen|eine)\s+(echten\s+|richtigen\s+)?(menschen|mitarbeiter\w*|berater\w*|person|ansprechpartner\w*)\b",
    r"\b(einen|einem|nen|nem)\s+(\w+\s+)?(menschen|mitarbeiter\w*|berater\w*|kundenberater\w*|sachbearbeiter\w*|"
    r"ansprechpartner\w*)\b",
    r"^\W*(mitarbeiter\w*|mensch|berater\w*|kundenberater\w*|support)\b\W*(bitte)?\W*$",
    r"\b(zurückrufen|rückruf|ruft\s+mich\s+an|ruf\s+mich\s+an)\b",
    r"\b(mit\s+dem|der)\s+(bot|chatbot|maschine)\s+(komme|kommt)\s+ich\s+nicht\s+weiter",
    r"\bverbinden\s+sie\s+mich\b|\bstellen\s+sie\s+mich\s+durch\b|\bverbinde\s+mich\b",
)

_BAD = r"(bad|terrible|awful|horrible|poor|lousy|crap|crappy|shit|shitty|appalling|dreadful|disappointing|worst)"
COMPLAINT_RX = _rx(
    r"\bcomplain\w*|\breclamation\w*|\bgrievance\w*",
    r"\b(file|filing|lodge|lodging|make|making|raise|raising|submit|submitting|register|registering|open|opening|"
    r"put\s+in|putting\s+in|start|starting|report|reporting)\s+(a\s+|an\s+|my\s+)?"
    r"(formal\s+|official\s+|customer\s+|consumer\s+|new\s+)?(claim|claims)\b",
    r"\bclaims?\s+against\b",
    r"\b(not\s+(happy|satisfied|pleased)|unhappy|dissatisfied|disappointed|displeased)\s+(with|about|by)\b",
    rf"\b(experience|service|support)\s+(with\s+(you|your|the|this)(\s+\w+)?\s+)?(has\s+been|have\s+been|was|is|been)"
    rf"\s+(\w+\s+)?{_BAD}\b",
    rf"\b{_BAD}\s+({_SWEAR}\s+)?(experience|customer\s+service|service|support)\b",
    r"\b(third|fourth|fifth|\d+(st|nd|rd|th))\s+time\b",
    r"\b(several|many|multiple|countless|so many)\s+times\s+(already|now|before)\b",
    r"\b(no\s*one|nobody|noone)\s+(has\s+)?(fixed|helped|cares|responded|answered|called)\b",
    r"\b(sick|tired)\s+of\s+(this|it|you|waiting)\b|\bfed\s+up\b",
    r"\b(unacceptable|ridiculous|outrageous|disgrace(ful)?|appalling|shocking\s+service|incompetent|"
    r"furious|livid|pissed|scam|rip[- ]?off)\b",
    r"\b(terrible|awful|horrible|worst|useless)\s+(service|company|support|provider|customer)\b",
    r"\b(stinksauer|wütend|verärgert|frechheit|unverschämt\w*|unzumutbar|inakzeptabel|skandal\w*|"
    r"katastroph\w*|abzocke|betrüger\w*|unfähig\w*)\b",
    r"\bzum\s+(dritten|vierten|fünften|x-ten|zigsten|wiederholten|\d+\.)\s+mal\b",
    r"\b(keiner|niemand)\s+(kümmert|hilft|meldet|reagiert|ruft)\b",
    r"\b(die\s+nase\s+(gestrichen\s+)?voll|es\s+reicht\s+(mir|jetzt))\b",
    r"\bbeschwer\w*|\breklamation\w*|\breklamier\w*",
    r"\b(sehr\s+|total\s+|echt\s+|äußerst\s+|absolut\s+)?unzufrieden\b",
    r"\b(schlechte|miese|schreckliche|furchtbare|katastrophale)\w*\s+(erfahrung|service|kundenservice)\w*",
    r"!{3,}",
)

# Weak frustration signals: not enough alone; the model decides.
WEAK_RX = _rx(
    r"\b(again\s+and\s+again|(not\s+working|broken|down|dropp\w+|failed)\s+again|"
    r"still\s+(not|doesn't|does\s+not|isn't|won't)|already\s+(called|written|wrote|asked)|"
    r"waiting\s+(since|for\s+(days|weeks)))\b",
    r"\b(schon\s+wieder|immer\s+noch\s+nicht|schon\s+(mehrmals|oft|zweimal)|warte\s+seit)\b",
)

NOT_HELPED_RX = _rx(
    r"\b(that|this|it|your\s+answer)\s+(did\s*n[o']?t|does\s*n[o']?t|did\s+not|does\s+not)\s+(help|work|answer)",
    r"\bnot\s+(helpful|what\s+i\s+asked)\b|\bno\s+help\b|\bstill\s+(does\s*n[o']?t|not|is\s*n[o']?t)\s+work",
    r"\b(hat|hilft|half)\s+(mir\s+)?(nicht|nichts|überhaupt\s+nicht)\s*(geholfen|weiter)?\b",
    r"\b(funktioniert|geht|klappt)\s+(immer\s+noch|trotzdem|weiterhin)\s+nicht\b",
    r"\bbringt\s+(mir\s+)?nichts\b|\bdas\s+war\s+nicht\s+meine\s+frage\b",
)

_CANCEL = (
    r"(cancel\w*|terminat\w*|end\s+(the|my|his|her|their|our)\s+(contract|account|line)|"
    r"get\s+out\s+of\s+(the|my|our)\s+contract|out\s+of\s+(my|the)\s+contract|quit|close\s+(the|my|his|her)\s+account|"
    r"kündig\w*|beenden|auflös\w*|vertragsauflösung|sonderkündigung|aus\s+dem\s+vertrag)"
)
_CIRCUMSTANCE = (
    r"(passed\s+away|died|death|deceased|funeral|bereave\w*|widow\w*|"
    r"emigrat\w*|abroad|overseas|another\s+country|for\s+good|permanently|leaving\s+the\s+country|"
    r"illness|\bill\b|sick|hospital|nursing\s+home|care\s+home|disab\w*|unemploy\w*|lost\s+my\s+job|"
    r"insolven\w*|bankrupt\w*|prison|military|"
    r"verstorben|gestorben|\btod\b|todesfall|beerdigung|ausland|auswander\w*|wander\w*\s+\w+\s+\w*\s*aus\b|"
    r"krankheit|krank\b|pflegeheim|altenheim|krankenhaus|arbeitslos\w*|insolvenz|gefängnis)"
)

# Life events that always need a person when a contract is involved, whatever words the customer uses
_LIFE_EVENT = (
    r"(passed\s+away|died|deceased|death|bereave\w*|nursing\s+home|care\s+home|emigrat\w*|"
    r"verstorben|gestorben|todesfall|pflegeheim|altenheim|auswander\w*)"
)
_CONTRACT = r"(contract|account|line|subscription|vertrag\w*|anschluss|konto|kundenkonto)"

SENSITIVE_TOPICS: dict[str, re.Pattern[str]] = {
    "refund_or_payment_dispute": _rx(
        r"\b(refund\w*|reimburs\w*|money\s+back|charge\s*back\w*|compensat\w*|rebat\w*|restitution\w*)\b",
        r"\b(return|returning|repay|repaying|give\s+back|giving\s+back)\s+(of\s+)?(my|the|our)\s+money\b",
        r"\b(charged|billed|debited|took\s+(the\s+)?money)\s+(me\s+)?(twice|two\s+times|double)\b",
        r"\bdouble[- ]charged\b|\bovercharg\w*\b|\bdispute\w*\b|\bwrongly\s+(charged|billed|debited)\b",
        r"\b(never|didn'?t|did\s+not)\s+(made|make|ordered|order|agreed|agree|authori[sz]ed|used|signed)\b",
        r"\b(erstattung|erstatten|rückerstattung|zurückerstatt\w*|rückzahlung|geld\s+zurück|zurückbuch\w*|"
        r"rückbuchung|zurückgebucht|entschädigung|widerspruch|widersprechen)\b",
        r"\bgeld\s+(\w+\s+){0,3}(zurück|wieder)\w*",
        r"\b(doppelt|zweimal|zu\s+viel|falsch|unberechtigt)\s+(abgebucht|berechnet|abgerechnet)\b",
        r"\bnie\s+(geführt|bestellt|gemacht|genutzt|beauftragt|unterschrieben)\b|\bnicht\s+bestellt\b",
    ),
    "payment_problem": _rx(
        r"\b(problems?|issues?|errors?|troubles?|difficult\w*|glitch\w*)\s+(with|in|on|when|while|during|regarding|"
        r"concerning|about|making|doing)\s+(\w+\s+){0,2}(payments?|paying|checkout|transactions?)\b",
        r"\b(payments?|transactions?|checkout|(credit|debit|bank)\s+card)\s+(\w+\s+){0,2}(problems?|issues?|errors?|"
        r"troubles?|failed|fails|failing|failure|declined|rejected|refused|did\s+not\s+(go\s+through|work)|"
        r"does\s+not\s+work|not\s+(going\s+through|working|possible))\b",
        r"\b(cannot|can\s*not|unable\s+to|could\s+not|not\s+able\s+to)\s+(make\s+(a\s+|the\s+|my\s+)?)?pay(ment)?\b",
        r"\b(problem\w*|fehler\w*|ärger|schwierigkeit\w*)\s+(mit|bei)\s+(der\s+|meiner\s+|einer\s+)?"
        r"(zahlung|bezahlung|überweisung|kartenzahlung|online-?zahlung)\w*",
        r"\b(zahlung|bezahlung|überweisung|kartenzahlung)\w*\s+(\w+\s+){0,2}(fehlgeschlagen|abgelehnt|"
        r"klappt\s+nicht|funktioniert\s+nicht|geht\s+nicht)",
        r"\bkann\s+(\w+\s+){0,4}nicht\s+(be)?zahlen\b",
    ),
    "legal_threat": _rx(
        r"\b(lawyer|attorney|solicitor|sue|suing|lawsuit|court|legal\s+(action|steps|proceedings)|"
        r"ombudsman|regulator|consumer\s+(protection|advice|rights)|bundesnetzagentur)\b",
        r"\b(anwalt|anwältin|rechtsanwalt\w*|klage|verklagen|gericht\w*|rechtliche\w*\s+schritte|"
        r"verbraucherzentrale|schlichtungsstelle|bundesnetzagentur)\b",
    ),
    "special_cancellation": re.compile(
        rf"\b{_CANCEL}.*{_CIRCUMSTANCE}|{_CIRCUMSTANCE}.*\b{_CANCEL}|"
        rf"\b{_LIFE_EVENT}.*\b{_CONTRACT}|\b{_CONTRACT}.*\b{_LIFE_EVENT}",
        _I | re.DOTALL,
    ),
    "account_specific_data": _rx(
        r"\b(my|our)\s+(current\s+|account\s+|outstanding\s+)?(balance|amount\s+due|arrears)\b",
        r"\b(has|did|have)\s+(my|our|the)\s+(payment|transfer|direct\s+debit|money)\s+.*"
        r"(arrived|been\s+received|received|gone\s+through|come\s+through|cleared|credited)",
        r"\b(why\s+is|why's)\s+(my|our)\s+(bill|invoice|statement)\b",
        r"\b(my|our)\s+(bill|invoice|statement)\s+(is\s+)?(\w+\s+){0,4}(higher|more|bigger|went\s+up|increased|wrong)\b",
        r"\bwhat('s|\s+is)\s+(my|our)\s+(customer\s+number|contract\s+end|current\s+tariff|balance)\b",
        r"\b(kontostand|saldo|offene[rn]?\s+betrag|rückstand)\b",
        r"\b(überweisung|zahlung|lastschrift|geld)\b.*\b(angekommen|eingegangen|gebucht|verbucht)\b",
        r"\b(warum|wieso|weshalb)\s+ist\s+(meine|unsere)\s+rechnung\b",
        r"\b(meine|unsere)\s+rechnung\s+(ist\s+)?(\w+\s+){0,5}(höher|teurer|mehr|falsch|stimmt\s+nicht)\b",
    ),
    "security_incident": _rx(
        r"\b(hacked|hacker|compromised|identity\s+theft|fraud\w*|unauthori[sz]ed\s+(access|login|log-in))\b",
        r"\b(someone|somebody|a\s+stranger)\s+(else\s+)?(has\s+)?(changed|logged|accessed|used|took\s+over|got\s+into)\b",
        r"\b(it\s+)?(was\s*n[o']?t|was\s+not)\s+me\b",
        r"\b(entered|gave|typed)\s+(in\s+)?my\s+(password|login|details|card|bank)\b",
        r"\b(gehackt|hacker|identitätsdiebstahl|betrug|unbefugt\w*|missbrauch\w*)\b",
        r"\bjemand\s+(hat|hatte)\s+(sich\s+)?.*(eingeloggt|angemeldet|geändert|zugegriffen)\b",
        r"\b(fremde[rn]?)\s+(zugriff|anmeldung|login)\b|\bwar\s+ich\s+nicht\b",
    ),
}
DEFAULT_SENSITIVE = tuple(SENSITIVE_TOPICS)


@dataclass(frozen=True)
class Signal:
    """The result of the cheap checks: escalate (with reason), unsure, or nothing."""

    escalate: bool
    reason: str = ""
    unsure: bool = False
    detail: str = ""


NO_SIGNAL = Signal(False)


# The words the patterns above are made of (English and German), for the typo correction: a customer's
# unknown word one edit away from one of these is read as it (bot/spelling.py). Real words never change.
_KEYWORD_TEXT = (
    "human humans person people agent agents representative representatives operator operators someone "
    "somebody staff employee employees supervisor manager colleague advisor adviser consultant assistant "
    "individual talk talking speak speaking chat chatting contact contacting reach reaching touch communicate "
    "escalate customer service support hotline complaint complaints complain complaining reclamation "
    "reclamations grievance claim claims lodge lodging file filing submit against dissatisfied disappointed "
    "unhappy experience terrible horrible awful refund refunds refunding reimburse reimbursement "
    "reimbursements reimbursing rebate rebates rebating restitution restitutions compensation compensations "
    "compensate money payment payments paying transaction transactions checkout problem problems issue "
    "issues error errors trouble troubles declined failed cannot "
    "mitarbeiter mitarbeiterin menschen mensch berater beraterin kundenberater sachbearbeiter ansprechpartner "
    "sprechen reden erreichen kontaktieren verbinden beschwerde beschweren reklamation erstattung "
    "rückerstattung zurückerstatten rückzahlung entschädigung zahlung bezahlung überweisung fehler "
    "unzufrieden erfahrung"
)
KEYWORDS = tuple(_KEYWORD_TEXT.split())
_SPELLER = Speller(KEYWORDS)


def normalize(text: str) -> str:
    """The message as the rules read it: shorthand expanded, typos of rule words corrected."""
    return _SPELLER.normalize(text)


def check_message(text: str, enabled_topics: Iterable[str] = DEFAULT_SENSITIVE) -> Signal:
    """Rules on one customer message: human request, complaint, sensitive topic, or weak signals."""
    raw, text = text, normalize(text)
    if HUMAN_REQUEST.search(text):
        return Signal(True, CUSTOMER_REQUEST)
    for topic in enabled_topics:
        rx = SENSITIVE_TOPICS.get(topic)
        if rx is not None and rx.search(text):
            return Signal(True, f"sensitive:{topic}")
    if COMPLAINT_RX.search(text) or _shouting(raw):
        return Signal(True, COMPLAINT)
    if WEAK_RX.search(text):
        return Signal(False, unsure=True, detail="weak frustration signal")
    return NO_SIGNAL


def check_conversation(text: str, history: list[Message]) -> Signal:
    """Conversation-level signals: 'that did not help', or the same question again after an answer."""
    answered = [i for i, m in enumerate(history) if m.role == "assistant"]
    if not answered:
        return NO_SIGNAL
    if NOT_HELPED_RX.search(normalize(text)):
        return Signal(True, NOT_HELPED)
    earlier = [m.content for m in history[: answered[-1]] if m.role == "user"]
    for question in earlier:
        if similar(question, text) >= 0.8:
            return Signal(True, REPEATED_QUESTION)
    return NO_SIGNAL


def similar(a: str, b: str) -> float:
    """Similarity of two short texts in [0, 1] (case- and punctuation-insensitive)."""
    na, nb = _norm(a), _norm(b)
    if not na or not nb:
        return 0.0
    return SequenceMatcher(None, na, nb).ratio()


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _shouting(text: str) -> bool:
    words = re.findall(r"[A-Za-zÄÖÜäöüß]{4,}", text)
    caps = [w for w in words if w.isupper()]
    return len(caps) >= 3 and len(caps) >= 0.5 * len(words)


DECISION_GRAMMAR = 'root ::= "answer" | "escalate"'
# enough for the longer word at one token per character: llama-server's grammar sampling spells it out like that
# (4 tokens ended "escalate" as "esca", which then read as "answer"); the grammar ends the answer anyway
DECISION_MAX_TOKENS = len("escalate")
DECISION_PROMPT = (
    "You decide whether a customer support chat must be handed to a human colleague. Reply 'escalate' if "
    "the customer is angry, complains, asks for a person, or needs account-specific help; otherwise reply "
    "'answer'.\n\nCustomer message: {text}\n\nDecision:"
)
