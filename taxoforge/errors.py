"""Errors that tell the worker loop what to do with a message."""

from __future__ import annotations

__all__ = ["ConflictError", "JobStopped", "NotFoundError", "PermanentError", "TransientError"]


class TransientError(Exception):
    """A fault that may clear up: the message is retried later (nak with delay)."""


class PermanentError(Exception):
    """A fault that retrying cannot fix: the item is recorded as failed at once."""


class NotFoundError(PermanentError):
    """A named thing (job, taxonomy, dataset) does not exist."""


class ConflictError(PermanentError):
    """The request clashes with the current state (a finished job, a moved-on version)."""


class JobStopped(Exception):
    """The job ended while this work was in hand (over its spend limit): drop the message."""
