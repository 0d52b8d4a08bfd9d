"""The typed stage-handler base: what every stage handler does the same way.

A handler names its stage and message type and writes ``run(job, message)``; the base decodes
the delivery, binds the job's and item's ids to the log context, drops the message when its
job has ended, and offers the rest every stage needs: a result made once and reused on
redelivery, work published onward, and an item ended with its usage written first.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, TypeVar, get_args, get_origin

import structlog
from google.protobuf.message import Message

from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery, Route
from taxoforge.context import ServiceContext
from taxoforge.errors import JobStopped
from taxoforge.llm.types import CacheUse
from taxoforge.markers import Fence
from taxoforge.pipeline import active_job, dead_letter_recorder, publish_work
from taxoforge.v1 import common_pb2 as pb

__all__ = ["StageHandler", "cache_use", "stage_routes"]

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
P = ParamSpec("P")

# Whether the message being handled is on its first delivery at all, and whether a result
# being made now was looked up and not found on it: see ``first_delivery_makes`` and
# ``cache_use``.
_FRESH: ContextVar[bool] = ContextVar("fresh", default=False)
_UNMADE: ContextVar[bool] = ContextVar("unmade", default=False)


class StageHandler(ABC, Generic[M]):
    """One stage's messages, each decoded as ``message_type`` and run with its (live) job.

    ``message_type`` is the class's type argument: ``class Tag(StageHandler[pb.TagTask])``
    decodes ``TagTask`` messages.
    """

    stage: Stage
    message_type: type[M]
    # A stage whose results only its own messages make, each message published once per item
    # (with its id, so a republish in the dedupe window is dropped), finds nothing stored on a
    # message's first delivery: ``once`` then makes the result without looking first and
    # stores it with ``create``, which still keeps whichever result was stored first. A
    # redelivery looks first, as every stage does. This saves a KV read per result on the
    # generation path (7 of an item's ~30 round trips).
    first_delivery_makes: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            (arg, *_) = get_args(base) or (None,)
            if get_origin(base) is StageHandler and isinstance(arg, type):
                cls.message_type = arg

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def __call__(self, delivery: Delivery) -> None:
        message = self.message_type.FromString(delivery.data)
        job_id, item_id = self.ids(message)
        context = {"job_id": job_id, "stage": self.stage.value}
        if item_id:
            context["item_id"] = item_id
        structlog.contextvars.bind_contextvars(**context)
        job = await self.job(job_id)
        if job is None:
            return
        fresh = _FRESH.set(delivery.deliveries <= 1)
        try:
            if job.stopped and item_id:
                raise JobStopped(job.stopped)
            await self.run(job, message)
        except JobStopped as stopped:
            if not item_id:
                raise
            # The job stopped generating (its spend limit): the item ends as failed, with why,
            # so the job still finishes and delivers what it has.
            await self.ctx.items.record_failure(
                job_id, self.stage, item_id, str(stopped), delivery.deliveries
            )
        finally:
            _FRESH.reset(fresh)

    def ids(self, message: M) -> tuple[str, str]:
        """The message's job id and item id ("" for a whole-job message)."""
        return str(getattr(message, "job_id", "")), str(getattr(message, "item_id", ""))

    async def job(self, job_id: str) -> pb.Job | None:
        """The message's job, or None when its work is to be dropped (the job has ended)."""
        return await active_job(self.ctx.jobs, job_id)

    @abstractmethod
    async def run(self, job: pb.Job, message: M) -> None:
        """The stage's own work for one message of a live job."""

    async def once(
        self,
        key: str,
        message_type: type[R],
        make: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """The result stored under ``key``, or ``make(*args, **kwargs)``'s result stored there:
        a redelivered message reuses what was made and calls no model again."""
        if self.first_delivery_makes and _FRESH.get():
            return await self.ctx.items.put_once(key, await make(*args, **kwargs))

        async def _make() -> R:
            # Looked up and not found: on a first delivery, no earlier message made it.
            unmade = _UNMADE.set(_FRESH.get())
            try:
                return await make(*args, **kwargs)
            finally:
                _UNMADE.reset(unmade)

        return await self.ctx.items.once(key, message_type, _make)

    async def publish(
        self, stage: Stage, message: Message, job: pb.Job, item_id: str = "", version: int = 0
    ) -> None:
        """Queue ``message`` as the job's work at ``stage`` (a republish is a no-op)."""
        await publish_work(self.ctx.bus, stage, message, job.id, item_id, version)

    async def finish(
        self,
        job: pb.Job,
        item_id: str,
        *,
        sft: bool = False,
        preference: bool = False,
        alongside: Awaitable[object] | None = None,
    ) -> None:
        """End the item as judged, with what it gives the datasets (an SFT record, a
        preference pair). Its usage is written first, so once the job's last item has ended
        every process's usage for the job is in its figures; ``alongside`` (the write of the
        item's last result) goes at the same time, also before the item ends."""
        if alongside is None:
            await self.ctx.usage.flush(job.id)
        else:
            await asyncio.gather(self.ctx.usage.flush(job.id), alongside)
        outcome = pb.ItemOutcome(item_id=item_id, judged=True, sft=sft, preference=preference)
        await self.ctx.items.end(job.id, item_id, outcome)


def stage_routes(ctx: ServiceContext, *handlers: StageHandler[Any]) -> Mapping[Stage, Route]:
    """A service's routes: each handler at its stage, a message given up on recorded as what
    it means for its job (the item failed, or the whole job)."""
    record = dead_letter_recorder(ctx.jobs, ctx.items)
    return {handler.stage: Route(handler, record) for handler in handlers}


def cache_use(fence: Fence) -> CacheUse:
    """How a model call whose prompt ``fence`` fences uses the shared request cache.

    A random marker makes every prompt new: no cache. A marker derived from the job's secret
    and the item makes the prompt the same for every message of that item's work, and only
    then. While ``once`` makes a result it looked up and did not find, on its message's first
    delivery, no earlier message finished that work: the reply is only written (for a
    redelivery to find), nothing is looked up. Anywhere else (a redelivery, which may follow
    a run that died halfway; a stage that makes its results without looking, which cannot
    tell a duplicate message from a new one) the cache is read first, so no model call is
    made twice.
    """
    if not fence.stable:
        return False
    return "write" if _UNMADE.get() else True
