"""Training examples from the company's own material, in the exact format the bot prompts the model.

*Facts* are what a customer can ask about and the company has already answered in writing:
- FAQ entries (from files, and staff answers approved as FAQ entries): question -> answer;
- knowledge-base sections: the section heading (or the article title) -> the section's opening
  sentences, which the passage itself contains;
- staff replies on resolved tickets: the customer's last question -> the first staff reply, kept only
  when `grounding` (the answer checker) finds the reply supported by what retrieval returns.

Each fact becomes a training example in the serving format: the system message, the passages retrieval
returns for the question (exactly as the router selects them) and the question, with the grounded answer
as the target. An answerable example is kept only when the passage holding its answer is among those
passages (otherwise the target would teach the model to answer without evidence). A share of facts also
yields an *abstention* example: the same question with the passages of its whole fact group removed,
so what is left is related but does not hold the answer; the target says so and offers a colleague.

*Fact groups* keep a fact, its translation and its paraphrases on one side of the train/held-out split:
an article's sections form one group, joined with the article's translation (the other-language article
whose passages are closest, both ways) and with every FAQ entry whose answer is closest to one of its
passages (cosine above `LINK_COSINE`, multilingual-e5-small). FAQ entries without an article join their
own translation the same way. Whole groups go to the held-out side (seeded), never single examples.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from bot import prompts
from bot.kb.search import KbDocument, KnowledgeBase
from bot.types import Lang, Source

Split = Literal["train", "heldout"]
LINK_COSINE = 0.86  # passage-to-passage cosine from which two texts state the same fact (e5-small)
TARGET_CHARS = 420  # a section's answer: its opening sentences up to about this length
MIN_TARGET_CHARS = 40

Retriever = Callable[[str, Lang], list[Source]]
Grounding = Callable[[str, Sequence[Source], Lang, str], float]


@dataclass(frozen=True)
class Fact:
    """Something customers ask about, answered in the company's own words."""

    key: str  # stable identity, e.g. "faq:faq/faq.jsonl#3", "section:articles/en/x.md#2", "ticket:T-ABC123"
    kind: str  # faq | suggestion | section | ticket
    question: str
    answer: str
    lang: Lang
    document: str  # the knowledge-base document holding the answer ("" for a ticket reply)
    section: str = ""


@dataclass(frozen=True)
class TuneExample:
    """One example in the serving format (the prompt is rebuilt from question + sources by the bot)."""

    fact: str
    group: int
    kind: str
    question: str
    lang: Lang
    answer: str  # the target
    answerable: bool  # False: the passages lack the answer and the target abstains
    sources: tuple[Source, ...]
    split: Split = "train"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [s.as_dict() for s in self.sources]
        return data

    def question_row(self) -> dict[str, Any]:
        """This example as a line of a `firstline eval` question file."""
        row: dict[str, Any] = {"question": self.question, "lang": self.lang, "should_escalate": False,
                               "reference_answer": self.answer, "answerable": self.answerable}  # fmt: skip
        if self.answerable and self.sources:
            row["expected_source"] = _answer_source(self).path
        return row


@dataclass(frozen=True)
class DataSet:
    """The examples of one tune, split by fact group, and the hash that identifies them."""

    examples: tuple[TuneExample, ...]
    facts: int
    groups: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def train(self) -> list[TuneExample]:
        return [e for e in self.examples if e.split == "train"]

    @property
    def heldout(self) -> list[TuneExample]:
        return [e for e in self.examples if e.split == "heldout"]

    def snapshot_hash(self) -> str:
        """SHA-256 over every example (question, sources, target, split): the data this version saw."""
        digest = hashlib.sha256()
        for ex in self.examples:
            digest.update(json.dumps(ex.as_dict(), sort_keys=True, ensure_ascii=False).encode())
            digest.update(b"\n")
        return digest.hexdigest()


