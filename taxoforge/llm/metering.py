"""What the model client counts each call on, and what it asks before a paid call.

The client knows only this seam: the job's usage (:mod:`taxoforge.usage`) implements
:class:`CallMeter` and binds it to the current task (:data:`METER`), and a stage handler whose
job has a spend limit sets :data:`SPEND_CHECK`. Both are the current task's own (and the tasks it
starts), so concurrent handlers never count on each other's job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

from taxoforge.v1 import common_pb2 as pb

__all__ = ["METER", "SPEND_CHECK", "CallMeter", "SpendCheck", "add_usage", "prompt_estimate"]


class CallMeter(Protocol):
    """Where the model client counts the calls it makes for one job.

    A paid call counts its prompt's estimate (:func:`prompt_estimate`) as it is sent, so a
    spend limit sees the calls in flight, not only those answered; the reply's own counts take
    the estimate's place, and a call that gets no reply gives it back.
    """

    async def sending(self, estimate: int = 0) -> None:
        """A paid call whose prompt is about ``estimate`` tokens is about to be sent; it is sent
        only once this returns (write-ahead)."""
        ...

    def answered(
        self, prompt_tokens: int, completion_tokens: int, cost_usd: float, estimate: int = 0
    ) -> None:
        """A paid call sent with ``estimate`` got its reply: its tokens and cost."""
        ...

    def unanswered(self, estimate: int) -> None:
        """A paid call sent with ``estimate`` got no reply (it stays counted as a call)."""
        ...

    def cached(self) -> None:
        """A call was answered from the shared request cache: nothing was sent or spent."""
        ...


# Raises JobStopped once the job has spent its limit.
SpendCheck = Callable[[], Awaitable[None]]

# The job the current task's model calls are made for (set by a stage handler once it knows
# its job, or by a servicer serving a job); None: calls are counted against no job.
METER: ContextVar[CallMeter | None] = ContextVar("METER", default=None)

# Set while a worker handles a message of a job with a spend limit: the model client awaits it
# before every call it pays for.
SPEND_CHECK: ContextVar[SpendCheck | None] = ContextVar("SPEND_CHECK", default=None)


def prompt_estimate(messages_json: str) -> int:
    """A prompt's tokens as counted before its reply says: its messages' UTF-8 bytes (as JSON)
    over four, rounded up. Cheap (no tokenizer on the hot path) and, for the tokenizers in use,
    rarely below the count the reply gives (the JSON's keys and quotes are counted too)."""
    size = len(messages_json) if messages_json.isascii() else len(messages_json.encode())
    return (size + 3) // 4


def add_usage(total: pb.Usage, part: pb.Usage) -> None:
    """Add ``part`` into ``total`` in place."""
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.cost_usd += part.cost_usd
    total.calls += part.calls
    total.cached_calls += part.cached_calls
