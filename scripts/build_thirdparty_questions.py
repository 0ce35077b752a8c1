"""Build the third-party-phrasing question files for `firstline eval` from the shared customer requests.

Reads the Bitext customer-support requests (CDLA-Sharing-1.0) and the CLINC150 out-of-scope requests
(CC BY 3.0) and writes two fixed, seeded samples next to the demo help centre's own dev set:

- `bot/demo_kb/questions/thirdparty-dev.jsonl`: the development split (rules and ranking are tuned
  while looking at this half of the data);
- `bot/demo_kb/questions/thirdparty-test.jsonl`: the held-out split (only aggregate figures are looked
  at; nothing is tuned on it).

The split is made before sampling, per intent, over groups of near-identical requests (same words once
digits are folded), so a template that differs only in an order number never lands in both halves.
Intents map to the demo help centre (`INTENTS` below) only where an article or FAQ entry really answers
them; see bot/demo_kb/questions/README.md for the mapping and the labels.

Usage: python scripts/build_thirdparty_questions.py [--data DIR] [--out DIR] [--per-intent N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/customer-requests")
OUT = ROOT / "bot" / "demo_kb" / "questions"
SEED = 1212
PER_INTENT = 20

# intent -> (expected_source or None, should_escalate (None: not scored), answerable (None: not scored))
# expected_source names an article file or an FAQ entry's title (see `firstline eval`'s matching rules).
INTENTS: dict[str, tuple[str | None, bool | None, bool | None]] = {
    # answered by the demo help centre
    "recover_password": ("reset-password.md", False, True),
    "check_payment_methods": ("payment-methods.md", False, True),
    "check_invoice": ("understanding-your-bill.md", False, True),
    "get_invoice": ("understanding-your-bill.md", False, True),
    "edit_account": ("change-personal-data.md", False, True),
    "delete_account": ("delete-account.md", False, True),
    # two articles answer it: no ordinary early exit during the minimum term (contract-term-notice-period),
    # and early "special cancellation" plus the router fee after cancelling (cancel-contract)
    "check_cancellation_fee": ("contract-term-notice-period.md|cancel-contract.md", False, True),
    # "how can I reach customer service" is an FAQ entry; "I have to talk to customer service" is a
    # request for a person: both outcomes are right, so escalation is not scored for this intent
    "contact_customer_service": ("How can I reach Lumenet customer service?", None, None),
    # must reach a person
    "contact_human_agent": (None, True, False),
    "complaint": (None, True, False),
    "get_refund": (None, True, False),
    "track_refund": (None, True, False),  # the status of a customer's refund: only staff can see it
    "payment_issue": (None, True, False),
    # refunds are a configured sensitive topic; a policy question may be answered or handed over
    "check_refund_policy": (None, None, False),
    # no article answers these: the bot must not answer from an unrelated article (abstain or ask back)
    "create_account": (None, False, False),
    "registration_problems": (None, False, False),
    "review": (None, False, False),
    "cancel_order": (None, False, False),
    "change_order": (None, False, False),
    "place_order": (None, False, False),
    "track_order": (None, False, False),
    "delivery_options": (None, False, False),
    "delivery_period": (None, False, False),
    # partly covered (an address or consent change, a tariff change): neither answer nor abstention is
    # scored, only that they are not escalated
    "change_shipping_address": (None, False, None),
    "set_up_shipping_address": (None, False, None),
    "newsletter_subscription": (None, False, None),
    "switch_account": (None, False, None),
}


def group_key(text: str) -> str:
    """Requests that differ only in digits, case or punctuation are one group (never split)."""
    return re.sub(r"\d+", "0", " ".join(re.findall(r"\w+", text.casefold())))


def split_bitext(rows: list[dict[str, str]], seed: int) -> dict[str, dict[str, list[dict[str, str]]]]:
    """{'dev'|'test': {intent: rows}}: half of each intent's groups per split, by a seeded shuffle."""
    groups: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[row["intent"]][group_key(row["instruction"])].append(row)
    out: dict[str, dict[str, list[dict[str, str]]]] = {"dev": {}, "test": {}}
    for intent in sorted(groups):
        keys = sorted(groups[intent])
        random.Random(f"{seed}:{intent}").shuffle(keys)
        half = len(keys) // 2
        for name, part in (("dev", keys[:half]), ("test", keys[half:])):
            out[name][intent] = [r for k in part for r in groups[intent][k]]
    return out


def question_row(text: str, intent: str, tags: str, origin: str) -> dict[str, object]:
    expected, escalate, answerable = INTENTS.get(intent, (None, False, False))
    row: dict[str, object] = {"question": text.strip(), "lang": "en"}
    if expected:
        row["expected_source"] = expected
    if escalate is not None:
        row["should_escalate"] = escalate
    if answerable is not None:
        row["answerable"] = answerable
    row |= {"intent": intent, "tags": tags, "origin": origin}
    return row


def build(data: Path, out: Path, per_intent: int, seed: int) -> dict[str, int]:
    with (data / "bitext_customer_support_dev.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    unknown = sorted({r["intent"] for r in rows} - set(INTENTS))
    if unknown:
        raise SystemExit(f"intents without a mapping: {unknown}")
    halves = split_bitext(rows, seed)
    oos = sorted(set(json.loads((data / "clinc150_out_of_scope_dev.json").read_text(encoding="utf-8"))))
    random.Random(f"{seed}:oos").shuffle(oos)
    oos_halves = {"dev": oos[: len(oos) // 2], "test": oos[len(oos) // 2 :]}
    counts = {}
    for name in ("dev", "test"):
        lines = []
        for intent, part in halves[name].items():
            picked = random.Random(f"{seed}:{name}:{intent}").sample(part, min(per_intent, len(part)))
            lines += [question_row(r["instruction"], intent, r["tags"], "bitext") for r in picked]
        lines += [question_row(text, "out_of_scope", "", "clinc150-oos") for text in oos_halves[name]]
        path = out / f"thirdparty-{name}.jsonl"
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
        counts[name] = len(lines)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the shared customer requests")
    parser.add_argument("--out", type=Path, default=OUT, help="where the question files go")
    parser.add_argument("--per-intent", type=int, default=PER_INTENT, help="requests sampled per intent and split")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(build(args.data, args.out, args.per_intent, args.seed))


if __name__ == "__main__":
    main()