# -- facts ------------------------------------------------------------------------------------------------
def kb_facts(documents: Sequence[KbDocument]) -> list[Fact]:
    """FAQ entries and article sections of the knowledge base as facts."""
    out = []
    for doc in documents:
        if doc.kind == "faq":
            answer = doc.answer or (doc.passages[0].text if doc.passages else "")
            kind = "faq" if doc.origin == "file" else "suggestion"
            if answer.strip():
                out.append(Fact(f"{kind}:{doc.path}", kind, doc.title, answer.strip(), doc.lang, doc.path))
            continue
        seen: set[str] = set()
        for n, passage in enumerate(doc.passages):
            if passage.section in seen:
                continue  # a long section's later chunks: the heading was asked already
            seen.add(passage.section)
            target = opening(passage.text)
            if len(target) < MIN_TARGET_CHARS:
                continue
            question = passage.section or doc.title
            out.append(Fact(f"section:{doc.path}#{n}", "section", question, target, doc.lang, doc.path,
                            passage.section))  # fmt: skip
    return out


def ticket_facts(tickets: Any) -> list[Fact]:
    """(customer's last question, first staff reply) of resolved tickets."""
    out = []
    for ticket in tickets.list(status="resolved"):
        question = next((m["content"] for m in reversed(ticket.transcript) if m.get("role") == "user"), "")
        reply = next((e["body"] for e in tickets.events(ticket.id) if e["kind"] == "replied" and e["body"]), "")
        if question.strip() and reply.strip():
            lang: Lang = "de" if ticket.lang == "de" else "en"
            out.append(Fact(f"ticket:{ticket.id}", "ticket", question.strip(), reply.strip(), lang, ""))
    return out


def opening(text: str, limit: int = TARGET_CHARS) -> str:
    """The first sentences (or list items, kept as lines) of a passage, up to about `limit` characters,
    never cut mid-sentence; a sentence ends at . ! or ? before a space, not after a list number ("1.")."""
    out: list[str] = []
    size = 0
    for line in text.strip().splitlines():
        sentences = [s for s in _SENTENCE_END.split(line.strip()) if s.strip()]
        kept: list[str] = []
        for sentence in sentences:
            if (out or kept) and size + len(sentence) + 1 > limit:
                break
            kept.append(sentence.strip())
            size += len(sentence) + 1
        if kept:
            out.append(" ".join(kept))
        if len(kept) < len(sentences) or size >= limit:
            break
    return "\n".join(out).strip()


_SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])\s+")


# -- fact groups --------------------------------------------------------------------------------------------
class _Groups:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def fact_groups(
    facts: Sequence[Fact], documents: Sequence[KbDocument], threshold: float = LINK_COSINE
) -> dict[str, int]:
    """Group number of every fact: an article, its translation and the FAQ entries that restate it."""
    groups = _Groups()
    for fact in facts:
        groups.find(fact.key)
        if fact.document:
            groups.join(fact.key, "doc:" + fact.document)
    vectors = {d.path: _doc_matrix(d) for d in documents}
    articles = [d for d in documents if d.kind == "article" and vectors[d.path] is not None]
    faqs = [d for d in documents if d.kind == "faq" and vectors[d.path] is not None]
    # an article and its translation: the closest other-language article, both ways
    for doc in articles:
        other = [d for d in articles if d.lang != doc.lang]
        best = _closest(doc, other, vectors)
        if (
            best is not None
            and _closest(best, [d for d in articles if d.lang == doc.lang], vectors) is doc
            and _similarity(vectors[doc.path], vectors[best.path]) >= threshold
        ):
            groups.join("doc:" + doc.path, "doc:" + best.path)
    # an FAQ entry and the article passage that states the same (any language)
    for faq in faqs:
        best = _closest(faq, articles, vectors)
        if best is not None and _similarity(vectors[faq.path], vectors[best.path]) >= threshold:
            groups.join("doc:" + faq.path, "doc:" + best.path)
        twin = _closest(faq, [d for d in faqs if d.lang != faq.lang], vectors)
        if twin is not None and _similarity(vectors[faq.path], vectors[twin.path]) >= threshold:
            groups.join("doc:" + faq.path, "doc:" + twin.path)
    roots = sorted({groups.find(f.key) for f in facts})
    number = {root: i for i, root in enumerate(roots)}
    return {f.key: number[groups.find(f.key)] for f in facts}


def _doc_matrix(doc: KbDocument) -> Any:
    rows = [p.vector for p in doc.passages if p.vector is not None]
    return np.vstack(rows) if rows else None


def _similarity(a: Any, b: Any) -> float:
    """The best passage-to-passage cosine between two documents."""
    return float((a @ b.T).max())


