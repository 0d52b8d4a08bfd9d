"""Queueing a job's tag pages: every kept example once, in numbered pages, then the job moves
to the tag step expecting one result per page; a failed publish stops the queueing (prepare
runs again) and the job does not move."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import services.selector.prepare as prepare
from services.selector.examples import Example
from services.selector.tagging import tag_pages
from taxoforge.v1 import common_pb2 as pb


def _pages(n: int) -> Iterator[pb.TagPage]:
    def rows() -> Iterator[Example]:
        for i in range(n):
            row: Example = {"item_id": f"r{i:07d}", "query": f"question {i}"}
            if i % 3 == 0:
                row["language"] = "fr"
            yield row

    return tag_pages("j1", rows())


def _preparer() -> prepare.Preparer:
    return object.__new__(prepare.Preparer)  # _queue_tags needs only the context's handles


class _Ctx:
    bus = object()
    jobs = object()


async def test_every_example_is_queued_once_before_the_job_moves_to_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[str, pb.TagPage]] = []
    moved: list[dict[str, Any]] = []

    async def publish(bus: Any, stage: Any, page: pb.TagPage, job_id: str, item_id: str) -> None:
        await asyncio.sleep(0)  # publishes interleave, as over the network
        published.append((item_id, page))

    async def enter(bus: Any, jobs: Any, job_id: str, *steps: Any, planned: int) -> None:
        moved.append({"published": len(published), "planned": planned, "steps": steps})

    monkeypatch.setattr(prepare, "publish_work", publish)
    monkeypatch.setattr(prepare, "enter_step", enter)
    preparer = _preparer()
    preparer._ctx = _Ctx()  # type: ignore[assignment]

    await preparer._queue_tags(pb.Job(id="j1"), _pages(1000))

    pages = dict(published)
    assert sorted(pages) == [f"p{i:06d}" for i in range(16)]  # 15 pages of 64, then 40
    assert all(page.item_id == item and page.job_id == "j1" for item, page in published)
    rows = [row for _, page in sorted(published) for row in page.rows]
    assert [row.item_id for row in rows] == [f"r{i:07d}" for i in range(1000)]
    assert rows[3] == pb.TagTask(job_id="j1", item_id="r0000003", query="question 3", language="fr")
    assert rows[4].language == ""
    assert moved == [{"published": 16, "planned": 16, "steps": moved[0]["steps"]}]


async def test_a_failed_publish_stops_the_queueing_and_the_job_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[str] = []
    moved: list[int] = []

    async def publish(bus: Any, stage: Any, page: pb.TagPage, job_id: str, item_id: str) -> None:
        await asyncio.sleep(0)
        if item_id == "p000030":
            raise ConnectionError("nats went away")
        published.append(item_id)

    async def enter(*args: Any, planned: int) -> None:
        moved.append(planned)

    monkeypatch.setattr(prepare, "publish_work", publish)
    monkeypatch.setattr(prepare, "enter_step", enter)
    preparer = _preparer()
    preparer._ctx = _Ctx()  # type: ignore[assignment]

    with pytest.raises(ConnectionError, match="nats went away"):
        await preparer._queue_tags(pb.Job(id="j1"), _pages(5000 * 64))
    await asyncio.sleep(0.05)  # nothing goes on publishing after the failure
    assert len(published) < 1000
    after = len(published)
    await asyncio.sleep(0.05)
    assert len(published) == after and moved == []
