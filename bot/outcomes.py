"""What cost reports need to know about conversations and tickets, answered by the stores that own them.

usage.reports (which may not import bot) asks through its `ConversationFacts` protocol; the composition root
(ui) hands it a `ConversationOutcomes`. A conversation started in the period is escalated when its status is
`human`, it has a ticket, or the ledger routed one of its requests to a human (the ledger's part comes from
the report); it is resolved when the bot handled it alone or its ticket was resolved.
"""

from __future__ import annotations

from bot.conversation_store import ConversationStore
from bot.tickets import TicketStore
from usage.db import Target


class ConversationOutcomes:
    """usage.reports.ConversationFacts over ConversationStore and TicketStore."""

    def __init__(self, conversations: ConversationStore, tickets: TicketStore, *, owned: bool = False) -> None:
        self.conversations, self.tickets, self._owned = conversations, tickets, owned

    @classmethod
    def open(cls, target: Target) -> ConversationOutcomes:
        """Stores of their own on `target` (close() releases them)."""
        conversations = ConversationStore(target)
        return cls(conversations, TicketStore(target, conversations=conversations), owned=True)

    def outcome_counts(self, since: str, until: str, human_routed: set[str]) -> tuple[int, int, int] | None:
        states = self.tickets.ticket_states()
        resolved = {c for c, done in states.items() if done}
        return self.conversations.outcome_counts(since, until, set(states) | human_routed, resolved)

    def staff_intervals(self, since: str, until: str) -> list[tuple[str, str, str]]:
        return self.tickets.staff_intervals(since, until)

    def close(self) -> None:
        if self._owned:
            self.tickets.close()
            self.conversations.close()