def _closest(doc: KbDocument, candidates: Iterable[KbDocument], vectors: dict[str, Any]) -> KbDocument | None:
    best, score = None, -1.0
    for cand in candidates:
        if cand.path == doc.path:
            continue
        sim = _similarity(vectors[doc.path], vectors[cand.path])
        if sim > score:
            best, score = cand, sim
    return best


def split_groups(groups: dict[str, int], heldout_share: float, seed: int) -> set[int]:
    """The held-out group numbers: whole groups, shuffled with the seed, until the share of facts is met."""
    sizes: dict[int, int] = {}
    for g in groups.values():
        sizes[g] = sizes.get(g, 0) + 1
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    target, taken, chosen = heldout_share * len(groups), 0, set()
    for g in order:
        if taken >= target:
            break
        if taken + sizes[g] > 1.5 * target and taken > 0:
            continue  # a huge group would overshoot: try a smaller one
        chosen.add(g)
        taken += sizes[g]
    if len(chosen) == len(sizes) and len(sizes) > 1:  # never hold everything out
        chosen.discard(order[-1])
    return chosen


# -- examples -----------------------------------------------------------------------------------------------
def build_dataset(
    kb: KnowledgeBase,
    retrieve: Retriever,
    *,
    tickets: Any = None,
    grounding: Grounding | None = None,
    grounding_threshold: float = 0.6,
    abstain_share: float = 0.1,
    heldout_share: float = 0.2,
    seed: int = 13,
    max_examples: int | None = None,
) -> DataSet:
    """Facts -> examples (answerable and abstaining) -> split by fact group."""
    documents = kb.documents()
    facts = kb_facts(documents)
    skipped: dict[str, int] = {}
    if tickets is not None:
        found = ticket_facts(tickets)
        if grounding is None:
            skipped["ticket_without_checker"] = len(found)
        else:
            facts += found
    groups = fact_groups(facts, documents)
    members: dict[int, set[str]] = {}
    for fact in facts:
        if fact.document:
            members.setdefault(groups[fact.key], set()).add(fact.document)
    rng = random.Random(seed)
    examples: list[TuneExample] = []
    for fact in facts:
        group = groups[fact.key]
        sources = tuple(retrieve(fact.question, fact.lang))
        if fact.kind == "ticket":
            assert grounding is not None
            ok = bool(sources) and grounding(fact.answer, sources, fact.lang, fact.question) >= grounding_threshold
        else:
            ok = any(_holds(s, fact) for s in sources)
        if ok:
            examples.append(TuneExample(fact.key, group, fact.kind, fact.question, fact.lang, fact.answer, True,
                                        sources))  # fmt: skip
        else:
            why = "ticket_reply_not_supported" if fact.kind == "ticket" else "answer_not_retrieved"
            skipped[why] = skipped.get(why, 0) + 1
        if rng.random() < abstain_share:
            own = members.get(group, set())
            rest = tuple(s for s in sources if _document_of(s) not in own)
            if rest:
                examples.append(TuneExample(fact.key, group, fact.kind, fact.question, fact.lang,
                                            prompts.ABSTAIN[fact.lang], False, rest))  # fmt: skip
    if max_examples is not None and len(examples) > max_examples:
        keep = sorted(rng.sample(range(len(examples)), max_examples))
        skipped["over_max_examples"] = len(examples) - max_examples
        examples = [examples[i] for i in keep]
    held = split_groups({e.fact: e.group for e in examples}, heldout_share, seed)
    examples = [replace(e, split="heldout" if e.group in held else "train") for e in examples]
    return DataSet(tuple(examples), len(facts), len(set(groups.values())), skipped)


def _document_of(source: Source) -> str:
    """The document a search result belongs to (FAQ entries keep their '#n' suffix, sections lose it)."""
    return source.path


def _holds(source: Source, fact: Fact) -> bool:
    """Whether a retrieved passage holds the fact's answer (the very FAQ entry, or the section's text)."""
    if source.path != fact.document:
        return False
    if fact.kind in ("faq", "suggestion"):
        return True
    return fact.answer[:60] in source.snippet or _norm(fact.answer)[:60] in _norm(source.snippet)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _answer_source(ex: TuneExample) -> Source:
    doc = ex.fact.split(":", 1)[1].split("#", 1)[0] if ex.kind == "section" else ex.fact.split(":", 1)[1]
    return next((s for s in ex.sources if s.path == doc), ex.sources[0])
