"""TACOS open tagging: the tagger role gives each query a few open tags (the tag stage's
handler is ``services.selector.worker.TagHandler``).

Queries are tagged a page at a time (``TagPage``), one model call per query, all of a page's
calls at once; tags are stored raw, once per page; normalization (canonical form, frequency
threshold, near-synonym merging) runs over the whole job when it is clustered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from services.selector.examples import Example
from taxoforge.errors import PermanentError
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.markers import fence_for
from taxoforge.prompts import load_template
from taxoforge.stage import cache_use
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "MAX_QUERY_CHARS",
    "PAGE_BYTES",
    "PAGE_ROWS",
    "TagPager",
    "TagVerdict",
    "Tagger",
    "tag_pages",
]

_TEMPLATE = Path(__file__).parent / "prompts" / "tag.yaml"
# What the tagger reads of a query (a page carries no more of it).
MAX_QUERY_CHARS = 6000
# A page holds at most this many queries, and stops short of this many bytes of them (a NATS
# message is at most 1 MiB by default). 64 rows make the per-message cost (a delivery, a stored
# result, an announcement: ~0.5 ms) small beside 64 model calls, and still give a 100k-row job
# over 1,500 pages to spread across replicas.
PAGE_ROWS = 64
PAGE_BYTES = 512 * 1024


def tag_pages(
    job_id: str, examples: Iterable[Example], rows: int = PAGE_ROWS, max_bytes: int = PAGE_BYTES
) -> Iterator[pb.TagPage]:
    """The job's examples as tag pages, numbered in order (``p000000``, ``p000001``...): the
    same examples give the same pages, so a prepare step run again publishes the same
    messages (dropped by their ids) and expects the same number of results."""
    pager = TagPager(job_id, rows, max_bytes)
    for example in examples:
        page = pager.add(example)
        if page is not None:
            yield page
    last = pager.close()
    if last is not None:
        yield last


class TagPager:
    """Examples in, tag pages out as each fills (:func:`tag_pages`, one example at a time):
    the prepare step pages its examples as it keeps them, rather than reading its work file
    back."""

    def __init__(self, job_id: str, rows: int = PAGE_ROWS, max_bytes: int = PAGE_BYTES) -> None:
        self._job_id = job_id
        self._rows = rows
        self._max_bytes = max_bytes
        self._page = pb.TagPage(job_id=job_id, item_id=_page_id(0))
        self._number = 0
        self._size = 0

    def add(self, example: Example) -> pb.TagPage | None:
        """Page ``example``; the page it closed, if it did not fit on it."""
        task = pb.TagTask(
            job_id=self._job_id,
            item_id=example["item_id"],
            query=example["query"][:MAX_QUERY_CHARS],
            language=example.get("language", ""),
        )
        task_size = task.ByteSize()
        full = None
        page = self._page
        if page.rows and (len(page.rows) >= self._rows or self._size + task_size > self._max_bytes):
            full = page
            self._number += 1
            self._page = pb.TagPage(job_id=self._job_id, item_id=_page_id(self._number))
            self._size = 0
        self._page.rows.append(task)
        self._size += task_size
        return full

    def close(self) -> pb.TagPage | None:
        """The last page, unless it is empty."""
        return self._page if self._page.rows else None


def _page_id(number: int) -> str:
    return f"p{number:06d}"


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

    async def tag_page(self, page: pb.TagPage, cfg: pb.ModelConfig) -> pb.TaggedPage:
        """Every row of the page tagged, its calls made at once (the client bounds how many
        reach the model). A row whose replies never fit the schema, or whose request the
        provider refuses, is kept with why (``failed``); any other fault fails the page, whose
        redelivery finds the rows already asked in the request cache."""

        async def _row(task: pb.TagTask) -> pb.Tags:
            try:
                return await self.tag(task, cfg)
            except PermanentError as exc:
                tags = pb.Tags(item_id=task.item_id, failed=str(exc) or type(exc).__name__)
                if isinstance(exc, StructuredOutputError):
                    tags.call.CopyFrom(self._template.stamp(exc.call))
                return tags

        try:
            async with asyncio.TaskGroup() as group:  # one row's fault cancels the others
                rows = [group.create_task(_row(task)) for task in page.rows]
        except ExceptionGroup as faults:
            # The worker decides a message's fate by its error's type (retry later, give up,
            # the job stopped): it gets the first row's error itself, not the group.
            raise faults.exceptions[0] from None
        return pb.TaggedPage(item_id=page.item_id, rows=[row.result() for row in rows])

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._template = load_template(_TEMPLATE)

    async def tag(self, task: pb.TagTask, cfg: pb.ModelConfig) -> pb.Tags:
        """The query's open tags (at most five, blanks and repeats out)."""
        marker = await fence_for("tag", task.item_id)
        query = marker.clean(task.query[:MAX_QUERY_CHARS])
        messages = self._template.render(nonce=marker.marker, query=query)
        verdict, call = await self._llm.structured(
            "tagger",
            cfg,
            messages,
            TagVerdict,
            max_tokens=120,
            temperature=0.0,
            cache=cache_use(marker),
        )
        kept: dict[str, str] = {}  # by casefolded form, the first spelling
        for tag in verdict.tags:
            tag = " ".join(tag.split())[:40]
            if tag:
                kept.setdefault(tag.casefold(), tag)
        tags = list(kept.values())[:5]
        return pb.Tags(item_id=task.item_id, tags=tags, call=self._template.stamp(call))
