"""The instruct and respond stages. Each result is stored once and reused on redelivery."""

from __future__ import annotations

import asyncio

import structlog

from services.generator.instructions import GateFailure, InstructionWriter
from services.generator.responses import ResponseWriter
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.dedupe import DuplicateIndex
from taxoforge.pipeline import active_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["InstructHandler", "RefineHandler", "RespondHandler"]

_DEFAULT_K = 2
_NEAR_DUPLICATE = 0.8


class InstructHandler:
    """Seed in, instruction (past the quality gates, unique in its job) stored and queued."""

    def __init__(self, ctx: ServiceContext, instructions: InstructionWriter) -> None:
        self._ctx = ctx
        self._instructions = instructions
        self._duplicates = DuplicateIndex(ctx.items)

    async def __call__(self, delivery: Delivery) -> None:
        seed = pb.Seed.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=seed.job_id, item_id=seed.item_id)
        job = await active_job(self._ctx.jobs, seed.job_id)
        if job is None:
            return
        recipe = job.recipe
        threshold = recipe.near_duplicate if recipe.HasField("near_duplicate") else _NEAR_DUPLICATE

        async def _unique(text: str) -> pb.Rejection | None:
            return await self._duplicates.claim(job.id, seed.item_id, text, threshold)

        async def _write() -> pb.Instruction:
            try:
                return await self._instructions.instruction(seed, recipe, _unique)
            except GateFailure as failure:
                # Keep the turned-down drafts: the job's report counts them by reason.
                rejected = ItemStore.key(job.id, ItemKind.REJECTED, seed.item_id)
                await self._ctx.items.put_once(rejected, failure.instruction)
                raise

        key = ItemStore.key(job.id, ItemKind.INSTRUCTION, seed.item_id)
        instruction = await self._ctx.items.once(key, pb.Instruction, _write)
        await publish_work(self._ctx.bus, Stage.RESPOND, instruction, job.id, seed.item_id)


class RespondHandler:
    """Instruction in, k candidate responses (and the target's, for contrastive filtering)
    stored and queued for judging."""

    def __init__(self, ctx: ServiceContext, responses: ResponseWriter) -> None:
        self._ctx = ctx
        self._responses = responses

    async def __call__(self, delivery: Delivery) -> None:
        instruction = pb.Instruction.FromString(delivery.data)
        item_id = instruction.item_id
        structlog.contextvars.bind_contextvars(job_id=instruction.job_id, item_id=item_id)
        job = await active_job(self._ctx.jobs, instruction.job_id)
        if job is None:
            return
        recipe = job.recipe
        k = recipe.responses_per_instruction or _DEFAULT_K
        with_target = recipe.contrastive and bool(recipe.models.target.model)

        async def _candidates() -> pb.Candidates:
            # Each candidate is stored on its own, so a retry redoes only the missing ones.
            parts = [self._response(job, instruction, c, False) for c in range(k)]
            if with_target:
                parts.append(self._response(job, instruction, k, True))
            responses = await asyncio.gather(*parts)
            return pb.Candidates(instruction=instruction, responses=responses)

        version = instruction.version
        if version:  # a refined instruction's candidates are kept beside the first ones
            key = ItemStore.key(job.id, ItemKind.CANDIDATES, item_id, f"v{version}")
        else:
            key = ItemStore.key(job.id, ItemKind.CANDIDATES, item_id)
        candidates = await self._ctx.items.once(key, pb.Candidates, _candidates)
        await publish_work(self._ctx.bus, Stage.JUDGE, candidates, job.id, item_id, version=version)

    async def _response(
        self, job: pb.Job, instruction: pb.Instruction, c: int, target: bool
    ) -> pb.Response:
        async def _write() -> pb.Response:
            return await self._responses.response(instruction, job.recipe, c, target=target)

        part = ItemStore.versioned("t" if target else f"r{c}", instruction.version)
        key = ItemStore.key(job.id, ItemKind.RESPONSE, instruction.item_id, part)
        return await self._ctx.items.once(key, pb.Response, _write)


class RefineHandler:
    """An instruction contrastive filtering sent back: one more Self-Rubrics round, then new
    candidates for the new version."""

    def __init__(self, ctx: ServiceContext, instructions: InstructionWriter) -> None:
        self._ctx = ctx
        self._instructions = instructions

    async def __call__(self, delivery: Delivery) -> None:
        instruction = pb.Instruction.FromString(delivery.data)
        item_id = instruction.item_id
        structlog.contextvars.bind_contextvars(job_id=instruction.job_id, item_id=item_id)
        job = await active_job(self._ctx.jobs, instruction.job_id)
        if job is None:
            return
        version = instruction.version + 1

        async def _refine() -> pb.Instruction:
            return await self._instructions.refine(instruction, job.recipe)

        key = ItemStore.key(job.id, ItemKind.REFINED, item_id, f"v{version}")
        refined = await self._ctx.items.once(key, pb.Instruction, _refine)
        await publish_work(self._ctx.bus, Stage.RESPOND, refined, job.id, item_id, version=version)
