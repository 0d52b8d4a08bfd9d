"""One copy of a whole-job step at a time: a lease per job and step in JetStream KV.

A whole-job step (prepare, cluster, select) is one message; when its first run stalls past
the consumer's ack wait, NATS redelivers the message (to this replica or another) while the
first run goes on. Whoever runs the step holds the key ``lease.<job>.<step>`` (created with
``create()``, so only one can), renews it by compare-and-set every third of ``ttl_s``, and
deletes it at the end. A second run waits while the holder renews (its own message kept
alive by the worker's heartbeat) and then re-reads the job, which by then has moved on. A
lease nobody renewed for ``ttl_s`` (its holder died) is taken over by compare-and-set; the
test is "the revision did not change", so replicas' clocks never matter. A holder that finds
its lease taken (it stalled longer than ``ttl_s``) stops its own run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from taxoforge.errors import TransientError

__all__ = ["LeaseKV", "LeaseLost", "held"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class _Entry(Protocol):
    @property
    def revision(self) -> int | None: ...


class LeaseKV(Protocol):
    """The part of a NATS KV bucket a lease uses."""

    async def create(self, key: str, value: bytes) -> int: ...

    async def get(self, key: str) -> _Entry: ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...

    async def delete(self, key: str, last: int | None = None) -> bool: ...


class LeaseLost(TransientError):
    """Another run took this run's lease (it had not renewed it for the lease's ttl)."""


async def _acquire(kv: LeaseKV, key: str, owner: str, ttl_s: float) -> int:
    """Take the lease, waiting while someone else renews it; returns its revision."""
    seen: tuple[int, float] | None = None  # (revision, when first seen)
    waited = False
    while True:
        try:
            return await kv.create(key, owner.encode())
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue  # released meanwhile: create again
        revision = int(entry.revision or 0)
        now = time.monotonic()
        if seen is None or seen[0] != revision:
            seen = (revision, now)
            if not waited:
                log.info("step_waiting", lease=key, reason="another run holds the step")
                waited = True
        elif now - seen[1] >= ttl_s:
            try:
                taken = await kv.update(key, owner.encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue  # renewed or taken meanwhile
            log.warning("step_lease_taken_over", lease=key, idle_s=round(now - seen[1], 1))
            return taken
        await asyncio.sleep(min(ttl_s / 3.0, 1.0))


async def _renew(kv: LeaseKV, key: str, owner: str, ttl_s: float, revision: list[int]) -> None:
    """Renew until cancelled; returns when the lease was taken by another run."""
    while True:
        await asyncio.sleep(ttl_s / 3.0)
        try:
            revision[0] = await kv.update(key, owner.encode(), last=revision[0])
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return
        except Exception as exc:  # a reconnect: try again at the next period
            log.warning("step_lease_renew_failed", lease=key, error=f"{type(exc).__name__}: {exc}")


async def held(
    kv: LeaseKV,
    key: str,
    owner: str,
    ttl_s: float,
    work: Callable[[], Awaitable[T]],
) -> T:
    """Run ``work()`` holding the lease ``key``: wait for it first, renew it meanwhile,
    release it after.

    Raises:
        LeaseLost: another run took the lease while ``work`` ran (``work`` is cancelled).
    """
    revision = [await _acquire(kv, key, owner, ttl_s)]
    job = asyncio.ensure_future(work())
    renew = asyncio.create_task(_renew(kv, key, owner, ttl_s, revision))
    try:
        await asyncio.wait({job, renew}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            raise LeaseLost(f"lease {key} was taken by another run")
        return job.result()
    finally:
        for task in (job, renew):
            task.cancel()
        await asyncio.gather(job, renew, return_exceptions=True)
        try:
            await kv.delete(key, last=revision[0])
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            pass  # taken over: the new holder's now
        except Exception as exc:  # left to expire: a waiter takes it after ttl_s
            log.warning("step_lease_release_failed", lease=key, error=str(exc))
