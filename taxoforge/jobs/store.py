"""The job's own record in JetStream KV.

Keys (``tf-jobs`` bucket): ``job.<job>`` for the record, ``active.<job>`` while it runs,
``usage.<job>.<instance>`` for each process's running token and cost totals, ``secret.<job>``
for the job's marker secret (never shown to anyone), ``lease.<job>.<step>`` while a selector
replica runs one of the job's whole-job steps (its step lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import KV_JOBS
from taxoforge.jobs.model import TERMINAL_STATES, now_ms
from taxoforge.llm.metering import add_usage
from taxoforge.markers import JobSecrets
from taxoforge.store import scan
from taxoforge.usage import UsageMeter
from taxoforge.v1 import common_pb2 as pb

__all__ = ["JobStore"]

T = TypeVar("T")


class _Recent(Generic[T]):
    """Values by key, each at most a given age when read. Callers that ask for a key while it
    loads share that load: with a spend limit every model call in flight checks the job's
    usage, and each would otherwise start its own scan whenever the value ages out."""

    def __init__(self, load: Callable[[str], Awaitable[T | None]]) -> None:
        self._load = load
        self._values: dict[str, tuple[float, T]] = {}
        self._loading: dict[str, asyncio.Task[T | None]] = {}

    async def get(self, key: str, max_age_s: float) -> T | None:
        """The value, loaded when the one kept is older than ``max_age_s`` (None: none)."""
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < max_age_s:
            return hit[1]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.create_task(self._fill(key))
            loading.add_done_callback(lambda done: self._done(key, done))
        # Shielded: a caller that is cancelled must not cancel the load others wait for.
        return await asyncio.shield(loading)

    def forget(self, key: str) -> None:
        """Drop the kept value; a load under way is not shared any more, nor kept."""
        self._values.pop(key, None)
        self._loading.pop(key, None)

    async def _fill(self, key: str) -> T | None:
        started = time.monotonic()
        value = await self._load(key)
        if value is not None and self._loading.get(key) is asyncio.current_task():
            if len(self._values) > 1024:  # per-job entries: forget them all now and then
                self._values.clear()
            self._values[key] = (started, value)
        return value

    def _done(self, key: str, done: asyncio.Task[T | None]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have been cancelled meanwhile


class JobStore:
    """Job records, with compare-and-set updates, and each job's usage."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._jobs = _Recent(self.get)
        self._usages = _Recent(self.usage)
        self._meter: UsageMeter | None = None
        # Each job's secret for the markers that fence untrusted text in its prompts.
        self.secrets = JobSecrets(bus)

    def attach_meter(self, meter: UsageMeter) -> None:
        """This process's usage meter, so ``spent`` counts what it has not written yet."""
        self._meter = meter

    @property
    def meter(self) -> UsageMeter | None:
        """This process's usage meter, if it has one (services do; the gateway does not)."""
        return self._meter

    async def write_usage(self, job_id: str) -> None:
        """Write this process's usage for the job now (not at the next periodic flush)."""
        if self._meter is not None:
            await self._meter.flush(job_id)

    async def spent(self, job_id: str) -> pb.Usage:
        """The job's usage as this process can know it now: every process's written totals
        (at most 0.2 s old) and what this process spent since it wrote its own."""
        total = pb.Usage()
        total.CopyFrom(await self.usage_cached(job_id))
        if self._meter is not None:
            add_usage(total, self._meter.unflushed(job_id))
        return total

    async def create(self, job: pb.Job) -> bool:
        """Store a new job and mark it active; False if the id is taken."""
        kv = await self._bus.jobs_kv()
        try:
            await kv.create(f"job.{job.id}", job.SerializeToString())
        except KeyWrongLastSequenceError:
            return False
        await kv.put(f"active.{job.id}", b"")
        return True

    async def delete(self, job_id: str) -> None:
        """Remove a job that never started (used to undo a half-created job)."""
        kv = await self._bus.jobs_kv()
        for key in (f"job.{job_id}", f"active.{job_id}"):
            with contextlib.suppress(KeyNotFoundError):
                await kv.purge(key)

    async def get(self, job_id: str) -> pb.Job | None:
        """The job record, or None."""
        job, _ = await self._get_with_revision(job_id)
        return job

    async def get_cached(self, job_id: str, max_age_s: float = 1.0) -> pb.Job | None:
        """The job record, at most ``max_age_s`` old (workers read it for every message)."""
        return await self._jobs.get(job_id, max_age_s)

    async def _get_with_revision(self, job_id: str) -> tuple[pb.Job | None, int]:
        kv = await self._bus.jobs_kv()
        try:
            entry = await kv.get(f"job.{job_id}")
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, 0
        job = pb.Job()
        job.ParseFromString(entry.value)
        return job, int(entry.revision or 0)

    async def update(self, job_id: str, mutate: Callable[[pb.Job], bool]) -> pb.Job | None:
        """Apply ``mutate`` with compare-and-set; it returns False to leave the job as it is."""
        kv = await self._bus.jobs_kv()
        for _ in range(100):
            job, revision = await self._get_with_revision(job_id)
            if job is None:
                return None
            if not mutate(job):
                return job
            job.updated_at_ms = now_ms()
            if job.state in TERMINAL_STATES and not job.finished_at_ms:
                job.finished_at_ms = job.updated_at_ms
            try:
                await kv.update(f"job.{job_id}", job.SerializeToString(), last=revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.005)
                continue
            if job.state in TERMINAL_STATES:
                with contextlib.suppress(KeyNotFoundError):
                    await kv.purge(f"active.{job_id}")
            self._jobs.forget(job_id)
            return job
        raise RuntimeError(f"job {job_id}: too many concurrent updates")

    async def active(self) -> list[str]:
        """Ids of jobs that have not reached a terminal state."""
        active = scan(self._bus, KV_JOBS, "active.*")
        return [key.removeprefix("active.") async for key, _ in active]

    async def record_usage(self, job_id: str, instance: str, usage: pb.Usage) -> None:
        """Overwrite one process's running totals for a job (each process owns its key)."""
        kv = await self._bus.jobs_kv()
        await kv.put(f"usage.{job_id}.{instance}", usage.SerializeToString())

    async def usage_cached(self, job_id: str, max_age_s: float = 0.2) -> pb.Usage:
        """The job's usage, at most ``max_age_s`` old (workers check spend limits with it)."""
        usage = await self._usages.get(job_id, max_age_s)
        assert usage is not None  # usage() always answers
        return usage

    async def usage(self, job_id: str) -> pb.Usage:
        """Tokens and cost so far, summed over every process that worked on the job."""
        total = pb.Usage()
        async for _, value in scan(self._bus, KV_JOBS, f"usage.{job_id}.*"):
            part = pb.Usage()
            part.ParseFromString(value)
            add_usage(total, part)
        return total
