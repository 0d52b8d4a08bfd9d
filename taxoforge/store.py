"""Job and item state in JetStream KV, datasets in the Object Store.

Keys (``tf-items`` bucket): ``<job>.<kind>.<item>[.<part>]`` for stage results,
``<job>.failure.<stage>.<item>`` for why an item did not finish a stage, and
``<job>.outcome.<item>`` for how each item ended (judged or failed), written exactly once.
Results are written with ``create`` (first writer wins), so a redelivered message finds the
result and reuses it, and an item cannot end twice.
Keys (``tf-jobs`` bucket): ``job.<job>`` for the record, ``active.<job>`` while it runs,
``usage.<job>.<instance>`` for each process's running token and cost totals, ``secret.<job>``
for the job's marker secret (never shown to anyone).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

import structlog
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import KV_ITEMS, KV_JOBS, Stage, ended_subject
from taxoforge.markers import JobSecrets
from taxoforge.usage import add_usage, at_least

if TYPE_CHECKING:
    from taxoforge.usage import UsageMeter
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "SELECTION_PHASES",
    "SELECTION_RESULT",
    "TERMINAL_STATES",
    "ItemKind",
    "ItemStore",
    "JobStore",
    "now_ms",
    "scan",
    "state_name",
]

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=Message)

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})


class ItemKind(StrEnum):
    """Kinds of per-item record."""

    INSTRUCTION = "instruction"
    RESPONSE = "response"
    CANDIDATES = "candidates"
    SCORE = "score"
    JUDGMENT = "judgment"
    FAILURE = "failure"
    OUTCOME = "outcome"
    # Taxonomy jobs: one subject list per sample, one syllabus per subject, a node's merged
    # proposals, one encoding per seed instruction.
    SAMPLE = "sample"
    SYLLABUS = "syllabus"
    EXPANDED = "expanded"
    ENCODED = "encoded"
    # An instruction no draft of which passed the quality gates: the drafts and why.
    REJECTED = "rejected"
    # Contrastive filtering: each version's judgment, and each refined instruction.
    JUDGED = "judged"
    REFINED = "refined"
    # Selection: a query's open tags; a sample's comparison with its cluster's reference.
    TAGS = "tags"
    COMPARISON = "comparison"


class JobKind(StrEnum):
    """What a job does; each kind ends with its own finishing stage."""

    GENERATE = "generate"
    EXPAND = "expand"
    INDUCE = "induce"
    # Selection only, over an imported dataset.
    SELECT = "select"


def job_kind(job: pb.Job) -> JobKind:
    """A job's kind (records from before kinds existed are generation jobs)."""
    return JobKind(job.kind or JobKind.GENERATE.value)


def new_job_id(idempotency_key: str | None = None) -> str:
    """A time-ordered random job id, or one derived from a client's idempotency key."""
    if idempotency_key:
        return "j-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
    return f"j-{int(time.time() * 1000):011x}{os.urandom(4).hex()}"


def state_name(state: int) -> str:
    """A job state as the API spells it: "running", "succeeded", ..."""
    return pb.JobState.Name(pb.JobState.ValueType(state)).removeprefix("JOB_STATE_").lower()


# The result kind each generation stage writes per item, so its finished items can be counted.
_STAGE_RESULT = {
    Stage.INSTRUCT: ItemKind.INSTRUCTION,
    Stage.RESPOND: ItemKind.CANDIDATES,
    Stage.JUDGE: ItemKind.JUDGMENT,
}

# Per-item selection stages: the result each writes, and a failure there does not end the item.
SELECTION_RESULT = {Stage.TAG: ItemKind.TAGS, Stage.COMPARE: ItemKind.COMPARISON}
SELECTION_ITEM_STAGES = frozenset(SELECTION_RESULT)
# Selection's steps, in order (Job.phase names the current one).
SELECTION_PHASES = (Stage.PREPARE, Stage.TAG, Stage.CLUSTER, Stage.COMPARE, Stage.SELECT)

