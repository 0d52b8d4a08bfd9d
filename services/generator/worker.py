"""The instruct, respond and refine stages. Each result is stored once and reused on
redelivery.

An item goes depth first: the message that writes its instruction goes on to make its
candidates and queue them for judging, as the respond stage would, rather than queueing the
instruction behind every other seed of the job. That saves the respond message's round trips
(its publish, delivery and ack) and lets judging start with the first items rather than once
the instruct backlog has drained. When making the candidates there fails, the instruction is
queued for the respond stage after all, which retries it and records its failures as its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from services.generator.instructions import GateFailure, InstructionWriter
from services.generator.responses import ResponseWriter
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.dedupe import DuplicateIndex
from taxoforge.stage import StageHandler
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["InstructHandler", "RefineHandler", "RespondHandler"]

log = structlog.get_logger(__name__)


class InstructHandler(StageHandler[pb.Seed]):
    """Seed in, instruction (past the quality gates, unique in its job) stored and queued."""

    stage = Stage.INSTRUCT
    first_delivery_makes = True

    def __init__(
        self,
        ctx: ServiceContext,
        instructions: InstructionWriter,
        respond: RespondHandler | None = None,
    ) -> None:
        """``respond``: makes the item's candidates right after its instruction (depth first);
        None queues every instruction for the respond stage."""
        super().__init__(ctx)
        self._instructions = instructions
        self._duplicates = DuplicateIndex(ctx.items)
        self._respond = respond

    async def run(self, job: pb.Job, seed: pb.Seed) -> None:
        key = ItemStore.key(job.id, ItemKind.INSTRUCTION, seed.item_id)
        instruction = await self.once(key, pb.Instruction, self._write, job, seed)
        if self._respond is not None and await self._responded(job, instruction):
            return
        await self.publish(Stage.RESPOND, instruction, job, seed.item_id)

    async def _responded(self, job: pb.Job, instruction: pb.Instruction) -> bool:
        """Whether the item's candidates were made and queued for judging here.

        Any failure leaves them to the respond stage: its own message retries them (what was
        stored is reused, and a model reply already paid for comes from the request cache)
        and, when they cannot be made, records the item as failed at respond."""
        assert self._respond is not None
        structlog.contextvars.bind_contextvars(stage=Stage.RESPOND.value)
        try:
            await self._respond.run(job, instruction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("respond_queued", reason=f"{type(exc).__name__}: {exc}"[:300])
            return False
        finally:
            structlog.contextvars.bind_contextvars(stage=self.stage.value)
        return True

    async def _write(self, job: pb.Job, seed: pb.Seed) -> pb.Instruction:
        try:
            return await self._instructions.instruction(seed, job.recipe, self._duplicates)
        except GateFailure as failure:
            # Keep the turned-down drafts: the job's report counts them by reason.
            rejected = ItemStore.key(job.id, ItemKind.REJECTED, seed.item_id)
            await self.ctx.items.put_once(rejected, failure.instruction)
            raise


class RespondHandler(StageHandler[pb.Instruction]):
    """Instruction in, k candidate responses (and the target's, for contrastive filtering)
    stored and queued for judging."""

    stage = Stage.RESPOND
    first_delivery_makes = True

    def __init__(self, ctx: ServiceContext, responses: ResponseWriter) -> None:
        super().__init__(ctx)
        self._responses = responses

    async def run(self, job: pb.Job, instruction: pb.Instruction) -> None:
        item_id, version = instruction.item_id, instruction.version
        # A refined instruction's candidates are kept beside the first ones.
        parts = [f"v{version}"] if version else []
        key = ItemStore.key(job.id, ItemKind.CANDIDATES, item_id, *parts)
        candidates = await self.once(key, pb.Candidates, self._candidates, job, instruction)
        await self.publish(Stage.JUDGE, candidates, job, item_id, version)

    async def _candidates(self, job: pb.Job, instruction: pb.Instruction) -> pb.Candidates:
        # Each draw of each candidate is stored on its own, so a retry redoes only the missing
        # ones; candidates the gates discard are redrawn and listed on ``rejected``.
        async def once(part: str, write: Callable[[], Awaitable[pb.Response]]) -> pb.Response:
            versioned = ItemStore.versioned(part, instruction.version)
            key = ItemStore.key(job.id, ItemKind.RESPONSE, instruction.item_id, versioned)
            return await self.once(key, pb.Response, write)

        return await self._responses.candidates(instruction, job.recipe, once)


class RefineHandler(StageHandler[pb.Instruction]):
    """An instruction contrastive filtering sent back: one more Self-Rubrics round, then new
    candidates for the new version."""

    stage = Stage.REFINE
    first_delivery_makes = True

    def __init__(self, ctx: ServiceContext, instructions: InstructionWriter) -> None:
        super().__init__(ctx)
        self._instructions = instructions

    async def run(self, job: pb.Job, instruction: pb.Instruction) -> None:
        item_id, version = instruction.item_id, instruction.version + 1
        key = ItemStore.key(job.id, ItemKind.REFINED, item_id, f"v{version}")
        refined = await self.once(
            key, pb.Instruction, self._instructions.refine, instruction, job.recipe
        )
        await self.publish(Stage.RESPOND, refined, job, item_id, version)
