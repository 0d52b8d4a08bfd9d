"""Item state in JetStream KV (the job's own record is ``taxoforge.jobs.store``'s).

Keys (``tf-items`` bucket): ``<job>.<kind>.<item>[.<part>]`` for stage results,
``<job>.failure.<stage>.<item>`` for why an item did not finish a stage, and
``<job>.outcome.<item>`` for how each item ended (judged or failed), written exactly once.
Results are written with ``create`` (first writer wins), so a redelivered message finds the
result and reuses it, and an item cannot end twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import structlog
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import KV_ITEMS, Stage, ended_subject
from taxoforge.errors import TransientError
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "SELECTION_PHASES",
    "SELECTION_RESULT",
    "ItemKind",
    "ItemStore",
    "scan",
]

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=Message)


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

_DELETED = {"DEL", "PURGE"}
_SCAN_IDLE_S = 30.0
# The most subjects nats-server lists in one stream info reply (JSMaxSubjectDetails).
_SUBJECTS_PAGE = 100_000


async def _ordered(
    bus: Bus,
    bucket: str,
    pattern: str,
    deliver: Callable[[Msg], Awaitable[None]],
    policy: DeliverPolicy,
    inactive_s: float,
) -> JetStreamContext.PushSubscription:
    """An ordered consumer of the ``bucket``'s keys matching ``pattern``, delivering to
    ``deliver``; the server drops it after ``inactive_s`` without its client.

    A bucket's stream and subjects are named by the NATS KV convention (ADR-8), as in
    Bus.count_keys: a KeyValue handle does not expose them."""
    return await bus.js.subscribe(
        f"$KV.{bucket}.{pattern}",
        stream=f"KV_{bucket}",
        cb=deliver,
        ordered_consumer=True,
        deliver_policy=policy,
        inactive_threshold=inactive_s,
    )


def _sequences(msg: Msg) -> tuple[int, int]:
    """The stream and consumer sequences of a JetStream delivery, read from its ack subject.

    ``msg.metadata`` parses every field (a timestamp, five integers, three dataclasses), which
    was a sixth of a scan's CPU; the v1 subject (``$JS.ACK.<stream>.<consumer>.<delivered>.
    <stream seq>.<consumer seq>.<ns>.<pending>``) has them as its sixth and seventh tokens,
    any other form is left to nats-py."""
    reply = msg.reply
    if reply.startswith("$JS.ACK."):
        tokens = reply.split(".")
        if len(tokens) == _ACK_V1_TOKENS:
            return int(tokens[5]), int(tokens[6])
    sequence = msg.metadata.sequence
    return sequence.stream, sequence.consumer


# Tokens of a v1 JetStream ack subject (no domain, no account hash).
_ACK_V1_TOKENS = 9


def _deleted(msg: Msg) -> bool:
    """Whether a KV entry is a delete or purge marker (or the server's own marker)."""
    headers = msg.headers or {}
    return headers.get("KV-Operation") in _DELETED or "Nats-Marker-Reason" in headers


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
    js, stream, prefix = bus.js, f"KV_{bucket}", f"$KV.{bucket}."
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def _deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    # The server drops the consumer soon after the scan (nats-py's default is 5 minutes, and
    # frequent scans would pile consumers up to the server's limit).
    sub = await _ordered(bus, bucket, pattern, _deliver, DeliverPolicy.LAST_PER_SUBJECT, 5.0)
    consumer = ""
    try:
        info = await sub.consumer_info()
        consumer = info.name
        delivered = info.delivered.consumer_seq if info.delivered else 0
        expected = (delivered or 0) + (info.num_pending or 0)
        seen = 0
        while seen < expected:
            # What has arrived is taken as it is: a wait_for per key (a task and a timer each)
            # cost more than the rest of the scan's work on a key.
            if not queue.empty():
                msg = queue.get_nowait()
            else:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=_SCAN_IDLE_S)
                except TimeoutError as exc:
                    raise TimeoutError(
                        f"scan of {pattern!r}: {seen} of {expected} keys arrived, then nothing "
                        f"for {_SCAN_IDLE_S:.0f} s"
                    ) from exc
            seen = max(seen + 1, _sequences(msg)[1])
            if _deleted(msg):
                continue
            yield msg.subject[len(prefix) :], msg.data
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if consumer:  # at once, rather than after the inactivity limit
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, consumer)


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

    async def claim(self, key: str, value: bytes) -> tuple[bytes, int]:
        """Claim ``key`` with ``value`` (first writer wins): the value that holds it and that
        value's revision. Revisions are the bucket's stream sequence, one order over every key
        of every job, so they tell which of two claims came first."""
        kv = await self._bus.items_kv()
        for _ in range(3):
            try:
                return value, await kv.create(key, value)
            except KeyWrongLastSequenceError:
                try:
                    entry = await kv.get(key)
                except KeyNotFoundError:  # deleted between the two: claim it again
                    continue
                return entry.value or b"", entry.revision or 0
        raise TransientError(f"claim of {key!r}: the key kept changing")

    async def follow(
        self, pattern: str, on_entry: Callable[[str, bytes | None, int], None]
    ) -> Callable[[], Awaitable[None]]:
        """Call ``on_entry(key, value, revision)`` for every entry of the keys that match
        ``pattern`` (server-side), those already written and those to come, in the bucket's
        order (revision), each once; a deleted key's value is None. Returns the call that
        stops it.

        An ordered consumer delivers them: it restarts itself past the last revision seen when
        it misses one, so nothing is skipped and nothing is repeated.
        """
        prefix = f"$KV.{KV_ITEMS}."

        async def _deliver(msg: Msg) -> None:
            key = msg.subject[len(prefix) :]
            on_entry(key, None if _deleted(msg) else msg.data, _sequences(msg)[0])

        # The server drops the consumer of a follower that went away without a word.
        sub = await _ordered(self._bus, KV_ITEMS, pattern, _deliver, DeliverPolicy.ALL, 60.0)

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

        return stop

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

    async def count_failed_by_stage(self, job_id: str) -> dict[str, int]:
        """How many items of a job failed at each stage, in one read: the stream's list of the
        job's failure keys (failures are few; a count per stage is a temporary consumer each)."""
        prefix = f"$KV.{KV_ITEMS}.{job_id}.{ItemKind.FAILURE.value}."
        info = await self._bus.js.stream_info(f"KV_{KV_ITEMS}", subjects_filter=prefix + ">")
        subjects = info.state.subjects or {}
        if len(subjects) >= _SUBJECTS_PAGE:  # the server pages longer lists: count per stage
            counts = {s.value: await self.count_failed(job_id, s) for s in Stage}
            return {stage: n for stage, n in counts.items() if n}
        out: dict[str, int] = {}
        for subject in subjects:
            stage = subject[len(prefix) :].split(".", 1)[0]
            out[stage] = out.get(stage, 0) + 1
        return out

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
