"""The instruct and respond stages. Each result is stored once and reused on redelivery."""

from __future__ import annotations

import asyncio

import structlog

from services.generator.core import Generator
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.pipeline import active_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["InstructHandler", "RespondHandler"]

_DEFAULT_K = 2


class InstructHandler:
    """Seed in, instruction stored and queued for responses."""

    def __init__(self, ctx: ServiceContext, generator: Generator) -> None:
        self._ctx = ctx
        self._generator = generator

    async def __call__(self, delivery: Delivery) -> None:
        seed = pb.Seed.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=seed.job_id, item_id=seed.item_id)
        job = await active_job(self._ctx.jobs, seed.job_id)
        if job is None:
            return

        async def _write() -> pb.Instruction:
            instruction = await self._generator.instruction(seed, job.recipe.models.generator)
            self._ctx.usage.add(job.id, instruction.call.usage)
            return instruction

        key = ItemStore.key(job.id, ItemKind.INSTRUCTION, seed.item_id)
        instruction = await self._ctx.items.once(key, pb.Instruction, _write)
        await publish_work(self._ctx.bus, Stage.RESPOND, instruction, job.id, seed.item_id)


class RespondHandler:
    """Instruction in, k candidate responses stored and queued for judging."""

    def __init__(self, ctx: ServiceContext, generator: Generator) -> None:
        self._ctx = ctx
        self._generator = generator

    async def __call__(self, delivery: Delivery) -> None:
        instruction = pb.Instruction.FromString(delivery.data)
        item_id = instruction.item_id
        structlog.contextvars.bind_contextvars(job_id=instruction.job_id, item_id=item_id)
        job = await active_job(self._ctx.jobs, instruction.job_id)
        if job is None:
            return
        k = job.recipe.responses_per_instruction or _DEFAULT_K

        async def _candidates() -> pb.Candidates:
            # Each candidate is stored on its own, so a retry redoes only the missing ones.
            responses = await asyncio.gather(
                *(self._response(job, instruction, c) for c in range(k))
            )
            return pb.Candidates(instruction=instruction, responses=responses)

        key = ItemStore.key(job.id, ItemKind.CANDIDATES, item_id)
        candidates = await self._ctx.items.once(key, pb.Candidates, _candidates)
        await publish_work(self._ctx.bus, Stage.JUDGE, candidates, job.id, item_id)

    async def _response(self, job: pb.Job, instruction: pb.Instruction, c: int) -> pb.Response:
        async def _write() -> pb.Response:
            response = await self._generator.response(instruction, job.recipe.models, c)
            self._ctx.usage.add(job.id, response.call.usage)
            return response

        key = ItemStore.key(job.id, ItemKind.RESPONSE, instruction.item_id, f"r{c}")
        return await self._ctx.items.once(key, pb.Response, _write)
