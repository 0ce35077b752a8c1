"""A small model for a single task: should this message go to a person? (and, if so, what about)

Logistic regression (scikit-learn, the `tune` extra) over the query embeddings of the bundled
multilingual-e5-small model, trained on the company's own labelled requests: question files with
`should_escalate` (and `intent` where given), plus resolved tickets that staff answered after the bot
handed them over for a request for a person, a complaint or a sensitive topic. A second, multinomial
regression over the escalating requests' `intent` labels names the reason ("classifier:complaint").

The router asks the classifier only after its rules found nothing (rules stay first: explicit requests,
sensitive topics and conversation signals always escalate), so the decision is *rules or classifier*.
The threshold is chosen on the training data (5-fold cross-validated probabilities): the lowest at which
rules-or-classifier keeps the rules' own precision there. Then the held-out requests decide: the
classifier is switched on only if rules-or-classifier reaches at least the rules' recall at (within
PRECISION_SLACK) their precision on held-out requests. Serving needs numpy only: the coefficients are
stored in the database (table `classifiers`, migrations "firstline.classifiers", owned here).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot import escalation
from bot.embeddings import Embedder
from bot.types import Lang
from usage.db import Store
from usage.ledger import iso, utcnow

migrations = Migrations("firstline.classifiers")
PRECISION_SLACK = 0.01  # "equal precision" on held-out: within one point
REASON = "classifier"
HANDED_OVER = (escalation.CUSTOMER_REQUEST, escalation.COMPLAINT)  # ticket reasons that label a request


@migrations()
def m001_classifiers(db: Database) -> None:
    db.table("classifiers").create(
        {
            "id": int,
            "created_at": str,
            "kind": str,
            "embedder": str,
            "weights": str,
            "threshold": float,
            "intents": str,
            "data_hash": str,
            "train_examples": int,
            "heldout_examples": int,
            "metrics": str,
            "enabled": int,
            "request_id": str,
        },  # fmt: skip
        pk="id",
        not_null={"created_at", "kind", "embedder", "weights", "threshold", "enabled"},
    )


@dataclass(frozen=True)
class Labelled:
    """One labelled customer request."""

    text: str
    escalate: bool
    lang: Lang | None = None
    intent: str = ""
    source: str = ""


def load_labelled(paths: Iterable[Path]) -> list[Labelled]:
    """Requests with a `should_escalate` label from question files (JSON Lines); unlabelled lines are skipped."""
    from bot.evaluation import question_rows

    out = []
    for path in paths:
        for row, text in question_rows(path):
            label = row.get("should_escalate")
            if label is None or not text:
                continue
            lang = row.get("lang") if row.get("lang") in ("de", "en") else None
            out.append(Labelled(text, bool(label), lang, str(row.get("intent") or ""), path.name))
    return out


def ticket_labels(tickets: Any) -> list[Labelled]:
    """Customer requests that staff answered after a hand-over for a person, a complaint or a sensitive
    topic: each ticket's first customer message, labelled `escalate`."""
    out = []
    for ticket in tickets.list(status="resolved"):
        if not (ticket.reason in HANDED_OVER or ticket.reason.startswith("sensitive:")):
            continue
        if not any(e["kind"] == "replied" for e in tickets.events(ticket.id)):
            continue
        first = next((m["content"] for m in ticket.transcript if m.get("role") == "user"), "")
        if first.strip():
            lang: Lang = "de" if ticket.lang == "de" else "en"
            out.append(Labelled(first.strip(), True, lang, ticket.reason, f"ticket:{ticket.id}"))
    return out


