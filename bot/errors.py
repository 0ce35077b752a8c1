"""Errors raised by the bot.

`InputError` is shown to the customer as-is (it is written for them, in their language where known);
`ConversationError` is shown to staff/operators and means a caller used an unknown or invalid id.
"""


class BotError(Exception):
    """Base class for bot errors."""


class InputError(BotError):
    """The customer's message cannot be processed (empty, too long); the message text is customer-facing."""


class ConversationError(BotError):
    """An invalid or unknown conversation id was used (caller error)."""
