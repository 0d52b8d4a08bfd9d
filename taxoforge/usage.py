"""Token and cost accounting: per call on the item, per process and job while running.

Every model call a process makes for a job is counted here, by the model client, against the
job its handler bound (a :class:`JobMeter` in :data:`taxoforge.llm.metering.METER`): nothing
else adds a job's usage, so nothing is counted twice and nothing is left out (a golden set
judged over gRPC, a call that failed validation).

A paid call is counted *before* its request leaves the process (write-ahead): a call still in
flight when the process is killed is in the job's usage, and so is its redo. Writes are grouped:
a call waits for the next write of this process's total for its job, and one KV put covers every
call that registered meanwhile. The call is written with its prompt's estimate
(:func:`taxoforge.llm.metering.prompt_estimate`), so every process checking the job's spend
limit sees calls in flight; the reply's tokens and cost replace the estimate when it arrives
(a call with no reply gives it back), written about once a second, with the next call's write,
and before a stage ends an item.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from taxoforge.errors import TransientError
from taxoforge.llm.metering import METER, add_usage
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "JobMeter",
    "UsageMeter",
    "UsageNotRecorded",
    "UsageRecorder",
    "at_least",
]

log = structlog.get_logger(__name__)


class UsageNotRecorded(TransientError):
    """A call could not be counted (the job store did not answer), so it was not made."""


def at_least(total: pb.Usage, floor: pb.Usage) -> None:
    """Raise each figure of ``total`` to ``floor``'s where it is lower (both undercount what
    was spent, in different ways; the larger is the closer)."""
    total.prompt_tokens = max(total.prompt_tokens, floor.prompt_tokens)
    total.completion_tokens = max(total.completion_tokens, floor.completion_tokens)
    total.cost_usd = max(total.cost_usd, floor.cost_usd)
    total.calls = max(total.calls, floor.calls)
    total.cached_calls = max(total.cached_calls, floor.cached_calls)


@dataclass
class _Account:
    """One job's running total in this process, and the write under way for it."""

    total: pb.Usage = field(default_factory=pb.Usage)
    flushed: pb.Usage = field(default_factory=pb.Usage)
    dirty: bool = False
    # Resolves once a write holding everything counted so far has landed; None: none asked.
    next_write: asyncio.Future[None] | None = None
    writer: asyncio.Task[None] | None = None


def _retrieve(future: asyncio.Future[None]) -> None:
    # A failed write whose callers were all cancelled: nobody is left to be told, and asyncio
    # would warn that the error was never retrieved.
    if not future.cancelled():
        future.exception()


class UsageRecorder(Protocol):
    """Where a meter writes a process's running totals for a job (the job store), which
    is told of the meter so it can count what the meter has not written yet."""

    def attach_meter(self, meter: UsageMeter) -> None: ...

    async def record_usage(self, job_id: str, instance: str, usage: pb.Usage) -> None: ...


