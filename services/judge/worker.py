"""The judge's stages. Judge: the item's candidates judged (each rubric score stored once), the
judgment stored and the item ended, or the instruction sent back by contrastive filtering for
another Self-Rubrics round. Compare (TACOS comparative scoring): a sample against its
cluster's reference, 1-100, both orders; the comparison is stored once per sample and the
step is told."""

from __future__ import annotations

import asyncio
import random

from services.judge.panel import Judge, Panel
from taxoforge.bus import Stage
from taxoforge.composition import delivers
from taxoforge.context import ServiceContext
from taxoforge.methods import sampling_seed
from taxoforge.stage import StageHandler
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CompareHandler", "JudgeHandler"]


class JudgeHandler(StageHandler[pb.Candidates]):
    """Candidates in; the judgment (or a refinement request) out."""

    stage = Stage.JUDGE
    first_delivery_makes = True

    def __init__(self, ctx: ServiceContext, judge: Judge) -> None:
        super().__init__(ctx)
        self._judge = judge
        self._panel = Panel(judge)

    def ids(self, message: pb.Candidates) -> tuple[str, str]:
        return message.instruction.job_id, message.instruction.item_id

    async def run(self, job: pb.Job, candidates: pb.Candidates) -> None:
        instruction = candidates.instruction
        item_id, version = instruction.item_id, instruction.version
        if not job.recipe.contrastive:
            # One version an item, never sent back: its judgment is the item's, stored once
            # under the judgment's own key (a copy per version is for refined items).
            judgment_key = ItemStore.key(job.id, ItemKind.JUDGMENT, item_id)
            judged = await self.once(
                judgment_key, pb.Judgment, self._judge_version, job, candidates
            )
            sft, preference = delivers(judged)
            await self.finish(job, item_id, sft=sft, preference=preference)
            return
        key = ItemStore.key(job.id, ItemKind.JUDGED, item_id, f"v{version}")
        judged = await self.once(key, pb.Judgment, self._judge_version, job, candidates)
        if judged.contrastive.decision == "refine":
            # Back to the generator for another Self-Rubrics round; the item is not done.
            again = pb.Instruction()
            again.CopyFrom(instruction)
            again.contrastive.append(judged.contrastive)
            await self.publish(Stage.REFINE, again, job, item_id, version + 1)
            return
        # The judgment and the usage are both written before the item ends, side by side.
        sft, preference = delivers(judged)
        judgment = self.ctx.items.put_once(
            ItemStore.key(job.id, ItemKind.JUDGMENT, item_id), judged
        )
        await self.finish(job, item_id, sft=sft, preference=preference, alongside=judgment)

    async def _judge_version(self, job: pb.Job, candidates: pb.Candidates) -> pb.Judgment:
        recipe = job.recipe
        instruction = candidates.instruction
        scores = None
        if recipe.judging.mode != "pairwise":
            # Each rubric score is stored on its own, so a retry redoes only the missing ones.
            scores = await asyncio.gather(
                *(self._score(job, instruction, r) for r in candidates.responses)
            )
        rng = random.Random(
            sampling_seed(recipe.seed, instruction.seed.index, "judge", instruction.version)
        )
        return await self._panel.run(
            candidates,
            recipe.models.judge,
            recipe.judging,
            recipe.min_margin,
            rng,
            contrastive=recipe.contrastive,
            scores=scores,
        )

    async def _score(
        self, job: pb.Job, instruction: pb.Instruction, response: pb.Response
    ) -> pb.Score:
        part = ItemStore.versioned(response.id.rsplit(".", 1)[-1], instruction.version)
        key = ItemStore.key(job.id, ItemKind.SCORE, instruction.item_id, part)
        return await self.once(
            key, pb.Score, self._judge.score, instruction, response, job.recipe.models.judge
        )


class CompareHandler(StageHandler[pb.CompareTask]):
    """CompareTask in; the sample's Comparison (A: the sample, B: the reference) out."""

    stage = Stage.COMPARE

    def __init__(self, ctx: ServiceContext, judge: Judge) -> None:
        super().__init__(ctx)
        self._judge = judge

    async def run(self, job: pb.Job, task: pb.CompareTask) -> None:
        key = ItemStore.key(job.id, ItemKind.COMPARISON, task.item_id)
        await self.once(
            key,
            pb.Comparison,
            self._judge.compare_samples,
            task.sample,
            task.reference,
            job.recipe.models.judge,
            task.language,
            task.max_calls,
        )
        await self.ctx.items.announce(job.id)
