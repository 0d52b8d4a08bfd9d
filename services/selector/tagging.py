"""The tag stage (TACOS open tagging): the tagger role gives each query a few open tags.

Tags are stored raw, once per item; normalization (canonical form, frequency threshold,
near-synonym merging) runs over the whole job when it is clustered.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydantic import BaseModel, Field

from taxoforge.bus.worker import Delivery
from taxoforge.llm import LLMClient
from taxoforge.markers import fence_for
from taxoforge.pipeline import active_job
from taxoforge.prompts import load_template
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["TagHandler", "TagVerdict", "Tagger"]

_TEMPLATE = Path(__file__).parent / "prompts" / "tag.yaml"
_MAX_QUERY_CHARS = 6000


class TagVerdict(BaseModel):
    """The tagger's reply."""

    tags: list[str] = Field(
        json_schema_extra={
            "minItems": 1,
            "maxItems": 5,
            "items": {"type": "string", "maxLength": 40},
        }
    )


class Tagger:
    """One tagger call per query."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._template = load_template(_TEMPLATE)

    async def tag(self, task: pb.TagTask, cfg: pb.ModelConfig) -> pb.Tags:
        """The query's open tags (at most five, blanks and repeats out)."""
        marker = await fence_for("tag", task.item_id)
        query = marker.clean(task.query[:_MAX_QUERY_CHARS])
        messages = self._template.render(nonce=marker.marker, query=query)
        verdict, call = await self._llm.structured(
            "tagger",
            cfg,
            messages,
            TagVerdict,
            max_tokens=120,
            temperature=0.0,
            cache=marker.stable,
        )
        seen: list[str] = []
        for tag in verdict.tags:
            tag = " ".join(tag.split())[:40]
            if tag and tag.casefold() not in {t.casefold() for t in seen}:
                seen.append(tag)
        return pb.Tags(item_id=task.item_id, tags=seen[:5], call=self._template.stamp(call))


class TagHandler:
    """TagTask in; the item's tags stored once."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._tagger = Tagger(ctx.llm)

    async def __call__(self, delivery: Delivery) -> None:
        task = pb.TagTask.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=task.job_id, item_id=task.item_id)
        job = await active_job(self._ctx.jobs, task.job_id)
        if job is None:
            return
        cfg = job.recipe.models.tagger

        async def _tag() -> pb.Tags:
            return await self._tagger.tag(task, cfg)

        key = ItemStore.key(job.id, ItemKind.TAGS, task.item_id)
        await self._ctx.items.once(key, pb.Tags, _tag)
        await self._ctx.items.announce(job.id)