# Kinds stored once per part (candidate, sample, subject, instruction): <job>.<kind>.<item>.<part>.
_PER_PART = frozenset(
    {
        ItemKind.RESPONSE,
        ItemKind.SCORE,
        ItemKind.SAMPLE,
        ItemKind.SYLLABUS,
        ItemKind.ENCODED,
        ItemKind.JUDGED,
        ItemKind.REFINED,
    }
)

# The work stage of each taxonomy job kind, whose items it counts.
_TAXONOMY_STAGE = {JobKind.EXPAND: Stage.EXPAND, JobKind.INDUCE: Stage.INDUCE}


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of every timestamp in records."""
    return int(time.time() * 1000)


_DELETED = {"DEL", "PURGE"}
_SCAN_IDLE_S = 30.0


async def scan(bus: Bus, bucket: str, pattern: str) -> AsyncIterator[tuple[str, bytes]]:
    """Yield (key, value) for each live key of ``bucket`` that matches ``pattern`` (server-side).

    An ordered consumer delivers the last value of each matching key. How many that is comes
    from the server's own consumer info (delivered so far + still pending, one consistent
    snapshot), and the scan reads until it has them all. nats-py's watcher instead ends its
    initial values on a client-side guess that can come before any value (measured: 2 scans
    in 300 returned nothing while writes went on), and a short scan silently loses results.

    Raises:
        TimeoutError: the server stopped delivering before the scan had every key.
    """
    # A bucket's stream and subjects are named by the NATS KV convention (ADR-8), as in
    # Bus.count_keys: a KeyValue handle does not expose them.
    js, stream, prefix = bus.js, f"KV_{bucket}", f"$KV.{bucket}."
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def _deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await js.subscribe(
        prefix + pattern,
        stream=stream,
        cb=_deliver,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        # The server drops the consumer soon after the scan (nats-py's default is 5 minutes,
        # and frequent scans would pile consumers up to the server's limit).
        inactive_threshold=5.0,
    )
    consumer = ""
    try:
        info = await sub.consumer_info()
        consumer = info.name
        delivered = info.delivered.consumer_seq if info.delivered else 0
        expected = (delivered or 0) + (info.num_pending or 0)
        seen = 0
        while seen < expected:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=_SCAN_IDLE_S)
            except TimeoutError as exc:
                raise TimeoutError(
                    f"scan of {pattern!r}: {seen} of {expected} keys arrived, then nothing "
                    f"for {_SCAN_IDLE_S:.0f} s"
                ) from exc
            seen = max(seen + 1, msg.metadata.sequence.consumer)
            headers = msg.headers or {}
            if headers.get("KV-Operation") in _DELETED or "Nats-Marker-Reason" in headers:
                continue
            yield msg.subject[len(prefix) :], msg.data
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if consumer:  # at once, rather than after the inactivity limit
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, consumer)


T = TypeVar("T")


async def _fresh(
    cache: dict[str, tuple[float, T]],
    key: str,
    max_age_s: float,
    load: Callable[[str], Awaitable[T | None]],
) -> T | None:
    """``cache[key]`` if at most ``max_age_s`` old, else loaded (and kept unless None)."""
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < max_age_s:
        return hit[1]
    value = await load(key)
    if value is not None:
        if len(cache) > 1024:  # per-job entries: forget them all now and then
            cache.clear()
        cache[key] = (now, value)
    return value


class ItemStore:
    """Per-item stage results: written once, read by later stages and by selection."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    @staticmethod
    def key(job_id: str, kind: ItemKind, item_id: str, *parts: str) -> str:
        """The key of one record."""
        return ".".join((job_id, kind.value, item_id, *parts))

    @staticmethod
    def versioned(part: str, version: int) -> str:
        """The key part of a per-candidate record of an item's refined ``version``."""
        return part if version == 0 else f"v{version}-{part}"

    @staticmethod
    def failure_key(job_id: str, stage: Stage, item_id: str) -> str:
        """The key of an item's failure record at a stage."""
        return f"{job_id}.{ItemKind.FAILURE.value}.{stage.value}.{item_id}"

    async def get(self, key: str, message_type: type[M]) -> M | None:
        """The record under ``key``, or None."""
        kv = await self._bus.items_kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        out = message_type()
        out.ParseFromString(entry.value)
        return out

    async def put_once(self, key: str, message: M) -> M:
        """Store ``message`` unless a record exists; return the record that won."""
        kv = await self._bus.items_kv()
        try:
            await kv.create(key, message.SerializeToString())
            return message
        except KeyWrongLastSequenceError:
            existing = await self.get(key, type(message))
            return existing if existing is not None else message

    async def claim(self, key: str, owner: str) -> str:
        """Claim ``key`` for ``owner`` (first writer wins); returns whoever holds it."""
        kv = await self._bus.items_kv()
        try:
            await kv.create(key, owner.encode())
            return owner
        except KeyWrongLastSequenceError:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return owner
            return (entry.value or b"").decode() or owner

    async def put_raw(self, key: str, value: bytes, wait: bool = True) -> None:
        """Store bytes under ``key`` (overwriting); ``wait=False`` skips JetStream's ack."""
        if wait:
            kv = await self._bus.items_kv()
            await kv.put(key, value)
        else:
            await self._bus.nc.publish(f"$KV.{KV_ITEMS}.{key}", value)

    async def get_raw(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""
        kv = await self._bus.items_kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def once(self, key: str, message_type: type[M], make: Callable[[], Awaitable[M]]) -> M:
        """The stored result under ``key``, or ``make()``'s result stored there.

        This is how every stage stays idempotent under redelivery: a result found is reused
        and no model is called again; of two racing writers the first one's result stands.
        """
        existing = await self.get(key, message_type)
        if existing is not None:
            return existing
        return await self.put_once(key, await make())

    @staticmethod
    def _pattern(job_id: str, kind: ItemKind) -> str:
        if kind is ItemKind.FAILURE:
            return f"{job_id}.{kind.value}.*.*"  # <stage>.<item>
        if kind in _PER_PART:
            return f"{job_id}.{kind.value}.*.*"  # <item>.<part>
        return f"{job_id}.{kind.value}.*"

    async def count(self, job_id: str, kind: ItemKind) -> int:
        """How many records of this kind a job has (for responses and scores: one per candidate)."""
        return await self._bus.count_keys(KV_ITEMS, self._pattern(job_id, kind))

    async def count_failed(self, job_id: str, stage: Stage | None = None) -> int:
        """How many items of a job failed (at one stage, or at any)."""
        tail = f"{stage.value}.*" if stage else ">"
        return await self._bus.count_keys(KV_ITEMS, f"{job_id}.{ItemKind.FAILURE.value}.{tail}")

    async def scan(self, job_id: str, kind: ItemKind, message_type: type[M]) -> AsyncIterator[M]:
        """Every record of a kind for a job (failures of every stage; every candidate's part)."""
        async for _, value in scan(self._bus, KV_ITEMS, self._pattern(job_id, kind)):
            out = message_type()
            out.ParseFromString(value)
            yield out

    async def record_failure(
        self, job_id: str, stage: Stage, item_id: str, reason: str, deliveries: int
    ) -> None:
        """Record why an item did not finish a stage; at a generation stage this also ends the
        item as failed.

        If the item already ended (a slow delivery judged it first), the outcome stays judged
        and the failure record remains only as history. A selection stage's failure (tag,
        compare) leaves the item selectable: it is counted as that step's result.
        """
        failure = pb.ItemFailure(
            job_id=job_id, item_id=item_id, stage=stage.value, reason=reason, deliveries=deliveries
        )
        await self.put_once(self.failure_key(job_id, stage, item_id), failure)
        if stage in SELECTION_ITEM_STAGES:
            await self.announce(job_id)
            return
        await self.end(job_id, item_id, pb.ItemOutcome(item_id=item_id, failed_stage=stage.value))

    async def end(self, job_id: str, item_id: str, outcome: pb.ItemOutcome) -> pb.ItemOutcome:
        """Write how an item ended, once, and announce it; returns the outcome that stands."""
        stands = await self.put_once(self.key(job_id, ItemKind.OUTCOME, item_id), outcome)
        await self.announce(job_id)
        return stands

    async def announce(self, job_id: str) -> None:
        """A hint that one of the job's items has a new result, so whoever finishes the job's
        current step notices at once rather than at its next periodic check."""
        await self._bus.nc.publish(ended_subject(job_id), b"")


class JobStore:
    """Job records, with compare-and-set updates and exact progress counts."""

    def __init__(self, bus: Bus, items: ItemStore | None = None) -> None:
        self._bus = bus
        self._items = items or ItemStore(bus)
        self._cache: dict[str, tuple[float, pb.Job]] = {}
        self._usage_cache: dict[str, tuple[float, pb.Usage]] = {}
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
        (at most half a second old) and what this process spent since it wrote its own."""
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
        return await _fresh(self._cache, job_id, max_age_s, self.get)

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
            self._cache.pop(job_id, None)
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

    async def usage_cached(self, job_id: str, max_age_s: float = 0.5) -> pb.Usage:
        """The job's usage, at most ``max_age_s`` old (workers check spend limits with it)."""
        usage = await _fresh(self._usage_cache, job_id, max_age_s, self.usage)
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

    async def _selection_progress(self, job: pb.Job, out: pb.JobProgress) -> None:
        """The selection steps: one result per item for tag and compare, once for the others.

        A step before the job's current one is done; the current one counts its results.
        """
        done_all = job.state == pb.JOB_STATE_SUCCEEDED
        current = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
        for i, stage in enumerate(SELECTION_PHASES):
            passed = done_all or i < current
            if stage in SELECTION_RESULT:
                done = await self._items.count(job.id, SELECTION_RESULT[stage])
                failed = await self._items.count_failed(job.id, stage)
                planned = job.phase_planned if i == current and not done_all else done + failed
                out.stages.add(stage=stage.value, done=done, failed=failed, planned=planned)
            else:
                out.stages.add(stage=stage.value, done=1 if passed else 0, planned=1)

    async def progress(self, job_id: str) -> pb.JobProgress | None:
        """The job with exact per-stage counts of finished and failed items."""
        job = await self.get(job_id)
        if job is None:
            return None
        out = pb.JobProgress(job=job)
        out.finished = await self._items.count(job_id, ItemKind.OUTCOME)
        kind = job_kind(job)
        if kind in _TAXONOMY_STAGE:
            stage = _TAXONOMY_STAGE[kind]
            failed = await self._items.count_failed(job_id, stage)
            out.stages.add(stage=stage.value, done=out.finished - failed, failed=failed)
            applied = 1 if job.state == pb.JOB_STATE_SUCCEEDED else 0
            out.stages.add(stage=Stage.APPLY.value, done=applied, failed=0)
            out.usage.CopyFrom(await self.usage(job_id))
            return out
        if kind is JobKind.GENERATE:
            plan_failed = await self._items.count_failed(job_id, Stage.PLAN)
            out.stages.add(stage=Stage.PLAN.value, done=1 if job.planned else 0, failed=plan_failed)
            for stage, result in _STAGE_RESULT.items():
                done = await self._items.count(job_id, result)
                failed = await self._items.count_failed(job_id, stage)
                out.stages.add(stage=stage.value, done=done, failed=failed)
        await self._selection_progress(job, out)
        # Every call made for the job, repeats included (each counted before it was sent).
        out.usage.CopyFrom(await self.usage(job_id))
        if job.HasField("selection") and job.state == pb.JOB_STATE_SUCCEEDED:
            # The kept results' own records: tokens of a reply whose process died before it
            # wrote them (within a second) are there, though not in the processes' totals.
            at_least(out.usage, job.selection.usage)
        return out
