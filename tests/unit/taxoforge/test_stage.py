"""The stage-handler base: a message reaches ``run`` decoded, with its live job and its ids in
the log context; an ended job's message does not; a result is made once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import structlog

from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.context import ServiceContext
from taxoforge.markers import Fence
from taxoforge.stage import StageHandler, cache_use, stage_routes
from taxoforge.v1 import common_pb2 as pb


class FakeJobs:
    """Stands in for JobStore: one job, in the state the test sets."""

    def __init__(self, job: pb.Job) -> None:
        self.job = job
        self.meter = None
        self.secrets = SimpleNamespace(bind=lambda job_id: None)

    async def get_cached(self, job_id: str) -> pb.Job | None:
        return self.job if job_id == self.job.id else None


class FakeItems:
    """Stands in for ItemStore's ``once`` and ``put_once``: a dict of results, and the keys
    looked up before making one."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}
        self.looked_up: list[str] = []

    async def once(
        self, key: str, message_type: type[Any], make: Callable[[], Awaitable[Any]]
    ) -> Any:
        self.looked_up.append(key)
        if key not in self.stored:
            return await self.put_once(key, await make())
        return self.stored[key]

    async def put_once(self, key: str, message: Any) -> Any:
        return self.stored.setdefault(key, message)


class Tag(StageHandler[pb.TagTask]):
    stage = Stage.TAG

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.seen: list[tuple[str, pb.TagTask, dict[str, Any]]] = []

    async def run(self, job: pb.Job, message: pb.TagTask) -> None:
        self.seen.append((job.id, message, structlog.contextvars.get_contextvars()))


def _ctx(state: int) -> ServiceContext:
    job = pb.Job(id="j1", state=state)
    return cast(ServiceContext, SimpleNamespace(jobs=FakeJobs(job), items=FakeItems()))


def _delivery(task: pb.TagTask, deliveries: int = 1) -> Delivery:
    return Delivery(Stage.TAG, "tf.work.tag", task.SerializeToString(), {}, deliveries, 1)


def test_the_message_type_is_the_type_argument() -> None:
    assert Tag.message_type is pb.TagTask


async def test_a_live_jobs_message_is_run_decoded_with_its_ids_bound() -> None:
    structlog.contextvars.clear_contextvars()
    handler = Tag(_ctx(pb.JOB_STATE_SELECTING))
    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i7")))

    [(job_id, task, context)] = handler.seen
    assert job_id == "j1" and task.item_id == "i7"
    assert context["job_id"] == "j1" and context["item_id"] == "i7" and context["stage"] == "tag"


async def test_an_ended_jobs_message_is_dropped() -> None:
    handler = Tag(_ctx(pb.JOB_STATE_CANCELLED))
    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i7")))
    assert handler.seen == []


async def test_a_result_is_made_once_and_reused() -> None:
    handler = Tag(_ctx(pb.JOB_STATE_SELECTING))
    calls: list[str] = []

    async def make(text: str, *, suffix: str) -> pb.Tags:
        calls.append(text)
        return pb.Tags(item_id=text + suffix)

    first = await handler.once("k", pb.Tags, make, "a", suffix="!")
    again = await handler.once("k", pb.Tags, make, "b", suffix="?")
    assert first.item_id == again.item_id == "a!"
    assert calls == ["a"]


class MadeOnce(StageHandler[pb.TagTask]):
    """A stage whose first deliveries make their result without looking it up first."""

    stage = Stage.TAG
    first_delivery_makes = True

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.results: list[str] = []

    async def run(self, job: pb.Job, message: pb.TagTask) -> None:
        async def make() -> pb.Tags:
            return pb.Tags(item_id=f"{message.item_id}@{message.query}")

        tags = await self.once(f"tags.{message.item_id}", pb.Tags, make)
        self.results.append(tags.item_id)


async def test_a_first_delivery_makes_its_result_without_looking_it_up() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)
    handler = MadeOnce(ctx)

    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i1", query="a")))

    assert handler.results == ["i1@a"]
    assert ctx.items.looked_up == []  # type: ignore[attr-defined]


async def test_a_redelivery_reuses_the_stored_result() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)
    handler = MadeOnce(ctx)
    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i1", query="a")))

    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i1", query="b"), deliveries=2))

    assert handler.results == ["i1@a", "i1@a"]
    assert ctx.items.looked_up == ["tags.i1"]  # type: ignore[attr-defined]


async def test_a_first_delivery_that_races_a_stored_result_keeps_the_stored_one() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)
    ctx.items.stored["tags.i1"] = pb.Tags(item_id="i1@first")  # type: ignore[attr-defined]
    handler = MadeOnce(ctx)

    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i1", query="a")))

    assert handler.results == ["i1@first"]


async def test_stages_look_up_their_results_on_every_delivery_unless_they_say() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)

    class Looked(MadeOnce):
        first_delivery_makes = False

    await Looked(ctx)(_delivery(pb.TagTask(job_id="j1", item_id="i1", query="a")))

    assert ctx.items.looked_up == ["tags.i1"]  # type: ignore[attr-defined]


def test_routes_put_each_handler_at_its_stage() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)
    handler = Tag(ctx)
    routes = stage_routes(ctx, handler)
    assert list(routes) == [Stage.TAG]
    assert routes[Stage.TAG].handler is handler
    assert routes[Stage.TAG].on_dead_letter is not None


class Fenced(MadeOnce):
    """Records how its model calls would use the request cache, while making its result."""

    first_delivery_makes = False

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.uses: list[object] = []

    async def run(self, job: pb.Job, message: pb.TagTask) -> None:
        async def make() -> pb.Tags:
            self.uses.append(cache_use(Fence("m-job-derived", stable=True)))
            self.uses.append(cache_use(Fence("m-random", stable=False)))
            return pb.Tags(item_id=message.item_id)

        await self.once(f"tags.{message.item_id}", pb.Tags, make)


async def test_only_a_result_looked_up_and_missing_on_a_first_delivery_skips_the_cache() -> None:
    ctx = _ctx(pb.JOB_STATE_SELECTING)
    handler = Fenced(ctx)

    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i1")))  # looked up, missing
    await handler(_delivery(pb.TagTask(job_id="j1", item_id="i2"), deliveries=2))

    class Unlooked(Fenced):
        first_delivery_makes = True  # cannot tell a duplicate message from a new one

    unlooked = Unlooked(ctx)
    await unlooked(_delivery(pb.TagTask(job_id="j1", item_id="i3")))

    # written only on a first delivery whose result was not there; read first otherwise; a
    # random marker never uses the cache
    assert handler.uses == ["write", False, True, False]
    assert unlooked.uses == [True, False]
    assert cache_use(Fence("m", stable=True)) is True  # outside any handler
