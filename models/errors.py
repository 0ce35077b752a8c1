"""Errors raised by the model layer.

`ModelFileError` is seen by operators at start-up (one line, with the fix); `GenerationError` is
caught by the bot, which escalates the conversation and records the error in the ledger.
"""


class ModelError(Exception):
    """Base class for model-layer errors."""


class ModelFileError(ModelError):
    """The configured model file is missing, unreadable, corrupt or fails its checksum (operator-facing)."""


class GenerationError(ModelError):
    """llama.cpp failed while generating; the bot escalates the conversation (customer sees a hand-over)."""


class ModelUnavailableError(GenerationError):
    """The model could not be (re)loaded or its worker is down; the bot escalates like any failed generation."""


class ContextOverflowError(GenerationError):
    """The prompt does not fit the context window even after trimming (a bug in the caller's trimming)."""
