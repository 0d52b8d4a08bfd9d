"""A ceiling on the model calls one piece of judge work may send, retries included.

TACOS comparative scoring has a budget of judge calls; the cluster step gives each comparison
its share (``CompareTask.max_calls``). The model client asks its meter before every request it
sends (a structured reply asked again, a transient fault retried), so the meter is where the
ceiling holds: :class:`Tally` counts each request of one verdict against the comparison's
:class:`Allowance` and refuses, before it is sent, the one that would go past it.

The tally also keeps what its verdict's requests cost, so a verdict that ran out of calls
still records what it spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taxoforge.errors import PermanentError
from taxoforge.llm.metering import CallMeter
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Allowance", "AllowanceSpent", "Tally"]


class AllowanceSpent(PermanentError):
    """The work has sent every call it may; the request was not sent."""


@dataclass
class Allowance:
    """Calls one piece of work may send (``limit`` 0: any number), shared by its verdicts."""

    limit: int = 0
    sent: int = 0

    def take(self) -> None:
        """Count one request about to be sent.

        Raises:
            AllowanceSpent: the limit is reached; the request must not be sent.
        """
        if self.limit and self.sent >= self.limit:
            raise AllowanceSpent(f"its {self.limit} judge calls are spent")
        self.sent += 1

    def give_back(self) -> None:
        """A counted request was not sent after all."""
        self.sent -= 1


@dataclass
class Tally:
    """One verdict's requests: counted against the allowance, then against the job's meter
    (``inner``), and summed here (calls sent, tokens and cost of the replies, replies)."""

    allowance: Allowance
    inner: CallMeter | None = None
    usage: pb.Usage = field(default_factory=pb.Usage)
    replies: int = 0

    async def sending(self, estimate: int = 0) -> None:
        self.allowance.take()
        if self.inner is not None:
            try:
                await self.inner.sending(estimate)
            except BaseException:
                self.allowance.give_back()
                raise
        self.usage.calls += 1

    def answered(
        self, prompt_tokens: int, completion_tokens: int, cost_usd: float, estimate: int = 0
    ) -> None:
        if self.inner is not None:
            self.inner.answered(prompt_tokens, completion_tokens, cost_usd, estimate)
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.cost_usd += cost_usd
        self.replies += 1

    def unanswered(self, estimate: int) -> None:
        if self.inner is not None:
            self.inner.unanswered(estimate)

    def cached(self) -> None:
        if self.inner is not None:
            self.inner.cached()
        self.usage.cached_calls += 1
        self.replies += 1
