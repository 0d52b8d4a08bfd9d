"""Completion tracking: an announcement's check counts a job's results only when the
announcements heard since the last count could complete it; the periodic check always counts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.jobs.model import JobKind
from taxoforge.store import ItemKind
from taxoforge.tracker import CompletionTracker
from taxoforge.v1 import common_pb2 as pb


class FakeJobs:
    def __init__(self, job: pb.Job) -> None:
        self.job = job

    async def get(self, job_id: str) -> pb.Job | None:
        return self.job if job_id == self.job.id else None


class FakeItems:
    """Counts from a dict; every count asked for is recorded."""

    def __init__(self) -> None:
        self.results: dict[Any, int] = {}
        self.asked: list[Any] = []

    async def count(self, job_id: str, kind: ItemKind) -> int:
        self.asked.append(kind)
        return self.results.get(kind, 0)

    async def count_failed(self, job_id: str, stage: Stage | None = None) -> int:
        self.asked.append(("failed", stage))
        return self.results.get(("failed", stage), 0)


def _tracker(job: pb.Job) -> tuple[CompletionTracker, FakeItems]:
    items = FakeItems()
    ctx = cast(ServiceContext, SimpleNamespace(jobs=FakeJobs(job), items=items, bus=None))
    steps = {Stage.TAG: Stage.CLUSTER}
    return CompletionTracker(ctx, {JobKind.GENERATE: Stage.PLAN}, 1.0, steps), items


async def test_announcements_that_cannot_complete_the_job_count_nothing() -> None:
    job = pb.Job(id="j1", state=pb.JOB_STATE_RUNNING, planned=10)
    tracker, items = _tracker(job)
    items.results[ItemKind.OUTCOME] = 3
    tracker.announced("j1")
    assert not await tracker.check("j1", exact=False)  # nothing counted yet: counts
    assert items.asked == [ItemKind.OUTCOME]

    for _ in range(6):  # 3 counted + 6 heard < 10
        tracker.announced("j1")
    assert not await tracker.check("j1", exact=False)
    assert items.asked == [ItemKind.OUTCOME]

    assert not await tracker.check("j1")  # the periodic check counts all the same
    assert items.asked == [ItemKind.OUTCOME] * 2


async def test_the_announcement_that_may_complete_the_job_counts() -> None:
    job = pb.Job(id="j1", state=pb.JOB_STATE_RUNNING, planned=10)
    tracker, items = _tracker(job)
    items.results[ItemKind.OUTCOME] = 3
    await tracker.check("j1", exact=False)

    for _ in range(7):  # 3 counted + 7 heard: maybe all ten
        tracker.announced("j1")
    items.results[ItemKind.OUTCOME] = 9  # one announcement was heard twice
    assert not await tracker.check("j1", exact=False)
    assert items.asked == [ItemKind.OUTCOME] * 2

    tracker.announced("j1")
    await tracker.check("j1", exact=False)  # 9 counted + 1 heard
    assert items.asked == [ItemKind.OUTCOME] * 3


async def test_a_selection_steps_failures_count_towards_its_plan() -> None:
    job = pb.Job(id="j1", state=pb.JOB_STATE_SELECTING, phase="tag", phase_planned=10)
    tracker, items = _tracker(job)
    items.results[ItemKind.TAGS] = 5
    items.results[("failed", Stage.TAG)] = 2
    assert not await tracker.check("j1", exact=False)
    asked = len(items.asked)

    for _ in range(2):  # 5 tagged + 2 failed + 2 heard < 10
        tracker.announced("j1")
    assert not await tracker.check("j1", exact=False)
    assert len(items.asked) == asked

    tracker.announced("j1")
    assert not await tracker.check("j1", exact=False)
    assert len(items.asked) == asked + 2
