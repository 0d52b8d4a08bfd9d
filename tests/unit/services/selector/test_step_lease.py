"""One run of a whole-job step at a time: the KV lease, and the step handler under it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from services.selector.step_lease import LeaseLost, held
from services.selector.worker import StepHandler
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.errors import TransientError
from taxoforge.v1 import common_pb2 as pb


@dataclass
class _Entry:
    value: bytes
    revision: int


class FakeKV:
    """A KV bucket's compare-and-set semantics, in memory (one revision counter)."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.revision = 0

    def _next(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = _Entry(value, self.revision)
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        if key in self.entries:
            raise KeyWrongLastSequenceError()
        return self._next(key, value)

    async def get(self, key: str) -> _Entry:
        if key not in self.entries:
            raise KeyNotFoundError()
        return self.entries[key]

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        entry = self.entries.get(key)
        if entry is None or entry.revision != last:
            raise KeyWrongLastSequenceError()
        return self._next(key, value)

    async def delete(self, key: str, last: int | None = None) -> bool:
        entry = self.entries.get(key)
        if entry is None or (last is not None and entry.revision != last):
            raise KeyWrongLastSequenceError()
        del self.entries[key]
        return True


async def test_a_second_run_waits_for_the_first_and_the_lease_is_released() -> None:
    kv = FakeKV()
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> str:
        order.append("first start")
        await release.wait()
        order.append("first end")
        return "one"

    async def second() -> str:
        order.append("second start")
        return "two"

    a = asyncio.create_task(held(kv, "lease.j.cluster", "a", 0.3, first))
    await asyncio.sleep(0.05)
    b = asyncio.create_task(held(kv, "lease.j.cluster", "b", 0.3, second))
    await asyncio.sleep(0.6)  # two ttls: the first renews, so the second still waits
    assert order == ["first start"]
    release.set()
    assert await a == "one"
    assert await b == "two"
    assert order == ["first start", "first end", "second start"]
    assert kv.entries == {}


async def test_a_lease_nobody_renews_is_taken_over_after_its_ttl() -> None:
    kv = FakeKV()
    await kv.create("lease.j.select", b"dead replica")

    async def work() -> str:
        return "ran"

    assert await asyncio.wait_for(held(kv, "lease.j.select", "b", 0.1, work), 5) == "ran"


async def test_a_run_whose_lease_was_taken_stops() -> None:
    kv = FakeKV()
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cancelled.set()

    run = asyncio.create_task(held(kv, "lease.j.select", "a", 0.3, work))
    await asyncio.sleep(0.05)
    entry = await kv.get("lease.j.select")
    await kv.update("lease.j.select", b"thief", last=entry.revision)  # as a takeover does
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(run, 5)
    assert cancelled.is_set()
    assert (await kv.get("lease.j.select")).value == b"thief"  # not deleted by the loser


# ---- the step handler: two deliveries of one step's message, at once ----


class FakeJobs:
    """One job, at the cluster step until the step's work moves it on."""

    def __init__(self) -> None:
        self.job = pb.Job(id="j1", state=pb.JOB_STATE_SELECTING, phase=Stage.CLUSTER.value)

    async def get(self, job_id: str) -> pb.Job | None:
        return self.job if job_id == self.job.id else None

    get_cached = get


def _handler(kv: FakeKV, jobs: FakeJobs, step: Any, instance: str) -> StepHandler:
    async def jobs_kv() -> FakeKV:
        return kv

    ctx: Any = SimpleNamespace(
        bus=SimpleNamespace(jobs_kv=jobs_kv),
        jobs=jobs,
        settings=SimpleNamespace(ack_wait_s=0.3),
        instance=instance,
    )
    return StepHandler(ctx, Stage.CLUSTER, step)


def _delivery(n: int) -> Delivery:
    data = pb.JobRef(job_id="j1").SerializeToString()
    return Delivery(Stage.CLUSTER, "tf.work.cluster", data, {}, n, 7)


async def test_a_redelivered_step_does_not_run_a_second_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taxoforge.pipeline.bind_job", lambda jobs, job_id: None)
    kv, jobs = FakeKV(), FakeJobs()
    runs: list[str] = []
    release = asyncio.Event()

    async def cluster_step(job: pb.Job) -> None:
        runs.append(job.id)
        await release.wait()
        jobs.job.phase = Stage.COMPARE.value  # the step ends by moving the job on

    first = asyncio.create_task(_handler(kv, jobs, cluster_step, "r1")(_delivery(1)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(_handler(kv, jobs, cluster_step, "r2")(_delivery(2)))
    await asyncio.sleep(0.5)
    assert runs == ["j1"] and not second.done()  # waiting, not running
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert runs == ["j1"]  # the second found the job moved on
    assert kv.entries == {}


async def test_a_step_queued_just_before_its_move_runs_without_a_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The message goes out first, the job moves a moment later: the handler looks again
    # rather than handing the message back for a redelivery seconds later.
    monkeypatch.setattr("taxoforge.pipeline.bind_job", lambda jobs, job_id: None)
    kv, jobs = FakeKV(), FakeJobs()
    jobs.job.phase = Stage.TAG.value  # not moved to the cluster step yet
    runs: list[str] = []

    async def cluster_step(job: pb.Job) -> None:
        runs.append(job.phase)

    async def move_soon() -> None:
        await asyncio.sleep(0.12)
        jobs.job.phase = Stage.CLUSTER.value

    mover = asyncio.create_task(move_soon())
    await asyncio.wait_for(_handler(kv, jobs, cluster_step, "r1")(_delivery(1)), 5)
    await mover
    assert runs == [Stage.CLUSTER.value]


async def test_a_step_whose_job_never_moves_is_handed_back_for_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taxoforge.pipeline.bind_job", lambda jobs, job_id: None)
    kv, jobs = FakeKV(), FakeJobs()
    jobs.job.phase = Stage.TAG.value

    async def cluster_step(job: pb.Job) -> None:
        raise AssertionError("the step ran before its job was at it")

    with pytest.raises(TransientError, match="not at step cluster yet"):
        await asyncio.wait_for(_handler(kv, jobs, cluster_step, "r1")(_delivery(1)), 5)