def data_hash(rows: Sequence[Labelled]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


# -- scoring ---------------------------------------------------------------------------------------------
def precision_recall(decisions: Sequence[bool], labels: Sequence[bool]) -> tuple[float, float]:
    """Precision (1.0 when nothing is escalated) and recall (1.0 when nothing should be)."""
    from bot.evaluation import escalation_scores

    return escalation_scores(zip(decisions, labels, strict=True))


def rules_decisions(rows: Sequence[Labelled], topics: Sequence[str]) -> list[bool]:
    """What the message rules decide (without conversation history, like a first message)."""
    return [escalation.check_message(r.text, topics).escalate for r in rows]


def pick_threshold(probabilities: Sequence[float], rules: Sequence[bool], labels: Sequence[bool]) -> float:
    """The lowest threshold at which rules-or-classifier keeps the rules' precision (within the slack)."""
    rules_p, _ = precision_recall(rules, labels)
    best = 1.0
    for t in sorted({round(p, 4) for p in probabilities} | {0.5}, reverse=True):
        combined = [r or p >= t for r, p in zip(rules, probabilities, strict=True)]
        precision, _ = precision_recall(combined, labels)
        if precision + PRECISION_SLACK < rules_p:
            break
        best = t
    return max(best, 0.05)


# -- the model --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EscalationClassifier:
    """The trained classifier: applies with numpy only (no scikit-learn at serving time)."""

    embedder: Embedder
    coef: Any  # (dim,)
    intercept: float
    threshold: float
    intent_labels: tuple[str, ...] = ()
    intent_coef: Any = None  # (n_intents, dim)
    intent_intercept: Any = None
    version: int = 0

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        x = np.asarray(self.embedder.embed_queries(list(texts)), dtype=np.float64)
        z = x @ np.asarray(self.coef, dtype=np.float64) + self.intercept
        return [1.0 / (1.0 + math.exp(-float(v))) for v in z]

    def intent(self, text: str) -> str:
        if not self.intent_labels:
            return ""
        x = np.asarray(self.embedder.embed_queries([text])[0], dtype=np.float64)
        scores = np.asarray(self.intent_coef) @ x + np.asarray(self.intent_intercept)
        return self.intent_labels[int(np.argmax(scores))]

    def check(self, text: str, lang: Lang | None = None) -> escalation.Signal | None:
        """An escalation signal when the classifier is confident enough, else None (the router goes on)."""
        (p,) = self.probabilities([text])
        if p < self.threshold:
            return None
        intent = self.intent(text)
        return escalation.Signal(True, f"{REASON}:{intent}" if intent else REASON, detail=f"p={p:.2f}")


@dataclass(frozen=True)
class TrainOutcome:
    classifier: EscalationClassifier
    metrics: dict[str, Any]
    enabled: bool
    data_hash: str
    train_examples: int
    heldout_examples: int
    notes: list[str] = field(default_factory=list)


def train(
    rows: Sequence[Labelled],
    heldout: Sequence[Labelled],
    embedder: Embedder,
    topics: Sequence[str] = escalation.DEFAULT_SENSITIVE,
    *,
    seed: int = 13,
) -> TrainOutcome:
    """Fit, pick the threshold on the training rows, and judge rules vs rules-or-classifier on `heldout`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = [r.escalate for r in rows]
    if len(set(labels)) < 2 or min(labels.count(True), labels.count(False)) < 5:
        raise ValueError("the classifier needs at least 5 requests that must escalate and 5 that must not")
    x = np.asarray(embedder.embed_queries([r.text for r in rows]), dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=5000)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    cv = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    rules_train = rules_decisions(rows, topics)
    threshold = pick_threshold([float(p) for p in cv], rules_train, labels)
    model.fit(x, y)
    intents = [(r, r.intent) for r in rows if r.escalate and r.intent]
    intent_labels: tuple[str, ...] = ()
    intent_coef = intent_intercept = None
    if len({i for _, i in intents}) >= 2:
        im = LogisticRegression(C=4.0, max_iter=5000)
        im.fit(np.asarray(embedder.embed_queries([r.text for r, _ in intents])), [i for _, i in intents])
        intent_labels = tuple(str(c) for c in im.classes_)
        intent_coef, intent_intercept = im.coef_, im.intercept_
        if len(intent_labels) == 2:  # scikit-learn keeps one row for two classes: make it one per class
            intent_coef = np.vstack([-im.coef_[0], im.coef_[0]])
            intent_intercept = np.asarray([-im.intercept_[0], im.intercept_[0]])
    clf = EscalationClassifier(embedder, model.coef_[0], float(model.intercept_[0]), threshold, intent_labels,
                               intent_coef, intent_intercept)  # fmt: skip
    metrics = {"threshold": threshold, "train": figures(clf, rows, topics, rules_train, [float(p) for p in cv])}
    enabled, notes = False, []
    if heldout:
        metrics["heldout"] = held = figures(clf, heldout, topics)
        rules, combined = held["rules"], held["rules_or_classifier"]
        enabled = combined["recall"] > rules["recall"] and combined["precision"] + PRECISION_SLACK >= rules["precision"]
        notes.append(
            f"held-out: rules precision {rules['precision']:.3f} recall {rules['recall']:.3f}; rules or classifier "
            f"precision {combined['precision']:.3f} recall {combined['recall']:.3f} -> "
            f"{'used by the router' if enabled else 'not used (it does not beat the rules there)'}"
        )
    else:
        notes.append("no held-out requests: the classifier is recorded but not used")
    return TrainOutcome(clf, metrics, enabled, data_hash([*rows, *heldout]), len(rows), len(heldout), notes)


def figures(
    clf: EscalationClassifier,
    rows: Sequence[Labelled],
    topics: Sequence[str],
    rules: Sequence[bool] | None = None,
    probabilities: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Precision and recall of the rules, the classifier alone, and rules-or-classifier on `rows`."""
    labels = [r.escalate for r in rows]
    rules = list(rules) if rules is not None else rules_decisions(rows, topics)
    probs = list(probabilities) if probabilities is not None else clf.probabilities([r.text for r in rows])
    own = [bool(p >= clf.threshold) for p in probs]
    out: dict[str, Any] = {"requests": len(rows), "must_escalate": sum(labels)}
    for name, decisions in (("rules", rules), ("classifier", own),
                            ("rules_or_classifier", [a or b for a, b in zip(rules, own, strict=True)])):  # fmt: skip
        precision, recall = precision_recall(decisions, labels)
        out[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "escalated": int(sum(decisions))}
    return out


# -- storage -------------------------------------------------------------------------------------------
class ClassifierStore(Store):
    """Trained classifiers; the newest enabled one is what the router uses."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, migrations)

    def record(self, outcome: TrainOutcome, request_id: str = "") -> int:
        clf = outcome.classifier
        intents = {
            "labels": list(clf.intent_labels),
            "coef": np.asarray(clf.intent_coef).tolist() if clf.intent_coef is not None else [],
            "intercept": np.asarray(clf.intent_intercept).tolist() if clf.intent_intercept is not None else [],
        }
        row = {"created_at": iso(utcnow()), "kind": "escalation", "embedder": clf.embedder.model_id,
               "weights": json.dumps({"coef": np.asarray(clf.coef).tolist(), "intercept": clf.intercept}),
               "threshold": clf.threshold, "intents": json.dumps(intents), "data_hash": outcome.data_hash,
               "train_examples": outcome.train_examples, "heldout_examples": outcome.heldout_examples,
               "metrics": json.dumps(outcome.metrics), "enabled": int(outcome.enabled),
               "request_id": request_id}  # fmt: skip
        with self.write() as db:
            table = db.table("classifiers")
            table.insert(row)
            return int(table.last_pk)  # type: ignore[arg-type]

    def latest(self) -> dict[str, Any] | None:
        with self.read() as db:
            rows = list(db.query("SELECT * FROM classifiers ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    def active(self, embedder: Embedder | None) -> EscalationClassifier | None:
        """The newest classifier, if it beat the rules on held-out and the embedder it was trained on is here."""
        row = self.latest()
        if row is None or not row["enabled"] or embedder is None or row["embedder"] != embedder.model_id:
            return None
        weights, intents = json.loads(row["weights"]), json.loads(row["intents"])
        return EscalationClassifier(
            embedder,
            np.asarray(weights["coef"]),
            float(weights["intercept"]),
            float(row["threshold"]),
            tuple(intents["labels"]),
            np.asarray(intents["coef"]) if intents["labels"] else None,
            np.asarray(intents["intercept"]) if intents["labels"] else None,
            int(row["id"]),
        )