class UsageMeter:
    """Sums this process's model usage per job and writes the totals.

    Each process writes only its own key, so there is no contention however many replicas run;
    a job's usage is the sum of those keys. Writes for one job never overlap, so a total never
    goes back: a write starts only after the previous one landed.
    """

    def __init__(self, jobs: UsageRecorder, instance: str, period_s: float = 1.0) -> None:
        self._jobs = jobs
        self._instance = instance
        self._period = period_s
        self._accounts: dict[str, _Account] = {}
        jobs.attach_meter(self)

    def bind(self, job_id: str) -> None:
        """Count the model calls the current task (and tasks it starts) makes against a job."""
        METER.set(JobMeter(self, job_id))

    def unflushed(self, job_id: str) -> pb.Usage:
        """What this process has spent on the job since it last wrote its total."""
        out = pb.Usage()
        account = self._accounts.get(job_id)
        if account is None:
            return out
        out.CopyFrom(account.total)
        flushed = account.flushed
        out.prompt_tokens -= flushed.prompt_tokens
        out.completion_tokens -= flushed.completion_tokens
        out.cost_usd -= flushed.cost_usd
        out.calls -= flushed.calls
        out.cached_calls -= flushed.cached_calls
        return out

    def total(self, job_id: str) -> pb.Usage:
        """This process's usage for the job so far (written or not)."""
        out = pb.Usage()
        account = self._accounts.get(job_id)
        if account is not None:
            out.CopyFrom(account.total)
        return out

    def add(self, job_id: str, usage: pb.Usage) -> None:
        """Count usage against a job; it is written at the next flush."""
        account = self._account(job_id)
        add_usage(account.total, usage)
        account.dirty = True

    async def call(self, job_id: str, estimate: int = 0) -> None:
        """Count one paid call against a job, with ``estimate`` prompt tokens until its reply
        says, and return once that count is written.

        The caller sends its request only after this returns, so a process killed with the
        request in flight has counted it already.

        Raises:
            UsageNotRecorded: the count could not be written; the call must not be made.
        """
        account = self._account(job_id)
        account.total.calls += 1
        account.total.prompt_tokens += estimate
        account.dirty = True
        try:
            await self._write(job_id, account)
        except BaseException:
            # Not sent, so not a call: the next write takes it back out.
            account.total.calls -= 1
            account.total.prompt_tokens -= estimate
            account.dirty = True
            raise

    async def flush(self, job_id: str | None = None) -> None:
        """Write every job total that changed since the last flush (or just ``job_id``'s).

        Stages flush a job's total before they end an item, so when the last item has ended
        every process's usage for the job is written and the job's usage is exact.
        """
        if job_id is not None:
            dirty = [job_id] if job_id in self._accounts and self._accounts[job_id].dirty else []
        else:
            dirty = [j for j, a in self._accounts.items() if a.dirty]
        for dirty_job in dirty:
            try:
                await self._write(dirty_job, self._accounts[dirty_job])
            except UsageNotRecorded as exc:
                log.warning("usage_flush_failed", job_id=dirty_job, error=str(exc))
        if len(self._accounts) > 4096:  # forget jobs long since written
            for old in list(self._accounts)[:2048]:
                account = self._accounts[old]
                if not account.dirty and account.writer is None:
                    del self._accounts[old]

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._period)
            await self.flush()

    def _account(self, job_id: str) -> _Account:
        account = self._accounts.get(job_id)
        if account is None:
            account = self._accounts[job_id] = _Account()
        return account

    async def _write(self, job_id: str, account: _Account) -> None:
        """Wait for a write of the job's total that includes everything counted until now.

        A write already under way may have read the total before this caller counted, so
        callers wait for the next one; every caller that arrives during a write shares it.
        """
        if account.next_write is None:
            account.next_write = asyncio.get_running_loop().create_future()
            account.next_write.add_done_callback(_retrieve)
        waiting = account.next_write
        if account.writer is None:
            account.writer = asyncio.create_task(self._writer(job_id, account), name="usage-write")
        # Shielded: a caller that is cancelled must not cancel the write others wait for.
        await asyncio.shield(waiting)

    async def _writer(self, job_id: str, account: _Account) -> None:
        current: asyncio.Future[None] | None = None
        try:
            while account.next_write is not None:
                current, account.next_write = account.next_write, None
                snapshot = pb.Usage()
                snapshot.CopyFrom(account.total)
                account.dirty = False
                try:
                    await self._jobs.record_usage(job_id, self._instance, snapshot)
                except Exception as exc:
                    account.dirty = True
                    _settle(current, UsageNotRecorded(f"usage not written: {exc}"))
                    continue
                account.flushed = snapshot
                _settle(current, None)
        finally:
            account.writer = None
            # Cancelled (the process is stopping) with callers waiting: they do not send.
            stopped = UsageNotRecorded("usage writer stopped")
            for waiting in (current, account.next_write):
                if waiting is not None and not waiting.done():
                    _settle(waiting, stopped)
                    account.dirty = True
            account.next_write = None


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


@dataclass(frozen=True)
class JobMeter:
    """A process's meter bound to the job a handler works for: what the model client counts
    each call against (a :class:`taxoforge.llm.metering.CallMeter`)."""

    meter: UsageMeter
    job_id: str

    async def sending(self, estimate: int = 0) -> None:
        """A paid call is about to be sent: count it and its prompt's estimate first (see
        :meth:`UsageMeter.call`)."""
        await self.meter.call(self.job_id, estimate)

    def answered(
        self, prompt_tokens: int, completion_tokens: int, cost_usd: float, estimate: int = 0
    ) -> None:
        """A paid call's reply arrived: its tokens and cost, in place of its estimate."""
        self.meter.add(
            self.job_id,
            pb.Usage(
                prompt_tokens=prompt_tokens - estimate,
                completion_tokens=completion_tokens,
                cost_usd=cost_usd,
            ),
        )

    def unanswered(self, estimate: int) -> None:
        """A paid call got no reply: its estimate is taken back (the call stays counted)."""
        if estimate:
            self.meter.add(self.job_id, pb.Usage(prompt_tokens=-estimate))

    def cached(self) -> None:
        """A call was answered from the shared request cache: nothing was sent or spent."""
        self.meter.add(self.job_id, pb.Usage(cached_calls=1))
