"""A job's progress view against a real nats-server: its counts are the item store's, read at
once, failures of every stage in one read."""

from __future__ import annotations

import asyncio

import pytest

from taxoforge.bus import Bus, Stage
from taxoforge.jobs.progress import job_progress
from taxoforge.jobs.store import JobStore
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

pytestmark = pytest.mark.integration


async def _results(items: ItemStore, job_id: str, kind: ItemKind, n: int) -> None:
    await asyncio.gather(
        *(items.put_once(ItemStore.key(job_id, kind, f"i{i}"), pb.ItemOutcome()) for i in range(n))
    )


async def _failures(items: ItemStore, job_id: str, stage: Stage, first: int, n: int) -> None:
    failure = pb.ItemFailure(job_id=job_id, stage=stage.value, reason="r")
    await asyncio.gather(
        *(
            items.put_once(ItemStore.failure_key(job_id, stage, f"f{first + i}"), failure)
            for i in range(n)
        )
    )


async def test_failures_are_counted_per_stage_in_one_read(bus: Bus) -> None:
    items = ItemStore(bus)
    await _failures(items, "j-a", Stage.INSTRUCT, 0, 3)
    await _failures(items, "j-a", Stage.JUDGE, 3, 2)
    await _failures(items, "j-a", Stage.TAG, 5, 1)
    await _failures(items, "j-b", Stage.JUDGE, 0, 4)
    await _failures(items, "j-a", Stage.JUDGE, 3, 2)  # written again: still two keys

    by_stage = await items.count_failed_by_stage("j-a")

    assert by_stage == {"instruct": 3, "judge": 2, "tag": 1}
    for stage in (Stage.INSTRUCT, Stage.JUDGE, Stage.TAG, Stage.RESPOND):
        assert by_stage.get(stage.value, 0) == await items.count_failed("j-a", stage)
    assert await items.count_failed_by_stage("j-none") == {}


async def test_a_generating_jobs_progress_counts_each_stage(bus: Bus) -> None:
    jobs, items = JobStore(bus), ItemStore(bus)
    await jobs.create(pb.Job(id="j-g", state=pb.JOB_STATE_RUNNING, planned=10))
    await _results(items, "j-g", ItemKind.INSTRUCTION, 9)
    await _results(items, "j-g", ItemKind.CANDIDATES, 7)
    await _results(items, "j-g", ItemKind.JUDGMENT, 4)
    await _results(items, "j-g", ItemKind.OUTCOME, 5)
    await _failures(items, "j-g", Stage.INSTRUCT, 0, 1)

    progress = await job_progress(jobs, items, "j-g")

    assert progress is not None
    assert progress.finished == 5
    stages = {s.stage: (s.done, s.failed) for s in progress.stages}
    assert stages["plan"] == (1, 0)
    assert stages["instruct"] == (9, 1)
    assert stages["respond"] == (7, 0)
    assert stages["judge"] == (4, 0)
    assert stages["tag"] == (0, 0) and stages["compare"] == (0, 0)


async def test_a_selecting_jobs_progress_counts_the_steps_it_reached(bus: Bus) -> None:
    jobs, items = JobStore(bus), ItemStore(bus)
    job = pb.Job(id="j-s", state=pb.JOB_STATE_RUNNING, planned=6, phase="tag", phase_planned=6)
    await jobs.create(job)
    await _results(items, "j-s", ItemKind.OUTCOME, 6)
    await _results(items, "j-s", ItemKind.TAGS, 4)
    await _failures(items, "j-s", Stage.TAG, 4, 1)

    progress = await job_progress(jobs, items, "j-s")

    assert progress is not None
    stages = {s.stage: (s.done, s.failed, s.planned) for s in progress.stages}
    assert stages["prepare"] == (1, 0, 1)
    assert stages["tag"] == (4, 1, 6)
    assert stages["cluster"] == (0, 0, 1)
    assert stages["compare"] == (0, 0, 0)
