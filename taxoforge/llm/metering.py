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

__all__ = ["METER", "SPEND_CHECK", "CallMeter", "SpendCheck", "add_usage"]


class CallMeter(Protocol):
    """Where the model client counts the calls it makes for one job."""

    async def sending(self) -> None:
        """A paid call is about to be sent; it is sent only once this returns (write-ahead)."""
        ...

    def answered(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        """A paid call's reply arrived: its tokens and cost."""
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


def add_usage(total: pb.Usage, part: pb.Usage) -> None:
    """Add ``part`` into ``total`` in place."""
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.cost_usd += part.cost_usd
    total.calls += part.calls
    total.cached_calls += part.cached_calls
