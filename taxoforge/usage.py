"""Token and cost accounting: per call on the item, per process and job while running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

import structlog

from taxoforge.v1 import common_pb2 as pb

if TYPE_CHECKING:
    from taxoforge.store import JobStore

__all__ = ["SPEND_CHECK", "UsageMeter", "add_usage", "instance_id"]

log = structlog.get_logger(__name__)


# Set while a worker handles a message of a job with a spend limit: the model client awaits it
# before every call it pays for, and it raises JobStopped once the job has spent its limit.
SPEND_CHECK: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "SPEND_CHECK", default=None
)


def add_usage(total: pb.Usage, part: pb.Usage) -> None:
    """Add ``part`` into ``total`` in place."""
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.cost_usd += part.cost_usd
    total.calls += part.calls


def instance_id() -> str:
    """A name for this process that no other process (or restart of this one) shares."""
    host = socket.gethostname().split(".")[0][:24].replace("_", "-")
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class UsageMeter:
    """Sums this process's model usage per job and writes the totals about once a second.

    Each process writes only its own key, so there is no contention however many replicas run;
    a job's live usage is the sum of those keys. The exact figures live on the items.
    """

    def __init__(self, jobs: JobStore, instance: str, period_s: float = 1.0) -> None:
        self._jobs = jobs
        self._instance = instance
        self._period = period_s
        self._totals: dict[str, pb.Usage] = {}
        self._flushed: dict[str, pb.Usage] = {}
        self._dirty: set[str] = set()
        jobs.attach_meter(self)

    def unflushed(self, job_id: str) -> pb.Usage:
        """What this process has spent on the job since it last wrote its total."""
        out = pb.Usage()
        out.CopyFrom(self._totals.get(job_id, pb.Usage()))
        flushed = self._flushed.get(job_id)
        if flushed is not None:
            out.prompt_tokens -= flushed.prompt_tokens
            out.completion_tokens -= flushed.completion_tokens
            out.cost_usd -= flushed.cost_usd
            out.calls -= flushed.calls
        return out

    def add(self, job_id: str, usage: pb.Usage) -> None:
        """Count one call (or several) against a job."""
        add_usage(self._totals.setdefault(job_id, pb.Usage()), usage)
        self._dirty.add(job_id)

    async def flush(self, job_id: str | None = None) -> None:
        """Write every job total that changed since the last flush (or just ``job_id``'s).

        Stages flush a job's total before they end an item, so when the last item has ended
        every process's usage for the job is written and the job's usage is exact.
        """
        if job_id is not None:
            dirty = {job_id} & self._dirty
            self._dirty -= dirty
        else:
            dirty, self._dirty = self._dirty, set()
        for job_id in dirty:
            total = pb.Usage()
            total.CopyFrom(self._totals[job_id])
            try:
                await self._jobs.record_usage(job_id, self._instance, total)
                self._flushed[job_id] = total
            except Exception as exc:
                self._dirty.add(job_id)
                log.warning("usage_flush_failed", job_id=job_id, error=str(exc))
        if len(self._totals) > 4096:  # forget jobs long since flushed
            for job_id in list(self._totals)[:2048]:
                if job_id not in self._dirty:
                    del self._totals[job_id]
                    self._flushed.pop(job_id, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._period)
            await self.flush()
