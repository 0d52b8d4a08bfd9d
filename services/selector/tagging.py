"""TACOS open tagging: the tagger role gives each query a few open tags (the tag stage's
handler is ``services.selector.worker.TagHandler``).

Tags are stored raw, once per item; normalization (canonical form, frequency threshold,
near-synonym merging) runs over the whole job when it is clustered.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from taxoforge.llm import LLMClient
from taxoforge.markers import fence_for
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = ["TagVerdict", "Tagger"]

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
